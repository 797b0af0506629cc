"""evaluation/protocol.py on real ReDial turns and MovieLens histories: modes, baselines, report files."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest

from dlsearch.data.catalog import Catalog, Item
from dlsearch.data.formats import Prediction, ScoredItem, save_predictions
from dlsearch.data.titles import titles_of
from dlsearch.evaluation import protocol as P


def test_redial_task_reads_the_prepared_split(redial_prepared) -> None:
    task = P.redial_turns_task(redial_prepared)
    assert len(task.catalog) == 6924 and task.queries and all(q.targets for q in task.queries)
    assert set(task.groups).isdisjoint({P.dialogue_of(c) for c in P.load_conversations(redial_prepared / "conversations" / "train.jsonl")})
    assert task.hashes["catalog"] == task.catalog.content_hash() and "not directly comparable" in task.note


def test_leaky_split_is_refused(redial_prepared, tmp_path) -> None:
    import shutil

    shutil.copytree(redial_prepared, tmp_path / "p")
    train = (tmp_path / "p" / "conversations" / "train.jsonl").read_text()
    test = (tmp_path / "p" / "conversations" / "test.jsonl").read_text()
    (tmp_path / "p" / "conversations" / "train.jsonl").write_text(train + test.splitlines()[0] + "\n")
    with pytest.raises(ValueError, match="leaks"):
        P.redial_turns_task(tmp_path / "p")


def test_excluded_mode_removes_mentioned_items_and_targets() -> None:
    cat = Catalog([Item(str(i), f"m{i}") for i in range(6)])
    from dlsearch.data.formats import Conversation, Message

    q = [Conversation("d:1", [Message("user", "hi @1")], exclude=["1"], targets=["1", "2"]),
         Conversation("e:1", [Message("user", "@3")], exclude=["3"], targets=["3"])]
    task = P.EvalTask("t", cat, P.Counter(), q, ["d", "e"])
    ranks = [(["1", "2", "3"], [3.0, 2.0, 1.0]), (["3", "4"], [1.0, 0.5])]
    kept, ranked, gold = P.mode_view(task, ranks, "excluded", depth=10)
    assert kept == [0] and ranked[0][0] == ["2", "3"] and gold == [["2"]]
    kept, ranked, gold = P.mode_view(task, ranks, "included", depth=2)
    assert kept == [0, 1] and ranked[0][0] == ["1", "2"] and gold[0] == ["1", "2"]


def test_popularity_counts_training_split_only(redial_prepared) -> None:
    task = P.redial_turns_task(redial_prepared)
    systems = P.baseline_systems(task)
    _, rows = systems["popularity"].search(task.queries[:2], 5)
    top = [task.catalog.ids[r] for r in rows[0]]
    counts = [task.train_counts[i] for i in top]
    assert counts == sorted(counts, reverse=True) and counts[0] == max(task.train_counts.values())
    # the counts come from the train file alone: recomputed from it, and no test turn changes them
    from dlsearch.data.formats import load_conversations

    train = load_conversations(redial_prepared / "conversations" / "train.jsonl")
    assert task.train_counts == P.training_counts(train)
    assert P.training_counts(train + task.queries) != task.train_counts  # test turns would have counted


def test_report_end_to_end_with_a_predictions_file(redial_prepared, tmp_path) -> None:
    task = P.redial_turns_task(redial_prepared)
    systems = P.baseline_systems(task)
    # an oracle-ish predictions file: the targets first, then filler; it must beat both baselines significantly
    # (10 items: a file's metrics are scored up to its longest list)
    filler = task.catalog.ids[:10]
    preds = [Prediction(q.id, [ScoredItem(t, 1.0, r + 1, "oracle") for r, t in enumerate(list(dict.fromkeys(q.targets + filler))[:10])])
             for q in task.queries]
    save_predictions(tmp_path / "oracle.jsonl", preds)
    name, by_id, digest = P.predictions_system(tmp_path / "oracle.jsonl")
    assert name == "oracle"
    report = P.evaluate_systems(task, {**systems, name: by_id}, seed=0, n_resamples=200, config={"k": 1})
    for mode in P.MODES:
        d = report["modes"][mode]
        s = d["systems"]["oracle"]
        assert s["metrics"]["recall@10"]["mean"] > 0.9 and s["vs_best_baseline"]["recall@10"]["p_value"] < 0.01
        for b in ("popularity", "bm25"):
            iv = d["systems"][b]["metrics"]["recall@10"]
            assert 0 <= iv["low"] <= iv["mean"] <= iv["high"] <= 1
    assert report["modes"]["excluded"]["n_queries"] <= report["modes"]["included"]["n_queries"]
    paths = P.write_report(report, task, tmp_path / "out")
    js = json.loads(paths["json"].read_text())
    assert js["seed"] == 0 and js["hashes"]["catalog"] == task.catalog.content_hash() and "_runs" not in js["modes"]["excluded"]
    rows = list(csv.DictReader(open(paths["csv"])))
    assert {r["system"] for r in rows} == {"popularity", "bm25", "oracle"}
    trec = paths["trec_excluded"].read_text().splitlines()
    qid, q0, doc, rank, score, tag = trec[0].split()
    assert q0 == "Q0" and rank == "1" and tag in {"popularity", "bm25", "oracle"}


def test_movielens_leave_one_out(datasets_dir) -> None:
    import csv as _csv

    with open(datasets_dir / "movielens-latest-small" / "movies.csv", encoding="utf-8") as f:
        cat = Catalog([Item(r["movieId"], r["title"], concepts=tuple(r["genres"].split("|"))) for r in _csv.DictReader(f)])
    hist: dict[str, list[tuple[str, int]]] = {}
    with open(datasets_dir / "movielens-latest-small" / "ratings.csv", encoding="utf-8") as f:
        for r in _csv.DictReader(f):
            if int(r["userId"]) <= 40:
                hist.setdefault(r["userId"], []).append((r["movieId"], int(r["timestamp"])))
    for v in hist.values():
        v.sort(key=lambda e: (e[1], e[0]))
    task = P.movielens_loo_task(cat, hist)
    assert len(task.queries) == 40
    for q in task.queries:
        h = [i for i, _ in hist[q.meta["user"]]]
        assert q.targets == [h[-1]] and h[-2] in q.exclude and len(q.exclude) == len(set(h[:-1]))
        assert task.train_counts[h[-1]] <= sum(1 for u in hist.values() for i, _ in u[:-2] if i == h[-1])
    report = P.evaluate_systems(task, P.baseline_systems(task), n_resamples=100, modes=("excluded",))
    mode, primary = report["modes"]["excluded"], report["primary_metric"]
    means = {b: mode["systems"][b]["metrics"][primary]["mean"] for b in ("popularity", "bm25")}
    assert mode["best_baseline"] == max(means, key=means.get)  # the baseline with the higher primary metric
    other = min(means, key=means.get)
    assert primary in mode["systems"][other]["vs_best_baseline"] and "vs_best_baseline" not in mode["systems"][mode["best_baseline"]]


def test_cli_evaluate_writes_results(redial_prepared, tmp_path, capsys) -> None:
    from dlsearch.cli import main

    rc = main(["evaluate", "--data", str(redial_prepared), "--out", str(tmp_path / "ev"), "--set", "n_resamples=50",
               "--set", "modes=[excluded]"])
    assert rc == 0 and (tmp_path / "ev" / "results.json").is_file() and (tmp_path / "ev" / "run-excluded.trec").is_file()
    assert "not directly comparable" in capsys.readouterr().out
    assert main(["evaluate", "--data", str(redial_prepared), "--set", "bogus=1"]) == 2
    assert main(["evaluate", "--data", str(redial_prepared), "--strategies", "dual", "--out", str(tmp_path / "x")]) == 2


def test_cli_evaluate_reads_config_paths_relative_to_the_config(redial_prepared, tmp_path, monkeypatch) -> None:
    """`data` and `predictions` in an evaluate config are read next to the config (they were read from the working
    directory); `out` is written in the working directory."""
    import shutil

    import yaml

    from dlsearch.cli import main
    from dlsearch.data.formats import load_conversations

    project = tmp_path / "project"
    shutil.copytree(redial_prepared, project / "prep")
    test = load_conversations(project / "prep" / "conversations" / "test.jsonl")
    save_predictions(project / "preds.jsonl", [Prediction(c.id, [ScoredItem(c.targets[0], 1.0, 1, "oracle")]) for c in test if c.targets])
    (project / "evaluate.yaml").write_text(yaml.safe_dump({"task": "turns", "data": "prep", "predictions": ["preds.jsonl"],
                                                           "n_resamples": 20, "modes": ["excluded"], "out": "ev"}))
    monkeypatch.chdir(tmp_path)
    assert main(["evaluate", "--config", str(project / "evaluate.yaml")]) == 0
    res = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert "oracle" in res["modes"]["excluded"]["systems"] and res["modes"]["excluded"]["n_queries"] > 0


def test_systems_that_exclude_by_themselves_are_only_in_the_excluded_mode(redial_prepared) -> None:
    task = P.redial_turns_task(redial_prepared)
    pop = P.baseline_systems(task)["popularity"]
    asked: list[int] = []

    class SelfExcluding:
        masks_exclusions = True

        def search(self, queries, k):
            asked.append(k)
            s, r = pop.search(queries, k)
            for n, q in enumerate(queries):  # drop excluded items, as direct search's mask does
                keep = [(a, b) for a, b in zip(s[n], r[n]) if b < 0 or task.catalog.ids[b] not in set(q.exclude)]
                s[n, : len(keep)] = [a for a, _ in keep]
                r[n, : len(keep)] = [b for _, b in keep]
                s[n, len(keep):], r[n, len(keep):] = -np.inf, -1
            return s, r

    report = P.evaluate_systems(task, {"popularity": pop, "masked": SelfExcluding()}, depth=10, n_resamples=50)
    assert set(asked) == {10}  # asked for depth only: no over-fetch for exclusions
    assert "masked" in report["modes"]["excluded"]["systems"] and report["modes"]["included"]["not_in_mode"] == ["masked"]
    assert "masked" not in report["modes"]["included"]["systems"]


def test_cutoffs_beyond_a_predictions_files_lists_are_not_scored(redial_prepared, tmp_path) -> None:
    """issue 13: `evaluate` reported recall@50 for a file of 10-item lists (generate --k 10): that is recall@10 under
    another name, set beside baselines that ranked 100 items. A predictions file is scored only at cutoffs up to its
    longest list; the others are listed as not scored (JSON) and shown as n/a (table); the baselines keep them."""
    import io

    from rich.console import Console

    task = P.redial_turns_task(redial_prepared)
    filler = task.catalog.ids[:10]
    preds = [Prediction(q.id, [ScoredItem(t, 1.0 / (r + 1), r + 1, "tenitems")
                               for r, t in enumerate(list(dict.fromkeys(q.targets + filler))[:10])]) for q in task.queries]
    save_predictions(tmp_path / "p.jsonl", preds)
    name, by_id, _ = P.predictions_system(tmp_path / "p.jsonl")
    systems = {"popularity": P.baseline_systems(task)["popularity"], name: by_id}
    report = P.evaluate_systems(task, systems, modes=["excluded"], n_resamples=20)
    paths = P.write_report(report, task, tmp_path / "ev")
    d = json.loads(paths["json"].read_text())["modes"]["excluded"]["systems"]
    ours = d["tenitems"]
    assert ours["list_length"] == 10 and ours["not_scored"] == ["recall@50"]
    assert set(ours["metrics"]) == {"recall@1", "recall@10", "ndcg@10", "mrr"} and "recall@50" not in ours["vs_best_baseline"]
    assert "recall@50" in d["popularity"]["metrics"] and d["popularity"]["not_scored"] == []
    rows = list(csv.DictReader(open(paths["csv"])))
    assert {r["metric"] for r in rows if r["system"] == "tenitems"} == {"recall@1", "recall@10", "ndcg@10", "mrr"}
    buf = io.StringIO()
    P.print_report(report, Console(file=buf, width=250))
    row = next(line for line in buf.getvalue().splitlines() if line.lstrip("│ ").startswith("tenitems"))
    assert "n/a (10-item lists)" in row
    # a primary metric deeper than the ranking depth is refused: no system could be compared on it
    with pytest.raises(ValueError, match="recall@10 cuts deeper than the ranking depth 5"):
        P.evaluate_systems(task, systems, depth=5)


class _Edited:
    """Popularity, except that it finds nothing for the first query (as BM25 does for a turn with no shared words)
    and repeats each list's first item in the second slot (as an unconstrained model can)."""

    masks_exclusions = True

    def __init__(self, inner):
        self.inner = inner

    def search(self, queries, k):
        scores, rows = self.inner.search(queries, k)
        rows[:, 1], scores[:, 1] = rows[:, 0], scores[:, 0]
        scores[0], rows[0] = -np.inf, -1
        return scores, rows


