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
    nbformat.validate(nb)
    nbformat.write(nb, path)
    return path
