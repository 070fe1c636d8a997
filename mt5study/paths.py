"""Every path the project uses, in one place (showyourwork's paths.py habit)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root (editable install)
PARAMS = ROOT / "params"
NOTEBOOKS = ROOT / "notebooks"
# Outputs can live on a cluster's scratch file system: MT5STUDY_OUTPUTS overrides the default.
OUTPUTS = Path(os.environ.get("MT5STUDY_OUTPUTS", ROOT / "outputs"))


def find(path: str | os.PathLike | None) -> Path | None:
    """A path from params or a notebook parameter: absolute, or relative to the repository root."""
    if path is None:
        return None
    p = Path(path)
    return p if p.is_absolute() else ROOT / p