def test_a_saved_run_scores_again_to_the_same_report(redial_prepared, tmp_path) -> None:
    """A system that returned nothing for a turn writes no line for it in the TREC file, and a repeated item is
    written once (trec_eval refuses repeats; the excluded mode, the only one a saved run is scored in, keeps one
    member per duplicate group too). Reading the file back must give the lists as scored: an empty list for that
    turn (other systems have it: it was scored, not 'evaluated on other turns'), so the metrics equal the report's."""
    task = P.conversation_turns_task(redial_prepared)
    pop = P.baseline_systems(task)["popularity"]
    systems = {"edited": _Edited(pop), "popularity": pop}
    report = P.evaluate_systems(task, systems, seed=0, n_resamples=50, modes=["excluded"])
    paths = P.write_report(report, task, tmp_path / "ev")
    assert P.excluded_mode_targets(titles_of(task.catalog), task.queries[0]), "the first turn must be scored"
    again = P.evaluate_systems(task, {n: P.TrecRun(paths["trec_excluded"], task.catalog, n) for n in systems},
                               seed=0, n_resamples=50, modes=["excluded"], baselines=("popularity",))
    for name in systems:
        for m in ("recall@10", "ndcg@10", "mrr"):
            want = report["modes"]["excluded"]["systems"][name]["metrics"][m]
            assert again["modes"]["excluded"]["systems"][name]["metrics"][m] == want, (name, m)
    assert report["modes"]["excluded"]["systems"]["edited"]["metrics"]["ndcg@10"] != \
        report["modes"]["excluded"]["systems"]["popularity"]["metrics"]["ndcg@10"]


