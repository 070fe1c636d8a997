"""Shared fixtures: the repository's params and a launcher for real training runs."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from mt5study.paths import PARAMS, ROOT

os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
TINY = PARAMS / "cpu" / "tiny.yaml"


@pytest.fixture(scope="session")
def root() -> Path:
    return ROOT


@pytest.fixture(scope="session")
def tiny_params() -> Path:
    return TINY


@pytest.fixture(scope="session")
def runs_dir(tmp_path_factory) -> Path:
    """One folder for the session's training runs (several tests read the same runs)."""
    return tmp_path_factory.mktemp("runs")
