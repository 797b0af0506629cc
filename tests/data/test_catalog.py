import json

import pytest

from dlsearch.data.catalog import Catalog, CatalogError, Item, load_catalog_jsonl, normalize_title, split_title_year


def _write(tmp_path, lines: list[str | bytes]):
    p = tmp_path / "cat.jsonl"
    with open(p, "wb") as f:
        for ln in lines:
            f.write(ln if isinstance(ln, bytes) else ln.encode())
            f.write(b"\n")
    return p


def test_roundtrip_and_hash(tmp_path):
    cat = Catalog([Item("1", "Toy Story (1995)", concepts=("Animation",)), Item("2", "Heat (1995)")])
    p = tmp_path / "c.jsonl"
    cat.save_jsonl(p)
    back = load_catalog_jsonl(p)
    assert back.ids == ["1", "2"] and back["1"].concepts == ("Animation",)
    assert back.content_hash() == cat.content_hash()
    assert Catalog(list(reversed(cat.items))).content_hash() == cat.content_hash()


@pytest.mark.parametrize(
    "lines,line,field",
    [
        (['{"id": "1", "title": "A"}', '{"id": "1", "title": "B"}'], 2, "id"),
        (['{"id": "1", "title": "A"}', '{"id": "2", "title": "   "}'], 2, "title"),
        (['{"id": "1"}'], 1, "title"),
        (['{"id": "1", "title": "A", "concepts": "x|y"}'], 1, "concepts"),
        (['{"id": "1", "title": "A", "titel": "x"}'], 1, "titel"),
        (['{"id": "1", "title": "A"}', b'{"id": "2", "title": "\xff"}'], 2, None),
        (['{"id": "1", "title": "A"', ], 1, None),
    ],
)
def test_validation_errors_name_file_line_field(tmp_path, lines, line, field):
    p = _write(tmp_path, lines)
    with pytest.raises(CatalogError) as e:
        load_catalog_jsonl(p)
    assert e.value.line == line and e.value.field == field
    assert str(p) in str(e.value) and f"line {line}" in str(e.value)


def test_identical_duplicate_rows_collapse(tmp_path):
    p = _write(tmp_path, ['{"id": "1", "title": "A"}', '{"id": "1", "title": "A"}'])
    assert len(load_catalog_jsonl(p)) == 1


def test_title_normalization_keeps_original():
    assert split_title_year("Toy Story  (1995)") == ("Toy Story", 1995)
    assert normalize_title("Matrix, The (1999)") == "the matrix (1999)"
    assert normalize_title("Matrix, The (1999)", drop_year=True) == "the matrix"
    it = Item("1", "Matrix, The (1999)")
    assert it.title == "Matrix, The (1999)"
