"""The whole loop on a dataset in a foreign shape, through the CLI only (docs/own-data.md):
TSV utterances with ids like B0-7XK and their own split column, a histories table, a CSV catalog with '|' concepts.
validate -> prepare (split kept) -> finetune (conversation, indexing, history tasks; configs/finetune-tiny.yaml)
-> index build (trie, bm25, dual) -> generate -> recommend -> evaluate, with the counts checked at every step."""

from __future__ import annotations

import contextlib
import io
import json
import os
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
N_ITEMS, N_DIALOGUES, N_USERS = 30, 24, 12
SPLIT = {0: "train", 1: "train", 2: "dev", 3: "test"}  # dialogue d -> SPLIT[d % 4]: 12 train, 6 dev, 6 test
COLS = "id=asin,title=name,concepts=categories,text=description"


def _write_dataset(root: Path) -> None:
    root.mkdir()
    rows = ["asin,name,categories,description"]
    for i in range(N_ITEMS):
        rows.append(f'B0-{i:02d}XK,"Lumina lamp {i}, {["white", "black", "brass"][i % 3]}",'
                    f'Home|Lighting|{["Desk", "Floor", "Wall"][i % 3]},A {["small", "tall", "wide"][i % 3]} lamp')
    (root / "catalog.csv").write_text("\n".join(rows) + "\n")
    rows = ["dialog_id\tspeaker\tutterance\tsplit"]
    for d in range(N_DIALOGUES):
        a, b, c = d % N_ITEMS, (d + 10) % N_ITEMS, (d + 20) % N_ITEMS  # three distinct items: two recommender turns
        for who, text in (("seeker", f"I bought @B0-{a:02d}XK, what goes with it?"), ("recommender", f"@[B0-{b:02d}XK] is nice"),
                          ("seeker", "anything else? mail me@shop.example, \\@ana says hi"),  # an e-mail, a handle
                          ("recommender", f"also @B0-{c:02d}XK.")):
            rows.append(f"x{d}\t{who}\t{text}\t{SPLIT[d % 4]}")
    (root / "conversations.tsv").write_text("\n".join(rows) + "\n")
    rows = ["user\titem\ttimestamp"]
    for u in range(N_USERS):
        rows += [f"u{u}\tB0-{(u * 3 + k) % N_ITEMS:02d}XK\t{1000 + k}" for k in range(5)]
    (root / "histories.tsv").write_text("\n".join(rows) + "\n")


def dls(*args: str, cwd: Path) -> str:
    """`dlsearch ARGS` run from `cwd` through the CLI entry point (dlsearch.cli.main: argument parsing, the verbs,
    their error handling) in this process: each subprocess paid ~8 s CPU of torch/transformers imports.
    Returns what the command printed."""
    from dlsearch.cli import main

    out, err, here = io.StringIO(), io.StringIO(), os.getcwd()
    os.chdir(cwd)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            rc = main([str(a) for a in args])
    finally:
        os.chdir(here)
    assert rc == 0, f"dlsearch {' '.join(map(str, args))}\n{err.getvalue()[-4000:]}"
    return out.getvalue()


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(l) for l in path.read_text().splitlines() if l.strip()]


