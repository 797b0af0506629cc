import os
import subprocess
import sys

import dlsearch


def test_every_public_name_resolves():
    for name in dlsearch.__all__:
        assert getattr(dlsearch, name) is not None, name


def test_every_public_name_resolves_outside_the_repository(tmp_path):
    """Inside the repository pytest puts its root on sys.path, so a module named without the `dlsearch.` prefix
    (`retrieval.bm25`) resolves there and nowhere else: `from dlsearch import BM25Index` failed for every user.
    A fresh interpreter in an empty folder (its cwd is what `-c` puts on sys.path), with no PYTHONPATH, sees only
    what is installed."""
    code = "import dlsearch\nfor n in dlsearch.__all__: getattr(dlsearch, n)\nimport sys\n" \
           "print(sorted(m for m in sys.modules if m.split('.')[0] in ('data', 'finetune', 'decoding', 'retrieval', 'evaluation')))"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "[]"  # nothing was imported under a bare top-level name


def test_unknown_name_is_attribute_error():
    try:
        dlsearch.no_such_name  # noqa: B018
    except AttributeError as e:
        assert "no_such_name" in str(e)
    else:
        raise AssertionError("expected AttributeError")


def test_cli_help_lists_every_verb():
    out = subprocess.run([sys.executable, "-m", "dlsearch", "--help"], capture_output=True, text=True, check=True).stdout
    for verb in ("data", "model", "finetune", "index", "generate", "recommend", "serve-search", "evaluate", "sweep"):
        assert verb in out, verb
