"""What the report and the site show of the scaling study, read back from its folder."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from mt5study import records

TABLES = ("sizes", "optima", "laws", "holdout", "steptime", "recommendation", "days")


def report_tables(root: str | Path) -> dict[str, pd.DataFrame]:
    """{name: DataFrame} of the tables the study wrote under root/tables (absent ones left out):
    sizes (ladder and budgets), optima (eta*, B* per size with intervals and edge flags), laws
    (exponents with intervals), holdout (the held-out proof: gap %), steptime (measured vs
    predicted step time per world size and ZeRO stage), recommendation (per mt5-* preset), days."""
    root = Path(root)
    out = {}
    for name in TABLES:
        path = root / "tables" / f"{name}.parquet"
        if path.exists():
            out[name] = pd.read_parquet(path)
    return out


def headline(root: str | Path) -> dict:
    """The study's headline numbers (scaling.json): gap %, exponents, step-time errors."""
    path = Path(root) / "scaling.json"
    return records.read_json(path) if path.exists() else {}