def test_own_data_cli_loop(tmp_path, monkeypatch):
    monkeypatch.setenv("DLSEARCH_CACHE_DIR", os.environ.get("DLSEARCH_CACHE_DIR", str(REPO / ".cache")))
    ds, prep, model = tmp_path / "shop", tmp_path / "prep", tmp_path / "model"
    _write_dataset(ds)
    cwd = tmp_path  # every path below is given as the user would: relative to where they run

    v = json.loads(dls("data", "validate", "shop", "--columns", COLS, cwd=cwd))
    conv_report = v["conversations"][str(Path("shop") / "conversations.tsv")]
    assert v["items"] == N_ITEMS and v["histories"]["users"] == N_USERS and v["histories"]["events"] == 5 * N_USERS
    assert conv_report["conversations"] == N_DIALOGUES and conv_report["records_after_cutting"] == 2 * N_DIALOGUES
    assert conv_report["by_split"] == {"train": 12, "validation": 6, "test": 6}

    dls("data", "prepare", "--dataset", "shop", "--ids", "sequential", "--split", "keep", "--out", "prep", "--columns", COLS, cwd=cwd)
    man = json.loads((prep / "manifest.json").read_text())
    st = man["stats"]
    assert man["split"] == "keep" and man["dataset_name"] == "shop" and st["catalog"]["items"] == N_ITEMS
    assert {s: v["dialogues"] for s, v in st["conversations"].items()} == {"train": 12, "validation": 6, "test": 6}
    assert {s: v["turns"] for s, v in st["conversations"].items()} == {"train": 24, "validation": 12, "test": 12}
    assert st["source"]["dialogues_without_turns"] == 0
    test_dialogues = {r["meta"]["dialogue_id"] for r in _jsonl(prep / "conversations" / "test.jsonl")}
    assert test_dialogues == {f"x{d}" for d in range(N_DIALOGUES) if d % 4 == 3}  # the dataset's own split, kept
    assert st["histories"]["test"]["users"] == N_USERS

    out = dls("finetune", "--config", REPO / "configs" / "finetune-tiny.yaml", "--set", "data.dataset=prep",
              "--set", "output_dir=model", "--set", "stages.index.train.max_steps=6", "--set", "stages.dialogue.train.max_steps=4", cwd=cwd)
    summary = json.loads((model / "run_summary.json").read_text())
    assert [s["stage"] for s in summary] == ["index", "dialogue"] and summary[-1]["steps"] == 4
    mm = json.loads((model / "manifest.json").read_text())
    assert mm["complete"] and mm["prepared"] and (model / mm["prepared_dir"]).resolve() == prep.resolve()
    counts = mm["stage"]["examples_by_task"]
    # conversation->item: one row per (training turn, target): 24 turns, 1 target each; history: 2 per user
    assert counts["conversation->item"] == 24 and counts["history->next_item"] == 2 * N_USERS and counts["title->id"] > 0
    assert "memorization" in out or mm["stage"].get("memorization")
    length = mm["stage"]["length"]["conversation->item"]  # length policy: every cut or dropped example counted
    assert sum(length.values()) == 24 and length["dropped"] == 0 and mm["stage"]["length_policy"]["max_length"] == 256

    t = json.loads(dls("index", "build", "--kind", "trie", "--data", "prep", "--model", "model", "--out", "index/trie", cwd=cwd))
    assert t["items"] == N_ITEMS
    b = json.loads(dls("index", "build", "--kind", "bm25", "--data", "prep", "--out", "index/bm25", cwd=cwd))
    d = json.loads(dls("index", "build", "--kind", "dual", "--data", "prep", "--out", "index/dual", "--set", "epochs=1", cwd=cwd))
    assert b["n_items"] == d["n_items"] == N_ITEMS
    assert not Path(json.loads((tmp_path / "index" / "trie" / "manifest.json").read_text())["catalog_path"]).is_absolute()

    g = json.loads(dls("generate", "--model", "model", "--index", "index/trie", "--input", "prep/conversations/test.jsonl",
                       "--out", "direct.jsonl", "--beams", "4", "--k", "4", cwd=cwd))
    preds = _jsonl(tmp_path / "direct.jsonl")
    assert g["conversations"] == len(preds) == 12 and all(p["items"] for p in preds)

    (tmp_path / "rec.yaml").write_text(json.dumps({
        "catalog": "prep/catalog.jsonl", "k": 5, "cache_dir": str(Path(os.environ["DLSEARCH_CACHE_DIR"]) / "embeddings"), "model_dir": "model",
        "policy": {"unmeasured": "fallback", "min_exact_match": 0.0},
        "strategies": {"direct": {"enabled": True, "factory": "dlsearch.retrieval.direct:direct_from_config",
                                  "options": {"index": "index/trie", "beams": 4}},
                       "dual": {"enabled": True, "index": "index/dual"}, "bm25": {"enabled": True, "index": "index/bm25"}}}))
    dls("recommend", "--config", "rec.yaml", "--input", "prep/conversations/test.jsonl", "--out", "rec.jsonl", cwd=cwd)
    rec = _jsonl(tmp_path / "rec.jsonl")
    assert len(rec) == 12 and all(len(p["items"]) == 5 for p in rec)

    dls("evaluate", "--task", "turns", "--data", "prep", "--predictions", "direct.jsonl", "rec.jsonl", "--out", "eval", cwd=cwd)
    res = json.loads((tmp_path / "eval" / "results.json").read_text())
    assert res["task"] == "shop-turns" and "shop" in res["note"] and "ReDial" not in res["note"]
    ex = res["modes"]["excluded"]
    assert ex["n_queries"] + ex["dropped_queries"] == 12 and len(ex["systems"]) == 4  # popularity, bm25, direct.jsonl, rec.jsonl
