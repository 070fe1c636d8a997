"""Notebook hygiene (HOUSE_STYLE 3, 11): each source notebook is what its generator writes,
has one papermill `parameters` cell with literal defaults, defines nothing, and stores outputs
only for the cells nbval checks. The notebooks themselves run under nbval (pytest notebooks/)."""

from __future__ import annotations

import ast
import runpy
import sys

import nbformat
import papermill
import pytest

from mt5study.paths import NOTEBOOKS, ROOT

NOTEBOOKS_ALL = sorted(NOTEBOOKS.glob("*.ipynb"))
GENERATORS = ROOT / "scripts" / "make_notebooks"
CHECK = "nbval-check-output"


def test_the_five_notebooks_exist():
    names = [p.name for p in NOTEBOOKS_ALL]
    for prefix in ("01_etl", "02_precision_study", "03_batch_lr_study", "04_qa_finetune", "05_report"):
        assert any(n.startswith(prefix) for n in names), names


@pytest.mark.parametrize("path", NOTEBOOKS_ALL, ids=lambda p: p.name)
def test_notebook_hygiene(path):
    nb = nbformat.read(path, as_version=4)
    code = [c for c in nb.cells if c.cell_type == "code"]
    params = [c for c in code if "parameters" in c.metadata.get("tags", [])]
    assert len(params) == 1
    for node in ast.parse(params[0].source).body:  # literal defaults only: papermill can read them
        assert isinstance(node, ast.Assign), ast.dump(node)
        ast.literal_eval(node.value)
    assert set(papermill.inspect_notebook(str(path))) >= {"out_dir"}
    for c in code:
        tree = ast.parse("\n".join(l for l in c.source.splitlines() if not l.lstrip().startswith(("%", "!"))))
        assert not any(isinstance(n, (ast.FunctionDef, ast.ClassDef, ast.AsyncFunctionDef)) for n in ast.walk(tree)), \
            f"{path.name}: move definitions into mt5study/"
        if CHECK not in c.metadata.get("tags", []):
            assert not c.get("outputs"), f"{path.name}: only {CHECK} cells keep outputs"


@pytest.mark.parametrize("path", NOTEBOOKS_ALL, ids=lambda p: p.name)
def test_notebook_is_what_its_generator_writes(path, tmp_path, monkeypatch):
    """Sources come from scripts/make_notebooks/: regenerate, compare ignoring recorded outputs."""
    import build  # noqa: F401  (scripts/make_notebooks on sys.path below)

    recorded = nbformat.read(path, as_version=4)
    monkeypatch.setattr("build.NOTEBOOKS", tmp_path)
    for script in GENERATORS.glob("*.py"):
        if script.name not in ("build.py", "record_outputs.py"):
            runpy.run_path(str(script), run_name="__main__")
    fresh = nbformat.read(tmp_path / path.name, as_version=4)
    assert [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in fresh.cells] == \
           [(c.cell_type, c.source, c.metadata.get("tags", [])) for c in recorded.cells], \
           f"regenerate {path.name} with scripts/make_notebooks/ (then record_outputs.py)"


sys.path.insert(0, str(GENERATORS))
