"""Launching real tiny runs for the fault suite, and killing them with SIGKILL."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil

STEPS = 12  # checkpoints every 4 steps (tiny.yaml)
WAIT_S = 900  # a launch on 2 shared cores: tens of seconds alone, minutes on a busy machine


def launch_cmd(tiny_params: Path, out: Path, *extra: str) -> list[str]:
    return [sys.executable, "-m", "mt5study.cli", "launch", "--params", str(tiny_params), "--out", str(out),
            f"--set=run.steps={STEPS}", *extra]


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the launcher and every process under it at once (a lost node)."""
    try:
        tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)]
    except psutil.NoSuchProcess:
        tree = []
    for p in tree:
        try:
            p.send_signal(signal.SIGKILL)
        except psutil.NoSuchProcess:
            pass
    proc.wait(timeout=60)
    psutil.wait_procs(tree, timeout=60)


def run_until_fault(cmd, env, fault: str, mark: Path, log: Path) -> str:
    """Start a launch with `fault` armed; kill -9 it once the fault point is reached."""
    env = dict(env, MT5STUDY_FAULT=fault, MT5STUDY_FAULT_MARK=str(mark))
    with open(log, "w") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        t0 = time.monotonic()
        while not mark.exists():
            if proc.poll() is not None:
                raise AssertionError(f"the run ended (exit {proc.returncode}) before reaching {fault}:\n"
                                     + log.read_text(errors="replace")[-3000:])
            if time.monotonic() - t0 > WAIT_S:
                raise AssertionError(f"{fault} not reached in {WAIT_S} s")
            time.sleep(0.2)
    finally:
        kill_tree(proc)
    return log.read_text(errors="replace")


def run_launch(cmd, env, log: Path) -> str:
    with open(log, "w") as f:
        code = subprocess.call(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=WAIT_S)
    text = log.read_text(errors="replace")
    assert code == 0, text[-3000:]
    return text


def committed_samples(folder: Path, total: int = STEPS) -> dict[int, list[int]]:
    """Sample ids of every step that reached the final weights, from the recorder's files.

    The ranks of one attempt share their launcher (parent process); attempts are ordered by time,
    and attempt i's steps count up to where attempt i + 1 restarted, since the steps after the
    checkpoint it resumed from were rolled back. A step's ids are all ranks' micro-batches.
    """
    rows = [json.loads(line) for f in sorted(folder.glob("samples-*.jsonl")) for line in f.read_text().splitlines()]
    attempts: dict[int, dict] = {}
    for r in rows:
        a = attempts.setdefault(r["launcher"], {"time": r["time"], "start": r["start"]})
        a["time"] = min(a["time"], r["time"])
    order = sorted(attempts, key=lambda k: attempts[k]["time"])
    for k, nxt in zip(order, order[1:] + [None]):
        attempts[k]["end"] = attempts[nxt]["start"] if nxt is not None else total
    steps: dict[int, list[int]] = {}
    for r in sorted(rows, key=lambda r: (r["step"], r["micro"], r["rank"])):
        a = attempts[r["launcher"]]
        if a["start"] <= r["step"] < a["end"]:
            steps.setdefault(r["step"], []).extend(r["ids"])
    return steps
