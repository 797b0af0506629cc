"""Learning curve and final test of a pretrained-base ReDial recipe, through the production evaluation.

    # while (or after) `dlsearch finetune --config configs/finetune-redial-pretrained.yaml` runs:
    python bench/redial_pretrained_curve.py curve --run runs/redial_pretrained --data runs/redial-title \
        --n-val 40 --beams 10 --out bench/results/redial_pretrained
    # the configuration chosen on validation, once on the test turns:
    python bench/redial_pretrained_curve.py test --run runs/redial_pretrained --step 480 --data runs/redial-title \
        --beams 10 --length-penalty 0 --out bench/results/redial_pretrained

Each trainer checkpoint (<run>/checkpoints/checkpoint-N, the LoRA adapter) becomes a model dir with the manifest the
recipe itself writes (`<run>/curve/step-N`), and `dlsearch.app.runner.run_evaluation` scores direct search
(strategy `direct`, the model's own beam scores, no popularity prior) beside popularity and BM25, paired.
Validation turns: a fixed, seeded sample of the prepared validation split, evaluated through a view dir whose
`conversations/test.jsonl` is that sample (the task reads the test file; training counts and catalog are the same
files). Results are appended to <out>/curve.jsonl as each point finishes, with the load and wall time.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import time
from pathlib import Path

import torch

from dlsearch.app.runner import EvaluateConfig, run_evaluation
from dlsearch.data.catalog import load_catalog_jsonl
from dlsearch.data.ids import IdMap
from dlsearch.finetune.config import load_recipe, to_dict
from dlsearch.finetune.manifest import write_manifest
from dlsearch.finetune.model_factory import model_fingerprint

METRICS = ["recall@1", "recall@10", "ndcg@10", "mrr"]  # at depth 10: mrr is MRR@10


def split_view(data: Path, n: int, seed: int, out: Path, split: str = "validation") -> Path:
    """A prepared-dir view whose test file is a fixed, seeded sample of n turns (with targets) of `split`."""
    view = out / f"redial-{split}{n}-seed{seed}"
    conv_dir = view / "conversations"
    if (conv_dir / "test.jsonl").exists():
        return view
    conv_dir.mkdir(parents=True, exist_ok=True)
    lines = [ln for ln in (data / "conversations" / f"{split}.jsonl").read_text().splitlines() if json.loads(ln).get("targets")]
    keep = sorted(random.Random(seed).sample(range(len(lines)), min(n, len(lines))))
    (conv_dir / "test.jsonl").write_text("".join(lines[i] + "\n" for i in keep))
    for src, dst in ((data / "catalog.jsonl", view / "catalog.jsonl"), (data / "conversations" / "train.jsonl", conv_dir / "train.jsonl")):
        if not dst.exists():
            dst.symlink_to(src.resolve())
    return view


def ensure_trie(run: Path, data: Path) -> Path:
    trie = run / "trie"
    if not (trie / "manifest.json").exists() and not any(trie.glob("*")):
        subprocess.run(["dlsearch", "index", "build", "--kind", "trie", "--data", str(data), "--idmap", str(run / "init" / "idmap.json"),
                        "--model", str(run / "init"), "--mode", "whole", "--source", "id", "--out", str(trie)], check=True)
    return trie


def final_step(run: Path) -> int | None:
    """The finished run's step count: the run dir itself is then the final model (adapter + manifest)."""
    path = run / "manifest.json"
    man = json.loads(path.read_text()) if path.exists() else {}
    return int(man["stage"]["steps"]) if man.get("complete") else None


def snapshot(run: Path, step: int, config: Path, overrides: list[str] | None = None) -> Path:
    """checkpoint-N's adapter as a model dir (manifest, tokenizer, idmap, catalog) that load_finetuned accepts; the
    final step (no checkpoint unless it falls on save_steps) is the run dir itself."""
    out = run / "curve" / f"step-{step}"
    if (out / "manifest.json").exists():
        return out
    if not (run / "checkpoints" / f"checkpoint-{step}").exists() and final_step(run) == step:
        return run
    ckpt = run / "checkpoints" / f"checkpoint-{step}"
    init = run / "init"
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(init)
    (out / "adapter").mkdir(parents=True, exist_ok=True)
    for f in ("adapter_model.safetensors", "adapter_config.json"):
        shutil.copy(ckpt / f, out / "adapter" / f)
    tok.save_pretrained(out)
    recipe = to_dict(load_recipe(config, overrides or []))  # the recipe the run was launched with, its --set included
    write_manifest(out, catalog=load_catalog_jsonl(init / "catalog.jsonl"), idmap=IdMap.load(init / "idmap.json"), tokenizer=tok,
                   base_model=str(init.resolve()), extra={"kind": "adapter", "method": "lora", "base_model_fingerprint": model_fingerprint(init),
                                                         "recipe": recipe, "checkpoint": str(ckpt), "complete": True})
    return out


