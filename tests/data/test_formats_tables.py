"""TSV, --delimiter, BOM, ragged rows and duplicated columns: read or refused with file, line and field."""

from __future__ import annotations

import pytest

from dlsearch.cli import main
from dlsearch.data.catalog import CatalogError
from dlsearch.data.loaders import load_catalog, read_table


def _write(tmp_path, name, text):
    p = tmp_path / name
    p.write_bytes(text.encode("utf-8") if isinstance(text, str) else text)
    return p


def test_tsv_catalog_with_pipe_concepts(tmp_path):
    p = _write(tmp_path, "catalog.tsv", "id\ttitle\tconcepts\nB0-7XK\tDesk lamp, brass\tHome|Lighting\nB0-7XL\tLamp\t\n")
    cat = load_catalog(p)
    assert cat.ids == ["B0-7XK", "B0-7XL"] and cat["B0-7XK"].title == "Desk lamp, brass"
    assert cat["B0-7XK"].concepts == ("Home", "Lighting") and cat["B0-7XL"].concepts == ()


def test_delimiter_option(tmp_path):
    p = _write(tmp_path, "catalog.csv", "id;title\n1;A, b\n")
    assert load_catalog(p, delimiter=";")["1"].title == "A, b"
    assert main(["data", "validate", str(p), "--delimiter", ";"]) == 0


def test_bom_prefixed_csv_reads_its_first_column(tmp_path):
    p = _write(tmp_path, "catalog.csv", "\ufeffid,title\n1,A\n")
    assert load_catalog(p).ids == ["1"]


def test_ragged_csv_names_file_line_and_field(tmp_path):
    p = _write(tmp_path, "catalog.csv", "id,title,text\n1,A,x\n2,B\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(p)
    assert (e.value.path, e.value.line, e.value.field) == (str(p), 3, "text") and "2 fields" in str(e.value)
    p2 = _write(tmp_path, "c2.csv", "id,title\n1,A,extra\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(p2)
    assert e.value.line == 2 and e.value.field == "column 3"


def test_duplicated_csv_column_is_refused_not_dropped(tmp_path):
    p = _write(tmp_path, "catalog.csv", "id,title,title\n1,A,B\n")
    with pytest.raises(CatalogError) as e:
        load_catalog(p)
    assert (e.value.line, e.value.field) == (1, "title") and "duplicated column" in str(e.value)


def test_cli_validate_reports_ragged_csv_as_error(tmp_path, capsys):
    p = _write(tmp_path, "catalog.csv", "id,title\n1,A\n2\n")
    assert main(["data", "validate", str(p)]) == 2
    err = capsys.readouterr().err
    assert f"{p}, line 3" in err and "title" in err


def test_read_table_rows_and_lines(tmp_path):
    t = read_table(_write(tmp_path, "h.tsv", "user\titem\n\nu1\tB0-7XK\nu1\tB0-7XL\n"))
    assert t.columns == ["user", "item"] and [r["item"] for r in t.rows] == ["B0-7XK", "B0-7XL"] and t.lines == [1, 2]


@pytest.mark.parametrize("msg,got", [({"role": "USER", "content": "hi"}, "got role 'USER'"),
                                     ({"role": "user", "content": None}, "got content of type NoneType"),
                                     (["user", "hi"], "got a list")])
def test_bad_message_error_says_what_it_got(msg, got):
    from dlsearch.data.formats import conversation_from_record

    with pytest.raises(CatalogError) as e:
        conversation_from_record({"id": "c1", "messages": [{"role": "user", "content": "ok"}, msg]}, path="c.jsonl", line=7)
    assert (e.value.line, e.value.field) == (7, "messages[1]") and got in str(e.value)
