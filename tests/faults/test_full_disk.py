"""A full output disk (a 2 MiB tmpfs, mounted as root): the run fails with a message that says
so, is never marked completed, and what was written before (the first checkpoint, the run's
records) stays whole. The same for the atomic writers every results table and record goes through.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from mt5study import checkpoints, records
from mt5study.paths import PARAMS

from .runs import WAIT_S


def test_training_run_on_a_full_disk(full_dir, ledger):
    out = full_dir / "run"
    with ledger.fault("disk full while a training run checkpoints"):
        r = subprocess.run([sys.executable, "-m", "mt5study.cli", "launch", "--params", str(PARAMS / "cpu" / "tiny.yaml"),
                            "--out", str(out)], capture_output=True, text=True, timeout=WAIT_S)
        assert r.returncode != 0
        assert "No space left on device" in r.stdout + r.stderr
        summary = out / "summary.json"
        assert not summary.exists() or records.read_json(summary)["status"] != "completed"
        if summary.exists():  # the failure was recorded, naming the cause
            assert "No space left" in records.read_json(summary)["error"]
        first = out / checkpoints.CHECKPOINTS / "step_0000004"
        assert checkpoints.check_complete(first) is None  # written before the disk filled: still whole
        assert checkpoints.latest(out) == first
        for name in ("config.json", "env.json", "inputs.json"):
            json.loads((out / name).read_text())  # whole, not cut short


def test_atomic_writes_on_a_full_disk_keep_the_old_file(full_dir, ledger):
    path = full_dir / "results.json"
    records.write_json_atomic(path, {"rows": [1, 2, 3]})
    with ledger.fault("disk full while a results file is rewritten"):
        with pytest.raises(OSError) as e:
            records.write_text_atomic(path, "x" * (3 << 20))  # 3 MiB into 2 MiB
        assert "No space left" in str(e.value)
        assert records.read_json(path) == {"rows": [1, 2, 3]}  # the old file, whole
        assert sorted(p.name for p in full_dir.iterdir()) == ["results.json"]  # no temp file left behind
        ledger.lost("results rows after a failed rewrite", 3 - len(records.read_json(path)["rows"]))


def test_atomic_write_into_a_read_only_folder(readonly_dir, ledger):
    ledger.bad_input("write_json_atomic into a read-only folder",
                     lambda: records.write_json_atomic(readonly_dir / "x.json", {}), "read-only", "permission",
                     error=OSError)
    assert not os.listdir(readonly_dir)
