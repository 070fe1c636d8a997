"""Every path the project uses, in one place (showyourwork's paths.py habit)."""

from __future__ import annotations

import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent  # the repository root (editable install)
PARAMS = ROOT / "params"
NOTEBOOKS = ROOT / "notebooks"
# Outputs can live on a cluster's scratch file system: MT5STUDY_OUTPUTS overrides the default.
OUTPUTS = Path(os.environ.get("MT5STUDY_OUTPUTS", ROOT / "outputs"))
