"""Resume at another world size: a ZeRO-3 checkpoint written by 2 ranks continues on 1 rank through
DeepSpeed's universal checkpoint, at the same example; bad input is refused before the run folder
is touched. CPU pulse runs of the real CLI (tiny preset, fp32)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mt5study import batches, checkpoints, launch, records
from mt5study.config import DataConfig, RunConfig, SyntheticData

pytestmark = pytest.mark.slow
ONE_RANK = {"run.processes_per_node": 1, "run.grad_accum": 4, "run.global_batch": 16}  # 4 x 4 x 1
STOP = 4  # the 2-rank run checkpoints after this step


def losses(out: Path) -> list[float]:
    return [r["loss"] for r in records.read_metrics(out / "metrics.jsonl")]


def snapshot(out: Path) -> dict[str, tuple[int, int]]:
    """Every file of a folder with its size and modification time (ns)."""
    return {str(p.relative_to(out)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(out.rglob("*")) if p.is_file()}


def cli(*args: str) -> subprocess.CompletedProcess:
    """`mt5study launch ...` with output captured (no launch.log written into the run folder)."""
    return subprocess.run([sys.executable, "-m", "mt5study.cli", "launch", *args], capture_output=True, text=True,
                          timeout=900)


def sets(overrides: dict) -> list[str]:
    return [f"--set={k}={v}" for k, v in overrides.items()]


@pytest.fixture(scope="module")
def uninterrupted(tiny_params, runs_dir):
    out = runs_dir / "elastic_reference"
    return out, launch.run(tiny_params, out)


@pytest.fixture(scope="module")
def preempted(tiny_params, runs_dir):
    """A 2-rank ZeRO-3 run stopped (checkpointed) after step STOP; copied by each test that resumes it."""
    out = runs_dir / "elastic_preempted"
    r = cli("--params", str(tiny_params), "--out", str(out), "--stop-at-step", str(STOP))
    assert r.returncode == launch.EXIT_PREEMPTED, r.stderr[-3000:]
    return out


def copy_of(preempted: Path, runs_dir: Path, name: str) -> Path:
    out = runs_dir / name
    shutil.copytree(preempted, out)
    return out


def test_two_ranks_resume_on_one_within_tolerance(tiny_params, runs_dir, preempted, uninterrupted):
    out = copy_of(preempted, runs_dir, "elastic_2to1")
    ckpt = checkpoints.latest(out)
    state = records.read_json(ckpt / checkpoints.STATE_FILE)
    assert state["world_size"] == 2 and state["data_position"] == STOP * 16 and state["global_batch"] == 16
    summary = launch.run(tiny_params, out, overrides=ONE_RANK, extra_args=["--resume"])
    assert summary["status"] == "completed" and summary["steps"] == 8 and summary["world_size"] == 1
    assert (ckpt / checkpoints.UNIVERSAL / checkpoints.DS_TAG / "zero").is_dir()  # the cached conversion
    assert not list(ckpt.glob(f".{checkpoints.UNIVERSAL}.tmp-*"))  # no half-written conversion left
    assert records.read_json(out / "deepspeed_config.json")["checkpoint"] == {"load_universal": True}
    rows = records.read_metrics(out / "metrics.jsonl")
    assert [r["step"] for r in rows] == list(range(1, 9))  # nothing lost, nothing repeated
    ref, got = losses(uninterrupted[0]), losses(out)
    assert got[:STOP] == pytest.approx(ref[:STOP], rel=1e-6)  # the 2-rank part: the same run as the reference
    rel = max(abs(a - b) / abs(b) for a, b in zip(got[STOP:], ref[STOP:]))
    print(f"2 -> 1 rank resume: largest relative loss difference after the resume {rel:.2e}")
    assert rel < 1e-6  # fp32: only the order of the gradient reduction differs (measured 9e-8)
    # (final_eval_loss is not compared: run.eval_batches counts micro-batches per rank, so one
    # rank evaluates half the examples that two do.)
    # A second conversion is not made: the cached folder is reused as it is.
    before = snapshot(ckpt / checkpoints.UNIVERSAL)
    assert checkpoints.ensure_universal(ckpt, 3) == ckpt / checkpoints.UNIVERSAL
    assert snapshot(ckpt / checkpoints.UNIVERSAL) == before


def test_world_size_that_does_not_divide_the_global_batch_is_refused(tiny_params, runs_dir, preempted):
    out = copy_of(preempted, runs_dir, "elastic_bad_world")
    before = snapshot(out)
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "train", "--params", str(tiny_params), "--out", str(out),
                        "--resume", *sets({"run.processes_per_node": 3, "run.grad_accum": 1, "run.global_batch": "null"})],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == launch.EXIT_CONFIG, r.stderr[-2000:]
    assert "world size 3 (run.nodes x run.processes_per_node) does not divide it" in r.stderr
    assert "global batch 16" in r.stderr
    assert snapshot(out) == before


def test_checkpoint_of_another_architecture_is_refused(tiny_params, runs_dir, preempted, uninterrupted):
    out = copy_of(preempted, runs_dir, "elastic_bad_arch")
    before = snapshot(out)
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "train", "--params", str(tiny_params), "--out", str(out),
                        "--resume", "--set=model.preset=mini"], capture_output=True, text=True, timeout=600)
    assert r.returncode == launch.EXIT_CONFIG, r.stderr[-2000:]
    assert "model.preset='tiny'" in r.stderr and "another architecture" in r.stderr
    assert snapshot(out) == before
    # Released-style weights (a saved model folder) of another preset: refused before anything runs.
    fresh = runs_dir / "elastic_bad_pretrained"
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "train", "--params", str(tiny_params), "--out", str(fresh),
                        "--set=model.preset=mini", f"--set=model.checkpoint={uninterrupted[0] / 'model'}"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == launch.EXIT_CONFIG, r.stderr[-2000:]
    assert "another architecture" in r.stderr and "d_model: checkpoint 32 vs preset 128" in r.stderr
    assert not fresh.exists()


def test_unreadable_universal_checkpoint_is_refused(tiny_params, runs_dir, preempted):
    out = copy_of(preempted, runs_dir, "elastic_bad_universal")
    ckpt = checkpoints.latest(out)
    universal = checkpoints.ensure_universal(ckpt, 3)
    for f in (universal / checkpoints.DS_TAG / "zero").rglob("fp32.pt"):
        f.write_bytes(b"not a tensor file")  # damaged after conversion (a full disk, a bad copy)
    before = snapshot(out)
    r = cli("--params", str(tiny_params), "--out", str(out), "--resume", *sets(ONE_RANK))
    assert r.returncode != 0
    assert f"universal checkpoint {universal} cannot be read" in r.stderr
    assert snapshot(out) == before  # no summary, metrics, config or env rewritten


def test_data_position_in_examples_survives_another_split():
    """Steps after a resume at another split of the global batch read the same examples."""
    cfg = DataConfig(synthetic=SyntheticData(num_train=40, num_validation=8, vocab_size=64), input_length=8, target_length=4)
    ds = batches.synthetic_splits(cfg, seed=3)["train"]

    def per_step(world, micro, accum, start_step, start_example=None):
        run = RunConfig(steps=6, micro_batch=micro, grad_accum=accum, processes_per_node=world)
        out: dict[int, list] = {}
        for rank in range(world):
            mb = batches.MicroBatches(ds, run, rank, world, start_step, seed=7, start_example=start_example)
            for k in range(len(mb)):
                out.setdefault(start_step + k // accum, []).append(mb[k]["input_ids"].numpy())
        return {s: np.sort(np.concatenate(v), axis=0) for s, v in out.items()}

    full = per_step(world=2, micro=2, accum=2, start_step=0)  # global batch 8
    resumed = per_step(world=1, micro=4, accum=2, start_step=3, start_example=3 * 8)
    assert resumed.keys() == {3, 4, 5}
    for s in resumed:
        assert np.array_equal(full[s], resumed[s])
