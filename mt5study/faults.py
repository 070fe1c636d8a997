"""`mt5study faults`: run the fault suite (tests/faults) and print its figures.

The suite injects faults into the real command line and library (kill -9 of a training run at
chosen points, torn checkpoints, a full or read-only output folder, corrupt data, bad arguments
of the public functions) and records each in a ledger (tests/faults/conftest.py). The figures:
faults injected and survived, bad inputs tried and rejected with a clear message, and data lost
(samples skipped or seen twice, rows lost or duplicated), which must be 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

from mt5study.paths import ROOT

SUITE = ROOT / "tests" / "faults"


def figures(ledger: str | Path) -> dict[str, Any]:
    """Totals of a ledger file (JSON lines written by the suite)."""
    rows = [json.loads(line) for line in Path(ledger).read_text(encoding="utf-8").splitlines() if line.strip()]
    faults = [r for r in rows if r["kind"] == "fault"]
    bad = [r for r in rows if r["kind"] == "bad_input"]
    lost = [r for r in rows if r["kind"] == "lost"]
    return {
        "faults_injected": len(faults), "faults_survived": sum(r["ok"] for r in faults),
        "bad_inputs_tried": len(bad), "bad_inputs_rejected_clearly": sum(r["ok"] for r in bad),
        "data_lost": sum(r["count"] for r in lost), "loss_checks": len(lost),
        "faults_by_area": _by_area(faults),
        "not_survived": sorted({r["name"] for r in faults if not r["ok"]}),
        "not_rejected": sorted({r["name"] for r in bad if not r["ok"]}),
    }


def _by_area(faults: list[dict[str, Any]]) -> dict[str, list[int]]:
    """[injected, survived] per test file of the suite ("test_slurm_faults.py::..." -> "slurm faults")."""
    areas: dict[str, list[int]] = {}
    for r in faults:
        stem = r["test"].split("::")[0].rsplit("/", 1)[-1].removesuffix(".py").removeprefix("test_")
        counts = areas.setdefault(stem.replace("_", " "), [0, 0])
        counts[0] += 1
        counts[1] += bool(r["ok"])
    return dict(sorted(areas.items()))


def format_figures(f: dict[str, Any]) -> str:
    """The figures as the lines the suite prints."""
    lines = [
        "fault suite figures:",
        f"  faults injected            {f['faults_injected']}",
        f"  faults survived            {f['faults_survived']}",
    ]
    lines += [f"    {area:<24} {n} injected, {ok} survived" for area, (n, ok) in f.get("faults_by_area", {}).items()]
    lines += [
        f"  bad inputs tried           {f['bad_inputs_tried']}",
        f"  rejected, clear message    {f['bad_inputs_rejected_clearly']}",
        f"  data lost                  {f['data_lost']}  (over {f['loss_checks']} checks of samples and rows)",
    ]
    lines += [f"  NOT survived: {n}" for n in f["not_survived"]]
    lines += [f"  NOT rejected clearly: {n}" for n in f["not_rejected"]]
    return "\n".join(lines)


def main(pytest_args: list[str] | None = None, json_out: str | None = None) -> int:
    """Run the suite under pytest, print the figures; exit non-zero if a test failed or data was lost."""
    if not SUITE.is_dir():
        print(f"mt5study faults: the suite {SUITE} is not here (it ships with the source tree)", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory(prefix="mt5study-faults-") as tmp:
        ledger = Path(tmp) / "ledger.jsonl"
        env = dict(os.environ, MT5STUDY_FAULTS_LEDGER=str(ledger))
        code = subprocess.call([sys.executable, "-m", "pytest", str(SUITE), "-q", "-p", "no:cacheprovider",
                                *(pytest_args or [])], cwd=ROOT, env=env)
        f = figures(ledger) if ledger.exists() else figures_empty()
    print(format_figures(f))
    if json_out:
        Path(json_out).write_text(json.dumps(f, indent=2) + "\n", encoding="utf-8")
    return code or (1 if f["data_lost"] else 0)


def figures_empty() -> dict[str, Any]:
    return {"faults_injected": 0, "faults_survived": 0, "bad_inputs_tried": 0, "bad_inputs_rejected_clearly": 0,
            "data_lost": 0, "loss_checks": 0, "faults_by_area": {}, "not_survived": [], "not_rejected": []}
