"""A world of one without the distributed launcher: same engine, numbers and run folder as a launched
world of one; `mt5study train` by hand; divergence recorded with its step and exit code.

CPU pulse runs of the real CLI (tiny preset, fp32, 4 steps).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from mt5study import config, launch, records

pytestmark = pytest.mark.slow
# One process, ZeRO-0, the same global batch (16 = 4 x 4 x 1): run.one_process folds the world.
SHORT = {"run.one_process": True, "run.steps": 4, "run.eval_every": 2, "run.checkpoint_every": 2}


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in records.read_metrics(out / "metrics.jsonl")]


def files(out: Path) -> set[str]:
    return {str(p.relative_to(out)) for p in out.rglob("*") if p.is_file()}


def train_by_hand(*args: str) -> subprocess.CompletedProcess:
    """`mt5study train ...` with no launcher and no launcher variables in its environment."""
    env = {k: v for k, v in launch.launch_env(1).items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    return subprocess.run([sys.executable, "-m", "mt5study.cli", "train", *args], capture_output=True, text=True,
                          env=env, timeout=900)


@pytest.fixture(scope="module")
def one_process(tiny_params, runs_dir):
    out = runs_dir / "one_process"
    return out, launch.run(tiny_params, out, overrides=SHORT)


@pytest.fixture(scope="module")
def launched_world_of_one(tiny_params, runs_dir):
    out = runs_dir / "launched_world_of_one"
    return out, launch.run(tiny_params, out, overrides={**SHORT, "run.launcher": "accelerate"})


def test_one_process_folds_the_world_into_accumulation(tiny_params):
    run = config.load(tiny_params, {"run.one_process": True}).run
    assert (run.world_size, run.grad_accum, run.zero_stage, run.effective_global_batch) == (1, 4, 0, 16)
    assert not launch.uses_launcher(config.load(tiny_params, {"run.one_process": True}))
    assert launch.uses_launcher(config.load(tiny_params))  # 2 processes: launched


def test_one_process_equals_the_launched_world_of_one(one_process, launched_world_of_one):
    (a, sa), (b, sb) = one_process, launched_world_of_one
    assert sa["status"] == sb["status"] == "completed" and sa["world_size"] == sb["world_size"] == 1
    assert (sa["launcher"], sb["launcher"]) == ("none", "accelerate")
    assert sa["engine"] == sb["engine"] == "deepspeed"
    la, lb = losses(a), losses(b)
    assert len(la) == 4
    diff = max(abs(x - y) / abs(y) for x, y in zip(la, lb))
    print(f"one process vs launched world of one: largest relative loss difference {diff:.2e}")
    assert diff <= 1e-6
    assert sa["final_eval_loss"] == pytest.approx(sb["final_eval_loss"], rel=1e-6)
    assert files(a) == files(b)  # the same run folder: records, checkpoints, weights
    assert records.read_json(a / "env.json")["launcher"] == "none"
    assert records.read_json(a / "deepspeed_config.json") == records.read_json(b / "deepspeed_config.json")


def test_train_by_hand_with_several_processes_says_to_launch(tiny_params, tmp_path):
    out = tmp_path / "run"
    r = train_by_hand("--params", str(tiny_params), "--out", str(out))  # tiny.yaml: 2 processes
    assert r.returncode == launch.EXIT_CONFIG
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1, r.stderr[-2000:]
    assert "mt5study launch" in lines[0] and "Traceback" not in r.stderr
    assert not out.exists()


def test_divergence_is_recorded_with_its_step_and_exit_code(tiny_params, tmp_path):
    out = tmp_path / "diverged"
    r = train_by_hand("--params", str(tiny_params), "--out", str(out), "--set=run.one_process=true",
                      "--set=optim.lr=1e30", "--set=optim.grad_clip=0", "--set=run.log_every=1", "--set=run.steps=6",
                      "--set=run.checkpoint_every=0")
    assert r.returncode == launch.EXIT_DIVERGED, r.stderr[-2000:]
    s = records.read_json(out / "summary.json")
    assert s["status"] == "diverged" and 1 <= s["diverged_at_step"] <= 6
    assert "non-finite" in s["reason"]
    assert not (out / "model").exists()  # nothing marked or saved as completed
    assert all(row["step"] < s["diverged_at_step"] for row in records.read_metrics(out / "metrics.jsonl"))
    assert launch.status_exit_code("diverged") not in (launch.EXIT_OK, launch.EXIT_FAILED, launch.EXIT_PREEMPTED)
