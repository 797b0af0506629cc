"""A dataset in a foreign shape: TSV utterances with their own split column, train/dev/test files, a histories
table, a CSV catalog with `|` concepts; `prepare --split keep`, generic histories, collaborative ids, validate."""

from __future__ import annotations

import json

import pytest

from dlsearch.cli import main
from dlsearch.data.catalog import CatalogError
from dlsearch.data.loaders import load_histories_table, load_utterances
from dlsearch.data.prepare import prepare

N_ITEMS = 24


def _catalog(root):
    lines = ["asin,name,categories,description"]
    for i in range(N_ITEMS):
        lines.append(f'B0-{i:02d}X,"Brand lamp, model {i}",Home|Lighting{"|Desk" if i % 3 == 0 else ""},A lamp number {i}')
    (root / "catalog.csv").write_text("\n".join(lines) + "\n")


def _utterances(n_dialogues: int, split_of=None) -> str:
    rows = ["dialog_id\tspeaker\tutterance" + ("\tsplit" if split_of else "")]
    for d in range(n_dialogues):
        a, b, c = (d % N_ITEMS), ((d * 5 + 1) % N_ITEMS), ((d * 7 + 2) % N_ITEMS)
        for who, text in (("seeker", f"I have @B0-{a:02d}X"), ("recommender", f"then @[B0-{b:02d}X] fits"),
                          ("seeker", "more?"), ("recommender", f"@B0-{c:02d}X too")):
            rows.append(f"c{d}\t{who}\t{text}" + (f"\t{split_of(d)}" if split_of else ""))
    return "\n".join(rows) + "\n"


def _histories(root):
    rows = ["user_id\titem_id\tposition"]
    for u in range(10):
        rows += [f"u{u}\tB0-{(u + k) % N_ITEMS:02d}X\t{k}" for k in range(4)]
    (root / "histories.tsv").write_text("\n".join(rows) + "\n")


@pytest.fixture
def own(tmp_path):
    root = tmp_path / "shop"
    root.mkdir()
    _catalog(root)
    (root / "conversations.tsv").write_text(_utterances(20, lambda d: ["train", "dev", "test"][d % 3]))
    _histories(root)
    return root


COLS = ["--columns", "id=asin,title=name,concepts=categories,text=description"]


def test_prepare_keeps_the_datasets_own_split_and_histories(own, tmp_path):
    out = tmp_path / "prep"
    man = prepare(str(own), "collaborative", out, split="keep", columns={"id": "asin", "title": "name", "concepts": "categories",
                  "text": "description"}, log=lambda s: None, cache_dir=tmp_path / "emb")
    conv = man["stats"]["conversations"]
    # 20 dialogues, 7 train (d % 3 == 0), 7 dev -> validation, 6 test; each has 2 recommender turns
    assert {s: v["dialogues"] for s, v in conv.items()} == {"train": 7, "validation": 7, "test": 6}
    assert {s: v["turns"] for s, v in conv.items()} == {"train": 14, "validation": 14, "test": 12}
    assert man["split"] == "keep" and man["dataset_name"] == "shop" and man["ratios"] is None
    assert man["stats"]["histories"]["train"]["users"] == 10 and man["stats"]["histories"]["test"]["users"] == 10
    assert man["stats"]["source"]["dialogues_without_turns"] == 0
    assert man["stats"]["examples_by_task"]["train"]["history->next_item"] == 10  # position 1 of each user's 2 training events
    test_ids = [json.loads(l)["meta"]["dialogue_id"] for l in (out / "conversations" / "test.jsonl").read_text().splitlines()]
    assert sorted(set(test_ids), key=lambda x: int(x[1:])) == [f"c{d}" for d in range(20) if d % 3 == 2]


def test_split_files_and_missing_split(own, tmp_path):
    (own / "conversations.tsv").unlink()
    (own / "train.tsv").write_text(_utterances(4))
    (own / "dev.tsv").write_text(_utterances(2).replace("\tc", "\tv").replace("\nc", "\nv"))
    m = prepare(str(own), "sequential", tmp_path / "p", split="keep", columns={"id": "asin", "title": "name"}, log=lambda s: None)
    assert {s: v["dialogues"] for s, v in m["stats"]["conversations"].items()} == {"train": 4, "validation": 2, "test": 0}
    (own / "conversations.tsv").write_text(_utterances(2).replace("\tc", "\tz").replace("\nc", "\nz"))
    with pytest.raises(ValueError, match="has no split"):
        prepare(str(own), "sequential", tmp_path / "q", split="keep", columns={"id": "asin", "title": "name"}, log=lambda s: None)


