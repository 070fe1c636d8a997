"""One-process trials forked from the warm server (mt5study.trial_process): same run, same
numbers, same exit codes and signals as a fresh `python -m mt5study.cli train` process."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

from mt5study import launch, records, trial_process

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "params" / "cpu" / "tiny.yaml"
ONE = {"run.one_process": True, "run.steps": 4, "run.eval_every": 4, "run.checkpoint_every": 0}


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in records.read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_forked_trials_from_an_unguarded_script_equal_a_fresh_process(tmp_path, monkeypatch):
    """A script without a __main__ guard (as a notebook cell) runs two trials through the server;
    their curves equal the same run in a fresh process, bit for bit."""
    script = tmp_path / "study.py"
    script.write_text(textwrap.dedent(f"""
        from mt5study import launch, trial_process
        for i in range(2):
            s = launch.run({str(TINY)!r}, {str(tmp_path)!r} + f"/forked{{i}}", overrides={ONE!r})
            print("status", i, s["status"], flush=True)
        print("server", bool(trial_process._server), flush=True)
    """))
    env = {k: v for k, v in os.environ.items() if k != "MT5STUDY_FORKSERVER"}
    done = subprocess.run([sys.executable, str(script)], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "status 0 completed" in done.stdout and "status 1 completed" in done.stdout, done.stdout
    assert "server True" in done.stdout  # the trials did go through the forkserver
    monkeypatch.setenv("MT5STUDY_FORKSERVER", "0")
    fresh = launch.run(TINY, tmp_path / "fresh", overrides=ONE)
    assert fresh["status"] == "completed"
    assert _losses(tmp_path / "forked0") == _losses(tmp_path / "forked1") == _losses(tmp_path / "fresh")
    assert len(_losses(tmp_path / "fresh")) == 4


def test_bad_params_in_a_forked_trial_exit_with_the_cli_code_and_one_line(tmp_path):
    log = tmp_path / "launch.log"
    code = trial_process.call(["train", "--params", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")], log)
    assert code == launch.EXIT_CONFIG
    text = log.read_text()
    assert "missing.yaml" in text and "Traceback" not in text, text


def test_sigusr1_to_the_study_reaches_the_forked_trial_which_checkpoints(tmp_path):
    out = tmp_path / "run"
    overrides = {**ONE, "run.steps": 400, "run.checkpoint_every": 0, "run.eval_every": 0}

    def signal_after_first_step():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if (out / "metrics.jsonl").exists() and records.read_metrics(out / "metrics.jsonl"):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.2)

    threading.Thread(target=signal_after_first_step, daemon=True).start()
    summary = launch.run(TINY, out, overrides=overrides, check=False)
    assert summary["status"] == "preempted", summary
    assert summary["steps"] < 400
    assert any(p.name.startswith("step_") for p in (out / "checkpoints").iterdir())
    # a trial that needs another environment restarts the server with it
    env = trial_process._trial_env()
    trial_process._context({**env, "OMP_NUM_THREADS": "7"})
    assert trial_process._server["env"]["OMP_NUM_THREADS"] == "7"
    code = trial_process.call(["train", "--params", str(tmp_path / "missing.yaml"), "--out", str(tmp_path / "o")],
                              tmp_path / "after_restart.log")
    assert code == launch.EXIT_CONFIG  # forked again, from the server restarted with this environment
    assert trial_process._server["env"] == {k: v for k, v in env.items() if k != "PYTEST_CURRENT_TEST"}
