"""`dlsearch quickstart` from a temporary directory on a NON-editable install (pip install --target of the repo):
configs, recipes and model presets come from the installed package, not from the repository or the working
directory. Tiny settings: sequential ids, a few training steps, 5 evaluated turns."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CACHE = Path(os.environ["DLSEARCH_CACHE_DIR"]) if os.environ.get("DLSEARCH_CACHE_DIR") else REPO / ".cache"


def test_quickstart_runs_from_any_directory_after_a_non_editable_install(tmp_path):
    import setuptools

    site = tmp_path / "site"
    # pyproject needs setuptools >= 77; an older one in this environment builds in pip's isolated environment
    isolation = [] if int(setuptools.__version__.split(".")[0]) < 77 else ["--no-build-isolation"]
    p = subprocess.run([sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", *isolation, "--target", str(site), str(REPO)],
                       capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert p.returncode == 0, p.stderr[-3000:]
    env = {**os.environ, "PYTHONPATH": str(site), "HF_HUB_OFFLINE": "1", "TRANSFORMERS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "OMP_NUM_THREADS": "1"}
    work = tmp_path / "elsewhere"
    work.mkdir()
    where = subprocess.run([sys.executable, "-c", "import dlsearch, dlsearch.configs; print(dlsearch.__file__); print(dlsearch.configs.__file__)"],
                           capture_output=True, text=True, cwd=work, env=env, timeout=60)
    files = where.stdout.split()
    assert where.returncode == 0 and len(files) == 2, where.stderr
    assert all(not Path(f).resolve().is_relative_to(REPO) and Path(f).resolve().is_relative_to(site.resolve()) for f in files)
    # the embedding cache is shared with the other tests (a fresh one would re-embed 2,007 movies)
    (work / "qs").mkdir()
    (CACHE / "embeddings").mkdir(parents=True, exist_ok=True)
    (work / "qs" / "embeddings").symlink_to(CACHE / "embeddings")
    overrides = ["stages.index.train.max_steps=3", "stages.conversation.train.max_steps=2", "eval.memorization=false"]
    cmd = [sys.executable, "-m", "dlsearch", "quickstart", "--out", "qs", "--base", "scratch", "--eval-turns", "5", "--set", "id_scheme=sequential", "--set", "dialogues=40",
           "--set", "dual_epochs=1", "--set", "show=1", "--set", "n_resamples=20", "--set", f"recipe_overrides={json.dumps(overrides)}"]
    q = subprocess.run(cmd, capture_output=True, text=True, cwd=work, env=env, timeout=600)
    assert q.returncode == 0, q.stderr[-4000:]
    result = json.loads((work / "qs" / "quickstart.json").read_text())
    assert result["finetune"]["stages"] == ["index", "conversation"]
    report = json.loads((work / "qs" / "eval" / "results.json").read_text())
    assert report["task"] == "redial-turns" and report["modes"]["excluded"]["n_queries"] <= 5
