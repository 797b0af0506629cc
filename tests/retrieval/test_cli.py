"""`dlsearch index build --kind bm25|concept|dual` and `dlsearch recommend` end to end on real data samples."""

from __future__ import annotations

import json

import yaml

from dlsearch.data.formats import Conversation, Message, load_predictions, save_conversations
from dlsearch.cli import main
from dlsearch.app.search_server import free_port


def test_index_build_and_recommend(redial_sample, embed_cache, tmp_path, capsys):
    catalog, turns = redial_sample
    data = tmp_path / "data"
    catalog.save_jsonl(data / "catalog.jsonl")
    save_conversations(data / "conversations" / "train.jsonl", turns[:-20])
    save_conversations(data / "conversations" / "validation.jsonl", turns[-20:-10])
    idx = tmp_path / "index"
    for kind in ("bm25", "concept"):
        assert main(["index", "build", "--kind", kind, "--data", str(data), "--out", str(idx / kind), "--cache-dir", embed_cache]) == 0
    assert main(["index", "build", "--kind", "dual", "--data", str(data), "--out", str(idx / "dual"), "--cache-dir", embed_cache,
                 "--config", "configs/dual_encoder.yaml", "--set", "epochs=1", "--set", "batch_size=32"]) == 0
    out = capsys.readouterr().out
    assert '"kind": "dual"' in out and '"conversation_pairs"' in out

    cfg = yaml.safe_load(open("configs/recommend.yaml"))  # the production config with tiny overrides
    cfg.update(catalog=str(data / "catalog.jsonl"), cache_dir=embed_cache)
    cfg["strategies"]["dual"]["index"] = str(idx / "dual")
    cfg["strategies"]["concept"].update(enabled=True, index=str(idx / "concept"), concepts_from="meta", snap=False)
    cfg["strategies"]["bm25"]["index"] = str(idx / "bm25")
    cfg["strategies"]["search_api"].update(enabled=True, endpoint=f"http://127.0.0.1:{free_port()}", retries=0)  # down
    (tmp_path / "recommend.yaml").write_text(yaml.safe_dump(cfg))
    convs = turns[-10:] + [Conversation("concepts-only", [Message("user", "any scary film?")], meta={"concepts": ["horror"]})]
    save_conversations(tmp_path / "in.jsonl", convs)
    assert main(["recommend", "--config", str(tmp_path / "recommend.yaml"), "--input", str(tmp_path / "in.jsonl"),
                 "--out", str(tmp_path / "preds.jsonl"), "--k", "5"]) == 0
    preds = load_predictions(tmp_path / "preds.jsonl")
    assert [p.id for p in preds] == [c.id for c in convs]
    assert all(len(p.items) == 5 for p in preds)
    for p, c in zip(preds, convs):
        assert not set(c.exclude) & {s.item_id for s in p.items}
    used = {name for p in preds for s in p.items for name in s.strategy.split("+")}
    assert {"dual", "bm25", "concept"} <= used and "search_api" not in used
    decisions = [json.loads(line) for line in (tmp_path / "preds.jsonl.decisions.jsonl").read_text().splitlines()]
    assert "search_api" in decisions[0]["failures"] and decisions[0]["ids"] == [c.id for c in convs]
    assert all("search_api" in p.degraded for p in preds)  # the degradation is on every line it affected


def test_bad_config_names_the_key(tmp_path, capsys):
    (tmp_path / "c.yaml").write_text("catalog: x.jsonl\nstrategies:\n  bm25: {indx: null}\n")
    assert main(["recommend", "--config", str(tmp_path / "c.yaml"), "--input", "x", "--out", str(tmp_path / "o")]) == 2
    assert "unknown field 'strategies.bm25.indx'; did you mean 'index'" in capsys.readouterr().err  # the shared validator's message


def test_recommend_does_not_echo_the_users_films(tmp_path):
    """The three conversations of issue 12 through `dlsearch recommend` (BM25 on the bundled ReDial movies): films
    the user named in plain text, and their duplicates, are never recommended back."""
    from dlsearch.data.redial import load_redial
    from dlsearch.data.titles import titles_of

    catalog = load_redial()[0]
    catalog.save_jsonl(tmp_path / "catalog.jsonl")
    cfg = {"catalog": str(tmp_path / "catalog.jsonl"), "k": 10, "strategies": {"bm25": {"index": None}}}
    (tmp_path / "r.yaml").write_text(yaml.safe_dump(cfg))
    convs = [Conversation("matrix", [Message("user", "I loved The Matrix and Inception, what else?")]),
             Conversation("pixar", [Message("user", "They loved Toy Story and Finding Nemo")]),
             Conversation("halloween", [Message("user", "Hi! I'm looking for a good horror movie for Halloween. "
                                                        "Something creepy and smart, not just gore.")])]
    save_conversations(tmp_path / "in.jsonl", convs)
    assert main(["recommend", "--config", str(tmp_path / "r.yaml"), "--input", str(tmp_path / "in.jsonl"),
                 "--out", str(tmp_path / "p.jsonl")]) == 0
    preds = {p.id: [s.item_id for s in p.items] for p in load_predictions(tmp_path / "p.jsonl")}
    t = titles_of(catalog)
    named = {"matrix": ["85036", "140395", "Inception  (2010)"], "pixar": ["Toy Story  (1995)", "Finding Nemo (2003)"]}
    by_title = {it.title: it.id for it in catalog}
    for cid, films in named.items():
        echo = t.excluded_ids(by_title.get(f, f) for f in films) & set(preds[cid])
        assert len(preds[cid]) == 10 and not echo, (cid, [catalog[i].title for i in echo])
    series = [i for i in preds["halloween"] if "halloween" in catalog[i].title.lower()]
    assert len(series) <= 2 and len(preds["halloween"]) == 10


def test_a_bad_input_line_is_named_before_anything_is_loaded(tmp_path, capsys):
    """recommend and generate read the conversations before loading a model, index or catalog (which can take
    minutes): the model, index and catalog named here do not exist, so only the input's own error can come first."""
    bad = tmp_path / "in.jsonl"
    bad.write_text(json.dumps({"id": "a", "messages": [{"role": "user", "content": "hi"}]}) + "\n"
                   + json.dumps({"id": "b", "messages": [{"role": "system", "content": "You recommend films."}]}) + "\n")
    (tmp_path / "r.yaml").write_text(yaml.safe_dump({"catalog": str(tmp_path / "missing.jsonl"), "model_dir": str(tmp_path / "nomodel"),
                                                     "strategies": {"bm25": {"enabled": True}}}))
    assert main(["recommend", "--config", str(tmp_path / "r.yaml"), "--input", str(bad), "--out", str(tmp_path / "o.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl, line 2, field 'messages[0]'" in err and "missing.jsonl" not in err
    assert "move it to the record's \"meta\" or drop it" in err  # what to do with a system prompt
    assert main(["generate", "--model", str(tmp_path / "nomodel"), "--index", str(tmp_path / "noindex"), "--input", str(bad),
                 "--out", str(tmp_path / "g.jsonl")]) == 2
    err = capsys.readouterr().err
    assert "in.jsonl, line 2, field 'messages[0]'" in err and "noindex" not in err and "nomodel" not in err