def test_conversations_with_targets_stay_one_record(own, tmp_path):
    (own / "conversations.tsv").unlink()
    recs = [{"id": f"q{i}", "messages": [{"role": "user", "content": "a desk lamp please"}], "targets": ["B0-03X"], "split": "test" if i else "train"}
            for i in range(3)]
    (own / "conversations.jsonl").write_text("".join(json.dumps(r) + "\n" for r in recs))
    m = prepare(str(own), "sequential", tmp_path / "p", split="keep", columns={"id": "asin", "title": "name"}, log=lambda s: None)
    assert {s: v["turns"] for s, v in m["stats"]["conversations"].items()} == {"train": 1, "validation": 0, "test": 2}


def test_unknown_mention_in_tsv_names_file_and_line(own):
    from dlsearch.data.loaders import load_catalog

    cat = load_catalog(own / "catalog.csv", {"id": "asin", "title": "name"})
    (own / "conversations.tsv").write_text("dialog_id\tspeaker\tutterance\nc1\tseeker\thi\nc1\trecommender\ttry @B0-99X\n")
    with pytest.raises(CatalogError) as e:
        load_utterances(own / "conversations.tsv", catalog=cat)
    assert (e.value.line, e.value.field) == (2, "utterance") and "@B0-99X" in str(e.value)


def test_histories_table_orders_by_position(own):
    h = load_histories_table(own / "histories.tsv")
    assert h["u0"] == [("B0-00X", 0), ("B0-01X", 1), ("B0-02X", 2), ("B0-03X", 3)]


def test_histories_with_iso_dates_order_by_time(tmp_path):
    import datetime as dt

    import pyarrow as pa
    import pyarrow.parquet as pq

    # regression: "2024-01-02T10:00:00" was refused as "not a number"; a date with no zone is UTC
    p = tmp_path / "h.csv"
    p.write_text("user,item,timestamp\nu1,b,2024-01-02T10:00:00\nu1,a,2024-01-01\nu1,c,2024-01-02T11:00:00+02:00\n")
    h = load_histories_table(p)
    assert [i for i, _ in h["u1"]] == ["a", "c", "b"]  # c is 09:00 UTC, before b's 10:00
    assert h["u1"][0][1] == int(dt.datetime(2024, 1, 1, tzinfo=dt.timezone.utc).timestamp())
    q = tmp_path / "h.parquet"  # a parquet timestamp column reads as datetimes
    pq.write_table(pa.table({"user": ["u1", "u1"], "item": ["b", "a"],
                             "timestamp": [dt.datetime(2024, 1, 2), dt.datetime(2024, 1, 1)]}), q)
    assert [i for i, _ in load_histories_table(q)["u1"]] == ["a", "b"]
    p.write_text("user,item,timestamp\nu1,a,yesterday\n")
    with pytest.raises(CatalogError) as e:
        load_histories_table(p)
    assert (e.value.line, e.value.field) == (1, "timestamp") and "ISO 8601" in str(e.value)


def test_cli_validate_dataset_folder(own, capsys):
    assert main(["data", "validate", str(own), *COLS]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["items"] == N_ITEMS and r["histories"]["users"] == 10
    f = r["conversations"][str(own / "conversations.tsv")]
    assert f["conversations"] == 20 and f["records_after_cutting"] == 40 and f["by_split"] == {"train": 7, "validation": 7, "test": 6}
    assert r["warnings"]["empty_text"]["items"] == 0


def test_cli_validate_reports_nameless_and_repeated_titles(tmp_path, capsys):
    p = tmp_path / "c.jsonl"
    p.write_text("".join(json.dumps(r) + "\n" for r in [{"id": "1", "title": " (2015)"}, {"id": "2", "title": "Heat"},
                                                         {"id": "3", "title": "heat"}, {"id": "a", "title": "X"}, {"id": "A", "title": "Y"}]))
    assert main(["data", "validate", str(p)]) == 0
    w = json.loads(capsys.readouterr().out)["warnings"]
    assert w["titles_without_name"]["items"] == 1 and w["repeated_titles"]["groups"] == 1
    assert w["id_collisions"]["examples"] == [["a", "A"]] and w["empty_text"]["items"] == 5
