"""No import cycles in mt5study: the module-level import graph is acyclic, and every module
imports on its own in a fresh interpreter (a cycle shows up there as a partly initialised module)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "mt5study"


def _modules() -> dict[str, Path]:
    mods = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__main__":
            continue  # runs the package, is never imported
        if parts[-1] == "__init__":
            parts.pop()
        mods[".".join(parts)] = path
    return mods


MODULES = _modules()


def _with_parents(name: str) -> list[str]:
    # Importing a.b.c runs a/__init__ and a/b/__init__ first.
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


def _top_level_imports(name: str, path: Path) -> set[str]:
    """Modules of mt5study that NAME imports when it is imported (not inside functions)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    found: set[str] = set()

    def visit(nodes: list[ast.stmt]) -> None:
        for node in nodes:
            if isinstance(node, ast.Import):
                for alias in node.names:
                    found.update(_with_parents(alias.name))
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join(anchor + ([base] if base else []))
                found.update(_with_parents(base))
                found.update(f"{base}.{a.name}" for a in node.names if f"{base}.{a.name}" in MODULES)
            elif isinstance(node, ast.If):
                test = ast.unparse(node.test)
                if "TYPE_CHECKING" not in test:
                    visit(node.body)
                visit(node.orelse)
            elif isinstance(node, ast.Try):
                visit(node.body)
                for handler in node.handlers:
                    visit(handler.body)
                visit(node.orelse)
                visit(node.finalbody)
            elif isinstance(node, (ast.With,)):
                visit(node.body)

    visit(tree.body)
    # A package's own ancestors are being imported already when it is: a submodule that imports
    # a sibling through them (mt5study.slurm.submit -> mt5study.slurm.client) is no cycle.
    ancestors = set(_with_parents(name))
    return {m for m in found if m in MODULES and m not in ancestors}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def strong(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_the_graph_sees_imports():
    # The checker itself: it must find the edges that matter, or an empty graph would pass.
    assert "mt5study.sections" in _top_level_imports("mt5study.config", MODULES["mt5study.config"])
    assert "mt5study.slurm.render" in _top_level_imports("mt5study.studies.cluster", MODULES["mt5study.studies.cluster"])
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]


def test_module_level_import_graph_has_no_cycles():
    graph = {name: _top_level_imports(name, path) for name, path in MODULES.items()}
    assert _cycles(graph) == []


@pytest.mark.slow  # ~40 interpreters, most of them import torch: about a minute on 2 free cores
def test_each_module_imports_alone_in_a_fresh_interpreter():
    # One interpreter per module: a module that only imports after another one was imported
    # first (the symptom of a cycle) fails here. Two at a time: each may import torch (~0.4 GB).
    from concurrent.futures import ThreadPoolExecutor

    def alone(name: str) -> tuple[str, subprocess.CompletedProcess]:
        return name, subprocess.run([sys.executable, "-c", f"import {name}"], capture_output=True, text=True,
                                    timeout=600)

    with ThreadPoolExecutor(max_workers=2) as pool:
        results = list(pool.map(alone, MODULES))
    failed = {name: proc.stderr.strip().splitlines()[-1:] for name, proc in results if proc.returncode != 0}
    assert len(results) == len(MODULES) > 30 and not failed, failed
