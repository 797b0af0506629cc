"""Catalogs, id schemes, conversation/prediction formats, example builders and splits."""
