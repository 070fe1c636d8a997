"""Several processes running trials of one study on a shared Optuna journal, one of them killed
with SIGKILL mid-trial: no grid point is trained twice to completion, none is lost, and a
restarted worker (fail_stale_running) finishes the killed point; the results table has one
completed row per point.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

from mt5study.studies import search

from .search_worker import SPACE

WORKER = Path(__file__).with_name("search_worker.py")


def _lines(log: Path) -> list[dict]:
    return [json.loads(x) for x in log.read_text().splitlines()] if log.exists() else []


def _key(row) -> tuple:
    return (row["global_batch"], row["lr"])


def test_killed_worker_loses_no_trial_and_none_is_trained_twice(tmp_path, ledger):
    storage, log = tmp_path / "study.journal", tmp_path / "trials.log"
    search.make_study("faults", storage, SPACE, sampler="grid", pruner="none")  # the creator fills the queue
    cmd = [sys.executable, str(WORKER), str(storage), str(log)]
    workers = [subprocess.Popen([*cmd, "0"], cwd=WORKER.parents[2]) for _ in range(3)]
    with ledger.fault("one of three study workers killed -9 mid-trial"):
        victim, t0 = None, time.monotonic()
        while victim is None and time.monotonic() - t0 < 300:  # the first worker seen inside a trial
            for row in _lines(log):
                if row["event"] == "start":
                    victim = next((w for w in workers if w.pid == row["pid"]), None)
                    break
            time.sleep(0.05)
        assert victim is not None, "no worker started a trial"
        victim.send_signal(signal.SIGKILL)
        for w in workers:
            w.wait(timeout=600)
        # Restart after the others are done (Slurm requeue of the killed task): stale RUNNING -> FAIL, redo.
        subprocess.run([*cmd, "1"], cwd=WORKER.parents[2], check=True, timeout=600)

        rows = _lines(log)
        ended = Counter(_key(r) for r in rows if r["event"] == "end")
        started = Counter(_key(r) for r in rows if r["event"] == "start")
        points = {(b, lr) for b in SPACE["global_batch"] for lr in SPACE["lr"]}
        lost = len(points - set(ended))
        twice = sum(n - 1 for n in ended.values() if n > 1)
        ledger.lost("grid points lost or trained twice to completion", lost + twice)
        assert set(ended) == points and twice == 0
        killed = [k for k in started if started[k] > ended.get(k, 0)]
        assert len(killed) <= 1  # only the victim's point was cut short (and then redone)

        table = search.results(search.make_study("faults", storage, SPACE, sampler="grid", pruner="none"))
        done = table[(table["state"] == "COMPLETE") & table["duplicate_of"].isna()] if "duplicate_of" in table else \
            table[table["state"] == "COMPLETE"]
        keys = Counter(zip(done["global_batch"], done["lr"]))
        ledger.lost("results rows lost or duplicated", len(points - set(keys)) + sum(n - 1 for n in keys.values()))
        assert set(keys) == points and all(n == 1 for n in keys.values())