def test_predicted_items_outside_the_catalog_are_said(redial_prepared, tmp_path, capsys) -> None:
    # regression: a predictions file naming codes or another catalog's ids was scored as misses without a word
    from dlsearch.cli import main

    task = P.redial_turns_task(redial_prepared)
    q = task.queries[0]
    save_predictions(tmp_path / "codes.jsonl", [Prediction(q.id, [ScoredItem("<a_1><b_2>", 1.0, 1, "codes")])])
    args = ["evaluate", "--task", "turns", "--data", str(redial_prepared), "--out", str(tmp_path / "ev"), "--predictions"]
    assert main(args + [str(tmp_path / "codes.jsonl")]) == 2
    assert "none of its items is an id of the task's catalog (e.g. ['<a_1><b_2>'])" in capsys.readouterr().err
    save_predictions(tmp_path / "half.jsonl", [Prediction(q.id, [ScoredItem("nope", 1.0, 1, "half"),
                                                                ScoredItem(q.targets[0], 0.5, 2, "half")])])
    with pytest.warns(UserWarning, match=r"1 of 2 predicted items are not in the task's catalog"):
        assert main(args + [str(tmp_path / "half.jsonl")]) == 0
    js = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert js["predicted_items_not_in_catalog"] == {str(tmp_path / "half.jsonl"): {"items": 1, "of": 2, "examples": ["nope"]}}
    assert js["modes"]["included"]["systems"]["half"]["metrics"]["mrr"]["mean"] > 0  # the valid item still counts


