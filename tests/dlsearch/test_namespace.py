"""The packages install under dlsearch.*: a user's own `data` (module or folder) never collides with ours."""

import ast
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
OLD_TOP_LEVEL = {"data", "finetune", "decoding", "retrieval", "evaluation"}


def test_user_data_module_and_folder_do_not_shadow_ours(tmp_path: Path) -> None:
    (tmp_path / "data.py").write_text("WHO = 'user module'\n")
    (tmp_path / "evaluation").mkdir()
    (tmp_path / "evaluation" / "__init__.py").write_text("WHO = 'user package'\n")
    (tmp_path / "data").mkdir()  # a folder of the user's data files beside their data.py
    (tmp_path / "data" / "train.csv").write_text("a,b\n1,2\n")
    code = (
        "import data, evaluation\n"
        "from dlsearch import load_redial, build_idmap, recall_at_k\n"
        "import dlsearch.data.ids as ids\n"
        "ids._load_optional_schemes()\n"  # imports semantic/collaborative id builders lazily
        "print(data.WHO, '|', evaluation.WHO, '|', load_redial.__module__, '|', recall_at_k.__module__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "user module | user package | dlsearch.data.redial | dlsearch.retrieval.ranking"
    cli = subprocess.run([sys.executable, "-m", "dlsearch", "data", "validate", "--help"], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert cli.returncode == 0, cli.stderr


def test_no_file_imports_the_old_top_level_names() -> None:
    offenders = []
    tracked = subprocess.run(["git", "ls-files", "*.py"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    for path in (ROOT / p for p in tracked):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = [a.name for a in node.names] if isinstance(node, ast.Import) else (
                [node.module] if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module else [])
            offenders += [f"{path.relative_to(ROOT)}:{node.lineno} {n}" for n in names if n.split(".")[0] in OLD_TOP_LEVEL]
    assert offenders == []
