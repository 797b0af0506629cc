"""Generic JSONL / CSV / parquet loader: column mapping and located validation errors; `dlsearch data validate`."""

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from dlsearch.data.catalog import CatalogError
from dlsearch.data.loaders import load_catalog
from dlsearch.cli import main

MAP = {"id": "movieId", "title": "movieName", "concepts": "genres"}


def _csv(tmp_path, text: bytes | str, name="c.csv"):
    p = tmp_path / name
    p.write_bytes(text if isinstance(text, bytes) else text.encode())
    return p


def test_csv_mapping_concepts_meta_and_text_ids(tmp_path):
    p = _csv(tmp_path, 'movieId,movieName,genres,year\n007,"Heat, The",Crime|Drama,1995\n2,Jumanji,,\n')
    cat = load_catalog(p, MAP)
    assert cat.ids == ["007", "2"]  # ids stay text
    assert cat["007"].title == "Heat, The" and cat["007"].concepts == ("Crime", "Drama")
    assert cat["007"].meta == {"year": "1995"} and cat["2"].concepts == ()


def test_jsonl_and_parquet_with_mapping(tmp_path):
    rows = [{"sku": "a1", "name": "Red shoe", "tags": ["shoe", "red"]}, {"sku": "a2", "name": "Blue hat", "tags": []}]
    j = tmp_path / "c.jsonl"
    j.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.Table.from_pylist(rows), tmp_path / "c.parquet")
    m = {"id": "sku", "title": "name", "concepts": "tags"}
    for path in (j, tmp_path / "c.parquet"):
        cat = load_catalog(path, m)
        assert cat.ids == ["a1", "a2"] and cat["a1"].concepts == ("shoe", "red")


def test_real_redial_movies_csv(datasets_dir):
    cat = load_catalog(datasets_dir / "redial" / "movies_with_mentions.csv", {"id": "movieId", "title": "movieName"})
    assert len(cat) == 6924 and cat["75796"].meta == {"nbMentions": "1"}


@pytest.mark.parametrize(
    "text,unit,line,field",
    [
        ("movieId,movieName\n1,A\n1,B\n", "row", 2, "movieId"),  # conflicting duplicate id
        ("movieId,movieName\n1,A\n2,   \n", "row", 2, "movieName"),  # whitespace title
        (b"movieId,movieName\n1,A\n2,Caf\xe9\n", "line", 3, None),  # latin-1 byte
        ("movieId,title\n1,A\n", "line", 1, "movieName"),  # missing column
    ],
)
def test_csv_errors_name_file_row_field(tmp_path, text, unit, line, field):
    p = _csv(tmp_path, text)
    with pytest.raises(CatalogError) as e:
        load_catalog(p, {"id": "movieId", "title": "movieName"})
    assert (e.value.unit, e.value.line, e.value.field) == (unit, line, field)
    assert str(p) in str(e.value) and f"{unit} {line}" in str(e.value)


def test_semicolon_csv_error_names_the_delimiter_and_the_flag_reads_it(tmp_path):
    p = _csv(tmp_path, '\ufeffsku;name;tags\r\nA 1;Amélie;romance|french\r\nB/2;"Tiger; Dragon";action\r\n')
    m = {"id": "sku", "title": "name", "concepts": "tags"}
    with pytest.raises(CatalogError, match=r"looks delimited by ';'; pass --delimiter ';'"):
        load_catalog(p, m)
    j = tmp_path / "c.jsonl"  # a JSONL key with a comma is a key, not a delimiter: no hint
    j.write_text('{"sku;name": "x"}\n')
    with pytest.raises(CatalogError) as e:
        load_catalog(j, m)
    assert "columns are ['sku;name']" in str(e.value) and "--delimiter" not in str(e.value)
    cat = load_catalog(p, m, delimiter=";")
    assert cat.ids == ["A 1", "B/2"] and cat["B/2"].title == "Tiger; Dragon" and cat["A 1"].concepts == ("romance", "french")


def test_identical_duplicate_rows_collapse(tmp_path):
    assert len(load_catalog(_csv(tmp_path, "id,title\n1,A\n1,A\n"))) == 1


def test_jsonl_mapping_errors_use_file_lines(tmp_path):
    p = tmp_path / "c.jsonl"
    p.write_text('{"sku": "1", "name": "A"}\n\n{"sku": "2", "name": ""}\n')
    with pytest.raises(CatalogError) as e:
        load_catalog(p, {"id": "sku", "title": "name"})
    assert (e.value.line, e.value.field) == (3, "name")  # the blank line 2 is counted


def test_unknown_mapping_field_and_format(tmp_path):
    with pytest.raises(ValueError, match="unknown catalog field"):
        load_catalog(_csv(tmp_path, "a,b\n1,x\n"), {"name": "b"})
    with pytest.raises(CatalogError, match="suffix"):
        load_catalog(_csv(tmp_path, "a", name="c.txt"))


def test_cli_validate_summary_and_error(tmp_path, capsys):
    good = _csv(tmp_path, "movieId,movieName,genres\n1,Heat (1995),Crime\n2,Heat (1995),Drama\n")
    assert main(["data", "validate", str(good), "--columns", "id=movieId,title=movieName,concepts=genres"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["items"] == 2 and out["repeated_titles"] == 1 and out["fields_present"] == ["id", "title", "concepts"]
    bad = _csv(tmp_path, "movieId,movieName\n1,A\n1,B\n", name="bad.csv")
    assert main(["data", "validate", str(bad), "--columns", "id=movieId,title=movieName"]) == 2
    err = capsys.readouterr().err
    assert str(bad) in err and "row 2" in err and "movieId" in err