def router_config(model_dir: Path, trie: Path, data: Path, dual: Path, out: Path, *, beams: int, length_penalty: float, dtype: str) -> Path:
    """A recommend config whose router fuses this direct search (the same arguments as the `direct` system, so the
    two share one search per conversation) with the dual encoder; BM25 off: the question is direct + dual."""
    import yaml

    cfg = yaml.safe_load(Path("configs/recommend.yaml").read_text())
    cfg.update(catalog=str((data / "catalog.jsonl").resolve()), model_dir=str(model_dir.resolve()))
    cfg["policy"]["unmeasured"] = "fallback"  # title ids: no title->id memorization measured; fuse with the fallbacks
    cfg["strategies"]["direct"].update(enabled=True, options={"index": str(trie.resolve()), "beams": beams,
                                                              "length_penalty": length_penalty, "dtype": dtype})
    cfg["strategies"]["dual"].update(enabled=True, index=str(dual.resolve()))
    cfg["strategies"]["bm25"]["enabled"] = False
    out.mkdir(parents=True, exist_ok=True)
    path = out / "router.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def evaluate(model_dir: Path, trie: Path, data: Path, out: Path, *, beams: int, length_penalty: float, dtype: str, n_resamples: int,
             dual: Path | None = None) -> dict:
    options = {"model_dir": str(model_dir), "trie": str(trie), "beams": beams, "length_penalty": length_penalty, "dtype": dtype}
    strategies = ["direct"]
    if dual is not None:  # the dual encoder and the router fusing direct + dual, paired with direct on the same turns
        strategies += ["dual", "router"]
        options.update(dual_index=str(dual), recommend_config=str(router_config(model_dir, trie, data, dual, out, beams=beams,
                                                                                length_penalty=length_penalty, dtype=dtype)))
    cfg = EvaluateConfig(task="redial-turns", data=str(data), strategies=strategies, metrics=METRICS, modes=["excluded"],
                         depth=10,  # the ranking depth is the beam width of direct search: 10 beams, not 100
                         strategy_options=options, n_resamples=n_resamples, out=str(out))
    load0, t0 = os.getloadavg()[0], time.perf_counter()
    report, _ = run_evaluation(cfg, print_table=False)
    mode = report["modes"]["excluded"]
    peak_gb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20  # KiB on Linux: the process's peak so far
    return {"wall_seconds": round(time.perf_counter() - t0, 1), "load_start": round(load0, 2), "load_end": round(os.getloadavg()[0], 2),
            "process_peak_rss_gb": round(peak_gb, 2),
            "results_json": str(Path(cfg.out) / "results.json"), "n_queries": mode["n_queries"], "best_baseline": mode["best_baseline"],
            "systems": {name: {k: v for k, v in e.items() if k in ("metrics", "vs_best_baseline", "valid_item_rate")}
                        for name, e in mode["systems"].items()}}


def steps_available(run: Path, every: int = 1) -> list[int]:
    """Checkpoint steps that are multiples of `every`, and the final step once the run has finished."""
    d = run / "checkpoints"
    steps = {int(p.name.split("-")[1]) for p in d.glob("checkpoint-*") if (p / "adapter_model.safetensors").exists()
             and (p / "trainer_state.json").exists()} if d.exists() else set()
    final = final_step(run)
    return sorted({s for s in steps if s % every == 0} | ({final} if final else set()))


