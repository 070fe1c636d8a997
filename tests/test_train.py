"""CPU pulse runs of the real CLI under `accelerate launch`: 2 processes, DeepSpeed ZeRO-0/3.

Each launch costs ~15 s on 2 cores; runs are shared between tests through session fixtures.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from mt5study import launch, records
from mt5study.train import latest_checkpoint

pytestmark = pytest.mark.slow
GOLDEN = Path(__file__).parent / "assets" / "golden_tiny_zero3.json"


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in records.read_metrics(out / "metrics.jsonl")]


@pytest.fixture(scope="session")
def zero3_run(tiny_params, runs_dir):
    out = runs_dir / "zero3"
    summary = launch.run(tiny_params, out)
    return out, summary


@pytest.fixture(scope="session")
def zero0_run(tiny_params, runs_dir):
    out = runs_dir / "zero0"
    return out, launch.run(tiny_params, out, overrides={"run.zero_stage": 0})


def test_pulse_run_folder(zero3_run):
    out, summary = zero3_run
    assert summary["status"] == "completed" and summary["steps"] == 8
    assert summary["world_size"] == 2
    assert summary["tokens"] == 8 * 16 * (32 + 8)
    assert summary["tokens_per_second"] > 0 and summary["peak_memory_bytes"] > 0
    cfg = records.read_json(out / "config.json")
    assert cfg["run"]["zero_stage"] == 3 and cfg["model"]["preset"] == "tiny"
    ds = records.read_json(out / "deepspeed_config.json")
    assert ds["train_batch_size"] == 16 and ds["zero_optimization"]["stage"] == 3
    env = records.read_json(out / "env.json")
    assert env["versions"]["deepspeed"] and env["versions"]["torch"] and env["world_size"] == 2
    assert "commit" in env["git"] and env["hardware"]["cpu_count"]
    rows = records.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))
    keys = {"step", "loss", "lr", "grad_norm", "tokens_per_second", "step_seconds", "peak_memory_bytes",
            "flops_per_step", "mfu"}
    assert keys <= rows[0].keys()
    assert [r["step"] for r in rows if "eval_loss" in r] == [4, 8]
    assert rows[-1]["loss"] < rows[0]["loss"]  # it learns
    # summary.json was the last file written
    assert (out / "summary.json").stat().st_mtime >= max(p.stat().st_mtime for p in out.glob("*.json*"))


def test_zero0_and_zero3_agree(zero0_run, zero3_run):
    a, b = losses(zero0_run[0]), losses(zero3_run[0])
    assert len(a) == len(b) == 8
    diff = max(abs(x - y) for x, y in zip(a, b))
    print(f"largest ZeRO-0 vs ZeRO-3 loss difference: {diff:.3e}")
    assert diff < 1e-4 * max(a)
    assert zero0_run[1]["final_eval_loss"] == pytest.approx(zero3_run[1]["final_eval_loss"], rel=1e-4)


def test_zero3_partitioned_construction_starts_where_zero0_does(zero0_run, zero3_run):
    """ZeRO-3 builds the model partitioned (zero.Init) and still starts from ZeRO-0's weights."""
    assert records.read_json(zero3_run[0] / "config.json")["run"]["zero3_init"] is True
    assert losses(zero3_run[0])[0] == pytest.approx(losses(zero0_run[0])[0], rel=1e-6)


def test_golden_loss_trace(zero3_run):
    """A silent change in training (data order, init, optimizer, schedule) shows up here."""
    golden = json.loads(GOLDEN.read_text())
    got = losses(zero3_run[0])
    assert got == pytest.approx(golden["losses"], rel=golden["rel_tolerance"])


def test_zero3_saved_weights_are_complete_and_equal_the_trained_ones(zero3_run):
    from deepspeed.utils.zero_to_fp32 import get_fp32_state_dict_from_zero_checkpoint
    from transformers import MT5ForConditionalGeneration

    out, _ = zero3_run
    saved = MT5ForConditionalGeneration.from_pretrained(out / "model")  # no DeepSpeed involved
    assert saved.lm_head.weight.data_ptr() != saved.shared.weight.data_ptr()
    trained = get_fp32_state_dict_from_zero_checkpoint(str(latest_checkpoint(out)))
    sd = saved.state_dict()
    assert set(trained) <= set(sd)
    for k, v in trained.items():
        assert sd[k].shape == v.shape and sd[k].numel() > 0, k
        assert torch.equal(sd[k], v.to(sd[k].dtype)), k


