"""Shared builder for the study notebooks: cells from short source strings, written with nbformat.

Each notebook script in this folder calls `write(name, cells)`. Conventions (HOUSE_STYLE 3, 11):
imports -> one cell tagged `parameters` (small CPU defaults, papermill injects the rest) ->
one library call per step -> tables and figures. Cells whose output is stable at the default
params are tagged `nbval-check-output` (nbval --nbval-lax checks only those).
"""

from __future__ import annotations

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"


def md(text: str) -> nbformat.NotebookNode:
    return new_markdown_cell(text.strip())


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = new_code_cell(text.strip())
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def write(name: str, cells: list) -> Path:
    nb = new_notebook(cells=cells)
    nb.metadata["kernelspec"] = {"name": "mt5study", "display_name": "mt5study", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    path = NOTEBOOKS / name
    path.parent.mkdir(parents=True, exist_ok=True)
    for i, cell in enumerate(nb.cells):  # stable ids keep a regenerated notebook's diff empty
        cell["id"] = f"{name.split('_')[0]}-{i:02d}"
    if path.exists():  # keep the recorded nbval references of cells whose source did not change
        old = {(c.source, tuple(c.metadata.get("tags", []))): c for c in nbformat.read(path, as_version=4).cells
               if c.cell_type == "code" and "nbval-check-output" in c.metadata.get("tags", [])}
        for cell in nb.cells:
            prev = old.get((cell.source, tuple(cell.metadata.get("tags", []))))
            if cell.cell_type == "code" and prev is not None:
                cell.outputs, cell.execution_count = prev.outputs, prev.execution_count
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