def test_another_systems_plain_ranked_lists_are_evaluated(redial_prepared, tmp_path) -> None:
    # a user's own system (a GENRE or TIGER run) writes ranked ids; they needed {item_id, score, rank, strategy} each
    from dlsearch.cli import main
    from dlsearch.data.catalog import CatalogError
    from dlsearch.data.formats import load_predictions

    task = P.redial_turns_task(redial_prepared)
    qs = task.queries[:3]
    lines = [{"id": q.id, "items": [q.targets[0], "nope-not-an-item"] if n == 0 else [{"item_id": q.targets[0]}]}
             for n, q in enumerate(qs)]
    path = tmp_path / "tiger.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in lines))
    preds = load_predictions(path)
    assert [(s.item_id, s.rank, s.score, s.strategy) for s in preds[0].items] == [(qs[0].targets[0], 1, -1.0, ""),
                                                                                 ("nope-not-an-item", 2, -2.0, "")]
    with pytest.warns(UserWarning, match="1 of 4 predicted items are not in the task's catalog"):
        assert main(["evaluate", "--task", "turns", "--data", str(redial_prepared), "--out", str(tmp_path / "ev"),
                     "--predictions", str(path)]) == 0
    js = json.loads((tmp_path / "ev" / "results.json").read_text())
    assert js["modes"]["included"]["systems"]["tiger"]["metrics"]["recall@1"]["n"] == len(task.queries)
    path.write_text(json.dumps({"id": qs[0].id, "items": [1.5]}) + "\n")
    with pytest.raises(CatalogError, match=r"only item_id is required") as e:
        load_predictions(path)
    assert (e.value.line, e.value.field) == (1, "items[0]")
