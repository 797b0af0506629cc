"""The import graph has no cycles: none between packages, none between modules inside a package, and libraries never
import the application layer (dlsearch.app, dlsearch.commands). Walks every module with ast, counting imports inside
functions too (a lazy import is still a dependency)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
# on-disk folder -> installed package name (pyproject's package-dir mapping)
PACKAGES = {"data": "data", "finetune": "finetune", "decoding": "decoding", "retrieval": "retrieval",
            "evaluation": "evaluation", "dlsearch/app": "app", "dlsearch/commands": "commands"}
LIBRARIES = {"data", "finetune", "decoding", "retrieval", "evaluation"}
# What each library may import (its own package excluded); the application layer may import every library.
ALLOWED = {
    "data": set(),
    "finetune": {"data"},
    "decoding": {"data"},
    "retrieval": {"data", "decoding"},
    "evaluation": {"data", "decoding", "retrieval"},
}


def _modules() -> dict[str, Path]:
    mods = {}
    for folder, pkg in PACKAGES.items():
        for path in sorted((ROOT / folder).rglob("*.py")):
            rel = path.relative_to(ROOT / folder).with_suffix("")
            parts = [p for p in rel.parts if p != "__init__"]
            mods[".".join([pkg, *parts])] = path
    return mods


def _resolve(name: str) -> str | None:
    """'dlsearch.data.catalog' -> 'data.catalog'; 'dlsearch.app.x' -> 'app.x'; anything outside ours -> None."""
    parts = name.split(".")
    if parts[0] != "dlsearch" or len(parts) < 2:
        return None
    return ".".join(parts[1:])


def _runtime_nodes(tree: ast.AST):
    """Every node except the bodies of `if TYPE_CHECKING:` (type-hint-only imports never run)."""
    todo = [tree]
    while todo:
        node = todo.pop()
        yield node
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and getattr(child.test, "id", getattr(child.test, "attr", None)) == "TYPE_CHECKING":
                todo.extend(child.orelse)
                continue
            todo.append(child)


def _imports(path: Path, module: str) -> set[str]:
    out = set()
    is_pkg = path.name == "__init__.py"
    for node in _runtime_nodes(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            out |= {r for a in node.names if (r := _resolve(a.name))}
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_pkg else 0)]
                target = ".".join(base + ([node.module] if node.module else []))
                names = [target] + [f"{target}.{a.name}" for a in node.names]
            else:
                if not node.module or not (r := _resolve(node.module)):
                    continue
                names = [r] + [f"{r}.{a.name}" for a in node.names]
            out |= set(names)
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    graph = {}
    for mod, path in mods.items():
        # keep only edges to modules that exist ("from x import name" names a module only when x.name is one)
        graph[mod] = {t for t in _imports(path, mod) if t in mods and t != mod}
    return graph


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan), each sorted."""
    index, low, stack, on, out, counter = {}, {}, [], set(), [], [0]

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def _package(mod: str) -> str:
    return mod.split(".")[0]


def test_graph_walker_finds_a_known_edge_and_a_planted_cycle() -> None:
    graph = _graph()
    assert "data.catalog" in graph["retrieval.router"]  # the walker sees real imports
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    hinted = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from dlsearch.data.ids import IdMap\n"
                       "def f():\n    from dlsearch.data.catalog import Catalog\n")
    found = {getattr(n, "module", None) for n in _runtime_nodes(hinted) if isinstance(n, ast.ImportFrom)}
    assert found == {"typing", "dlsearch.data.catalog"}  # lazy imports count, type-hint-only ones do not


def test_no_import_cycle_between_packages() -> None:
    graph = _graph()
    pkg_graph: dict[str, set[str]] = {}
    for mod, targets in graph.items():
        pkg_graph.setdefault(_package(mod), set()).update(_package(t) for t in targets if _package(t) != _package(mod))
    assert _cycles(pkg_graph) == []


@pytest.mark.parametrize("package", sorted(set(PACKAGES.values())))
def test_no_import_cycle_inside_a_package(package: str) -> None:
    graph = _graph()
    inner = {m: {t for t in ts if _package(t) == package} for m, ts in graph.items() if _package(m) == package}
    # a package's __init__ re-exports its modules; that edge is not a cycle of the modules themselves
    inner = {m: {t for t in ts if t != package} for m, ts in inner.items()}
    assert _cycles(inner) == []


def test_libraries_import_only_their_allowed_layers() -> None:
    bad = []
    for mod, targets in _graph().items():
        pkg = _package(mod)
        if pkg in LIBRARIES:
            bad += [f"{mod} -> {t}" for t in sorted(targets) if _package(t) not in ALLOWED[pkg] | {pkg}]
    assert bad == []
