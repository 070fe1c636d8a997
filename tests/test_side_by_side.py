"""Trials side by side (`study.concurrency`): the same numbers as one at a time, really at the
same time, each on the threads its params give; bad settings named before anything trains; a
SIGUSR1 to the study reaches every trial running."""

from __future__ import annotations

import os
import signal
import threading
import time
from pathlib import Path

import pytest

from mt5study import config, records
from mt5study.config import ConfigError
from mt5study.studies import runner
from mt5study.studies.config import StudyParams

ROOT = Path(__file__).resolve().parents[1]
TINY = ROOT / "params" / "cpu" / "tiny.yaml"
TOKENS_PER_STEP = 16 * (32 + 8)  # tiny: global batch 16, 32 + 8 tokens


def _study(concurrency: int, steps: int = 6, **fixed) -> StudyParams:
    doc = {"study": {"name": "side", "base": str(TINY), "axes": {"optim.lr": [1.0e-3, 3.0e-3]},
                     "budget_tokens": TOKENS_PER_STEP * steps, "concurrency": concurrency,
                     "fixed": {"run.one_process": True, "run.threads": 1, "run.eval_every": 0,
                               "run.checkpoint_every": 0, "run.log_every": 1, **fixed}}}
    return config.validate(doc, "test", StudyParams)


def _losses(out: Path) -> list[float]:
    return [r["loss"] for r in records.read_metrics(out / "metrics.jsonl") if "loss" in r]


def test_two_at_a_time_give_the_numbers_of_one_at_a_time(tmp_path):
    alone = runner.run_grid(_study(1), "test", tmp_path / "alone")
    paired = runner.run_grid(_study(2), "test", tmp_path / "paired")
    assert list(alone["status"]) == list(paired["status"]) == ["completed", "completed"]
    assert list(alone["final_eval_loss"]) == list(paired["final_eval_loss"])
    trials = sorted((tmp_path / "paired" / "grid" / "trials").iterdir())
    assert len(trials) == 2
    for t in trials:
        assert _losses(t) == _losses(tmp_path / "alone" / "grid" / "trials" / t.name) and len(_losses(t)) == 6
        assert records.read_json(t / "summary.json")["threads"] == 1  # run.threads reached the kernels
    # side by side for real: each started before the other had finished
    starts = [(t / "config.json").stat().st_mtime for t in trials]
    ends = [(t / "summary.json").stat().st_mtime for t in trials]
    assert max(starts) < min(ends), (starts, ends)


def test_side_by_side_refuses_launched_trials_and_unset_threads(tmp_path):
    with pytest.raises(ConfigError, match=r"study.concurrency=2: trial lr=0.001 runs 2 processes"):
        runner.run_grid(_study(2, **{"run.one_process": False}), "test.yaml", tmp_path / "a")
    doc = config.to_dict(_study(2))
    del doc["study"]["fixed"]["run.threads"]
    with pytest.raises(ConfigError, match=r"test.yaml: study.concurrency=2: trial lr=0.001 has no run.threads"):
        runner.run_grid(config.validate(doc, "test", StudyParams), "test.yaml", tmp_path / "b")
    assert not (tmp_path / "a").exists() and not (tmp_path / "b").exists()  # refused before any folder
    with pytest.raises(ConfigError, match="concurrency"):
        config.validate({"study": {**doc["study"], "concurrency": 0}}, "test", StudyParams)


def test_sigusr1_to_the_study_reaches_every_trial_running(tmp_path):
    root = tmp_path / "grid" / "trials"

    def signal_when_both_train():
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            metrics = list(root.glob("*/metrics.jsonl")) if root.exists() else []
            if len(metrics) == 2 and all(records.read_metrics(m) for m in metrics):
                os.kill(os.getpid(), signal.SIGUSR1)
                return
            time.sleep(0.2)

    threading.Thread(target=signal_when_both_train, daemon=True).start()
    table = runner.run_grid(_study(2, steps=400), "test", tmp_path)
    assert list(table["status"]) == ["preempted", "preempted"], table[["status", "steps"]]
    for t in root.iterdir():
        assert records.read_json(t / "summary.json")["steps"] < 400
        assert any(p.name.startswith("step_") for p in (t / "checkpoints").iterdir())