def plot(out: Path, length_penalty: float = 0.0, beams: int | None = None) -> Path:
    """<out>/curve.png: direct search recall@10 (95 % interval) per checkpoint at one length penalty (and beam width,
    when given), one series per validation split (a seeded sample and the whole split are different turns), with
    popularity on the same turns; <out>/curve.csv the same points."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = [r for r in map(json.loads, (out / "curve.jsonl").read_text().splitlines()) if r["length_penalty"] == length_penalty
            and (beams is None or r.get("beams") == beams)]
    rows.sort(key=lambda r: (r["split"], r["step"]))
    with open(out / "curve.csv", "w") as f:
        f.write("step,direct_recall@10,low,high,popularity_recall@10,split\n")
        for r in rows:
            d, p = r["systems"]["direct"]["metrics"]["recall@10"], r["systems"]["popularity"]["metrics"]["recall@10"]
            f.write(f"{r['step']},{d['mean']:.4f},{d['low']:.4f},{d['high']:.4f},{p['mean']:.4f},{r['split']}\n")
    fig, ax = plt.subplots(figsize=(6.4, 3.8))
    for n, split in enumerate(dict.fromkeys(r["split"] for r in rows)):
        pts = [r for r in rows if r["split"] == split]
        steps = [r["step"] + 8 * n for r in pts]  # a small offset keeps overlapping intervals readable
        d = [r["systems"]["direct"]["metrics"]["recall@10"] for r in pts]
        line = ax.errorbar(steps, [x["mean"] for x in d], yerr=[[x["mean"] - x["low"] for x in d], [x["high"] - x["mean"] for x in d]],
                           marker="o", capsize=3, label=f"direct, {split}")
        ax.plot(steps, [r["systems"]["popularity"]["metrics"]["recall@10"]["mean"] for r in pts], "--",
                color=line[0].get_color(), alpha=0.6, label=f"popularity, {split}")
    ax.set_xlabel("LoRA step (batch 8)")
    ax.set_ylabel("recall@10")
    ax.set_title(f"SmolLM2 + LoRA, length penalty {length_penalty:g}" + (f", {beams} beams" if beams else ""))
    ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(out / "curve.png", dpi=120)
    return out / "curve.png"


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["curve", "test", "plot"])
    ap.add_argument("--run", type=Path, required=True)
    ap.add_argument("--config", type=Path, default=Path("configs/finetune-redial-pretrained.yaml"), help="the recipe the run used")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="the overrides the run was launched with (recorded in each checkpoint's manifest; repeatable)")
    ap.add_argument("--data", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--n-val", type=int, default=40)
    ap.add_argument("--n-test", type=int, default=0, help="test mode: 0 = every test turn; n = a seeded sample of n")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--beams", type=int, default=None, help="beam width (default 10); plot: only the points at this width")
    ap.add_argument("--length-penalty", type=float, nargs="+", default=[0.0])
    ap.add_argument("--dtype", default="float32", help="bfloat16 only on CPUs with AMX/AVX512-BF16")
    ap.add_argument("--step", type=int, nargs="*", default=None, help="checkpoint steps (default: all, as they appear); "
                    "curve waits for those not written yet")
    ap.add_argument("--dual", type=Path, default=None, help="test: also the dual encoder (a `dlsearch index build --kind dual` dir) and the router fusing direct + dual")
    ap.add_argument("--every", type=int, default=1, help="curve: only checkpoints whose step is a multiple of this (and the final one)")
    ap.add_argument("--n-resamples", type=int, default=1000)
    ap.add_argument("--poll", type=float, default=60.0)
    a = ap.parse_args()
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "2")))
    a.out.mkdir(parents=True, exist_ok=True)
    if a.mode == "plot":
        print(plot(a.out, a.length_penalty[0], a.beams))
        return
    a.beams = a.beams or 10
    trie = ensure_trie(a.run, a.data)
    if a.mode == "test":
        # --n-test 0: every test turn (the headline); n > 0: a fixed seeded sample, reported as such
        data = split_view(a.data, a.n_test, a.seed, a.run / "views", split="test") if a.n_test else a.data
        for step in a.step or steps_available(a.run)[-1:]:
            for lp in a.length_penalty:
                model_dir = snapshot(a.run, step, a.config, a.overrides)
                rep = evaluate(model_dir, trie, data, a.run / "eval" / f"test{a.n_test or 'all'}-step{step}-lp{lp}-b{a.beams}", beams=a.beams,
                               length_penalty=lp, dtype=a.dtype, n_resamples=a.n_resamples, dual=a.dual)
                rec = {"split": f"test sample {a.n_test} turns (seed {a.seed})" if a.n_test else "test (all turns)", "step": step, "beams": a.beams, "length_penalty": lp, "dtype": a.dtype,
                       "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **rep}
                with open(a.out / "test.jsonl", "a") as f:
                    f.write(json.dumps(rec, default=str) + "\n")
                print(json.dumps(rec, default=str), flush=True)
        return
    view = split_view(a.data, a.n_val, a.seed, a.run / "views")
    split = f"validation sample {a.n_val} turns (seed {a.seed})"
    done = set()
    path = a.out / "curve.jsonl"
    if path.exists():
        # a point is done only on the same turns: a 100-turn sample does not stand for the whole split
        done = {(r["step"], r["length_penalty"]) for r in map(json.loads, path.read_text().splitlines())
                if r.get("beams", a.beams) == a.beams and r["split"] == split}
    while True:
        ready = steps_available(a.run, a.every if not a.step else 1)
        # --step: the named checkpoints, each once it is written (a running trainer saves them later)
        pending = [(s, lp) for s in ([s for s in a.step if s in ready] if a.step else ready) for lp in a.length_penalty if (s, lp) not in done]
        for step, lp in pending:
            model_dir = snapshot(a.run, step, a.config, a.overrides)
            rep = evaluate(model_dir, trie, view, a.run / "eval" / f"val{a.n_val}-step{step}-lp{lp}-b{a.beams}", beams=a.beams,
                           length_penalty=lp, dtype=a.dtype, n_resamples=a.n_resamples)
            rec = {"split": split, "step": step, "beams": a.beams,
                   "length_penalty": lp, "dtype": a.dtype, "finished_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), **rep}
            with open(path, "a") as f:
                f.write(json.dumps(rec, default=str) + "\n")
            done.add((step, lp))
            print(json.dumps(rec, default=str), flush=True)
        finished = (a.run / "run_summary.json").exists()
        if a.step:
            missing = [s for s in a.step if all((s, lp) not in done for lp in a.length_penalty)]
            if not missing:
                return
            if finished and not pending:
                raise SystemExit(f"{a.run}: the run has finished without checkpoint(s) {missing}")
        elif finished and not pending:
            return
        time.sleep(a.poll)


if __name__ == "__main__":
    main()
