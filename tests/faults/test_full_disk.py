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


def _fill(folder, leave: int) -> None:
    """Fill the file system of `folder` up to `leave` bytes free."""
    free = os.statvfs(folder).f_bavail * os.statvfs(folder).f_frsize
    with open(folder / "filler", "wb") as f:
        f.write(b"\0" * max(0, free - leave))


def _snapshot(folder) -> dict:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_etl_into_a_full_disk_keeps_the_earlier_output(full_dir, ledger):
    """`mt5study etl --overwrite` over a completed output on a full disk: one clear line, a
    non-zero exit, no new manifest.json, the earlier output untouched and no temporary left."""
    out = full_dir / "etl"
    (out / "dataset").mkdir(parents=True)
    records.write_json_atomic(out / "manifest.json", {"languages": ["xx"], "note": "the earlier output"})
    (out / "dataset" / "data.arrow").write_bytes(os.urandom(1 << 20))
    _fill(full_dir, 64 << 10)  # 64 KiB free: enough to start, not for a tokenizer and a dataset
    before = _snapshot(full_dir)
    with ledger.fault("disk full while the ETL writes its output"):
        r = subprocess.run([sys.executable, "-m", "mt5study.cli", "etl", "--params", str(PARAMS / "cpu" / "etl_smoke.yaml"),
                            "--out", str(out), "--overwrite"], capture_output=True, text=True, timeout=WAIT_S)
        assert r.returncode != 0
        last = r.stderr.strip().splitlines()[-1]
        assert last.startswith("mt5study etl:") and "No space left on device" in last, r.stderr[-3000:]
        assert "Traceback" not in r.stderr, r.stderr[-3000:]
        assert _snapshot(full_dir) == before  # the earlier manifest and data whole; no temporary left
        ledger.lost("files of the earlier ETL output", sum(before[k] != _snapshot(full_dir).get(k) for k in before))


def _trial(root, name: str, status: str) -> None:
    folder = root / "trials" / name
    records.write_json_atomic(folder / "summary.json", {"status": status, "steps": 4, "final_eval_loss": 1.5})
    (folder / "metrics.jsonl").write_text("".join(json.dumps({"step": s, "loss": 2.0 - s / 10}) + "\n" for s in (1, 2, 3, 4)))


def test_results_table_on_a_full_disk_keeps_the_previous_table(full_dir, ledger):
    from mt5study.studies import runner

    root = full_dir / "grid"
    for i in range(3):
        _trial(root, f"lr={i}", "completed")
    first = runner.results_table(root, [])
    assert len(first) == 3
    before = {name: (root / name).read_bytes() for name in ("results.parquet", "curves.parquet")}
    _trial(root, "lr=3", "diverged")
    _fill(full_dir, 0)
    with ledger.fault("disk full while a study's results tables are rewritten"):
        with pytest.raises(OSError) as e:
            runner.results_table(root, [])
        assert "No space left" in str(e.value) and "parquet" in str(e.value) and "previous tables are kept" in str(e.value)
        assert {name: (root / name).read_bytes() for name in before} == before  # both whole, the pair consistent
        assert sorted(p.name for p in root.iterdir()) == ["curves.parquet", "results.parquet", "trials"]  # no temporary
        import pandas as pd

        ledger.lost("results rows after a failed rewrite", 3 - len(pd.read_parquet(root / "results.parquet")))
    (full_dir / "filler").unlink()
    assert len(runner.results_table(root, [])) == 4  # room again: the table is rebuilt whole
