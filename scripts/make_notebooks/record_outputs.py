"""Execute source notebooks at their default (smallest) params and keep only the outputs nbval checks.

Source notebooks stay small and readable in a diff: every output is stripped except those of
cells tagged `nbval-check-output`, which become the reference that `pytest --nbval-lax`
compares against. Run after changing a notebook or an intended change of the study's numbers:

    python scripts/make_notebooks/record_outputs.py notebooks/02_precision_study.ipynb ...
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

CHECK = "nbval-check-output"


def record(path: Path) -> None:
    nb = nbformat.read(path, as_version=4)
    NotebookClient(nb, timeout=1800, kernel_name="mt5study", resources={"metadata": {"path": str(path.parent)}}).execute()
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        cell.metadata.pop("execution", None)  # timestamps: noise in a diff
        if CHECK not in cell.metadata.get("tags", []):
            cell.outputs = []
            cell.execution_count = None  # nbval treats a checked cell without a count as unrun
    nbformat.write(nb, path)
    print(f"recorded {path}")


if __name__ == "__main__":
    for arg in sys.argv[1:]:
        record(Path(arg).resolve())
