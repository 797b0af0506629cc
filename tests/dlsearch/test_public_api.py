import subprocess
import sys

import dlsearch


def test_every_public_name_resolves():
    for name in dlsearch.__all__:
        assert getattr(dlsearch, name) is not None, name


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