def test_resume_is_exact(tiny_params, runs_dir, zero3_run):
    out = runs_dir / "resumed"
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "launch", "--params", str(tiny_params),
                        "--out", str(out), "--stop-at-step", "3"], capture_output=True, text=True)
    assert r.returncode == launch.EXIT_PREEMPTED, r.stderr[-2000:]
    first = records.read_json(out / "summary.json")
    assert first["status"] == "preempted" and first["steps"] == 3
    assert latest_checkpoint(out).name == "step_0000003"
    second = launch.run(tiny_params, out, extra_args=["--resume"])
    assert second["status"] == "completed" and second["steps"] == 8
    rows = records.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))  # nothing lost, nothing repeated
    assert losses(out) == pytest.approx(losses(zero3_run[0]), rel=1e-6)
    assert second["final_eval_loss"] == pytest.approx(zero3_run[1]["final_eval_loss"], rel=1e-6)


def test_completed_run_is_not_overwritten(tiny_params, zero3_run):
    out, _ = zero3_run
    before = (out / "summary.json").read_text()
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "launch", "--params", str(tiny_params), "--out", str(out)],
                       capture_output=True, text=True)
    assert r.returncode != 0
    assert "completed run" in r.stderr
    assert (out / "summary.json").read_text() == before


def test_divergence_ends_cleanly(tiny_params, runs_dir):
    out = runs_dir / "diverged"
    summary = launch.run(tiny_params, out, overrides={"optim.lr": 1e30, "optim.grad_clip": 0.0, "run.log_every": 4})
    assert summary["status"] == "diverged"
    assert 1 <= summary["diverged_at_step"] <= 4
    assert not (out / "model").exists()


def test_fp16_on_cpu_is_recorded_unsupported(tiny_params, runs_dir):
    out = runs_dir / "fp16"
    summary = launch.run(tiny_params, out, overrides={"run.precision": "fp16"})
    if torch.cuda.is_available():
        pytest.skip("fp16 is supported here")
    assert summary["status"] == "unsupported" and "fp16" in summary["reason"]


def test_sigusr1_checkpoints_and_resume_loses_no_step(tiny_params, runs_dir):
    """Slurm's warning signal: the ranks checkpoint, the launch exits 3, --resume finishes."""
    import signal
    import time

    out = runs_dir / "signalled"
    args = [sys.executable, "-m", "mt5study.cli", "launch", "--params", str(tiny_params), "--out", str(out),
            "--set", "run.steps=60", "--set", "run.log_every=1", "--set", "run.eval_every=0"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600  # start-up waits for DeepSpeed's op build when cores are shared
    while time.time() < deadline and len(records.read_metrics(out / "metrics.jsonl")) < 3:
        time.sleep(0.2)
    assert len(records.read_metrics(out / "metrics.jsonl")) >= 3, "the run did not reach step 3 in 600 s"
    proc.send_signal(signal.SIGUSR1)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == launch.EXIT_PREEMPTED, err[-2000:]
    first = records.read_json(out / "summary.json")
    assert first["status"] == "preempted" and 3 <= first["steps"] < 60
    r = subprocess.run(args + ["--resume"], capture_output=True, text=True)
    assert r.returncode == 0, r.stderr[-2000:]
    assert records.read_json(out / "summary.json")["status"] == "completed"
    assert [row["step"] for row in records.read_metrics(out / "metrics.jsonl")] == list(range(1, 61))


def test_adafactor_with_zero_offload_and_mfu(tiny_params, runs_dir):
    """Adafactor, ZeRO-3 with optimizer and parameter offload to CPU memory, MFU against a peak."""
    out = runs_dir / "adafactor_offload"
    s = launch.run(tiny_params, out, overrides={
        "optim.name": "adafactor", "run.offload_optimizer": True, "run.offload_params": True,
        "run.peak_tflops_per_device": 0.1, "run.steps": 3, "run.checkpoint_every": 0})
    assert s["status"] == "completed" and s["steps"] == 3
    ds = records.read_json(out / "deepspeed_config.json")["zero_optimization"]
    assert ds["offload_optimizer"]["device"] == "cpu" and ds["offload_param"]["device"] == "cpu"
    rows = records.read_metrics(out / "metrics.jsonl")
    # MFU = model FLOPs per step / step seconds / (peak x world size)
    r = rows[-1]
    assert r["mfu"] == pytest.approx(r["flops_per_step"] / r["step_seconds"] / (0.1e12 * 2), rel=1e-6)
    assert losses(out)[-1] < losses(out)[0]
