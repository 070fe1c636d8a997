"""Torn checkpoints: a folder half-written, a shard cut short, a state file of bad JSON, a missing
rank's file. The resume plan never picks one up: it uses the checkpoint before, says so on the
console, and sets the bad one aside; with none usable it refuses, naming each and why.

The checkpoints are real: copies of the reference run's (tiny, ZeRO-3, 2 ranks, steps 4/8/12).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from mt5study import checkpoints, config
from mt5study.paths import PARAMS

STATE = checkpoints.STATE_FILE


@pytest.fixture
def run_copy(reference_run, tmp_path) -> Path:
    out = tmp_path / "run"
    shutil.copytree(reference_run / "run" / checkpoints.CHECKPOINTS, out / checkpoints.CHECKPOINTS)
    return out


@pytest.fixture(scope="module")
def params():
    return config.load(PARAMS / "cpu" / "tiny.yaml", {"run.steps": 16})  # step 12 is before the end


def _shard(ckpt: Path, rank: int = 1) -> Path:
    return ckpt / checkpoints.DS_TAG / f"zero_pp_rank_{rank}_mp_rank_00_optim_states.pt"


def _truncate(f: Path, keep: float = 0.5) -> None:
    f.write_bytes(f.read_bytes()[: int(f.stat().st_size * keep)])


TEARS = {  # name -> (how the newest checkpoint is damaged, words the message must hold)
    "optimizer shard cut short": (lambda c: _truncate(_shard(c)), "cut short"),
    "model shard cut to 0 bytes": (lambda c: _truncate(c / checkpoints.DS_TAG / "zero_pp_rank_0_mp_rank_00_model_states.pt", 0), "empty"),
    "RNG state cut short": (lambda c: _truncate(c / "random_states_1.pkl", 0.9), "cut short"),
    "state file of bad JSON": (lambda c: (c / STATE).write_text('{"step": 12, "data_pos'), "unreadable"),
    "state file not an object": (lambda c: (c / STATE).write_text("[12]"), "lacks step"),
    "state file of another step": (lambda c: (c / STATE).write_text((c / STATE).read_text().replace('"step": 12', '"step": 11')), "says step 11"),
    "a rank's optimizer shard missing": (lambda c: _shard(c).unlink(), "optimizer shards"),
    "a rank's RNG state missing": (lambda c: (c / "random_states_0.pkl").unlink(), "missing"),
}


@pytest.mark.parametrize("tear", sorted(TEARS))
def test_torn_newest_checkpoint_falls_back_and_says_so(tear, run_copy, params, capsys, ledger):
    damage, words = TEARS[tear]
    newest = run_copy / checkpoints.CHECKPOINTS / "step_0000012"
    with ledger.fault(f"torn checkpoint: {tear}"):
        damage(newest)
        assert checkpoints.check_complete(newest) is not None
        plan = checkpoints.plan_resume(run_copy, params)
        assert plan.checkpoint.name == "step_0000008" and plan.state["step"] == 8
        assert len(plan.skipped) == 1 and words in plan.skipped[0]
        err = capsys.readouterr().err
        assert "step_0000012 is not used" in err and words in err and "resuming from" in err
        assert not newest.exists() and len(list(newest.parent.glob(f"{checkpoints.SET_ASIDE}-step_0000012-*"))) == 1
        assert checkpoints.latest(run_copy).name == "step_0000008"  # the step is rewritten into a fresh folder


def test_half_written_checkpoint_is_not_a_checkpoint(run_copy, params, capsys, ledger):
    """A folder without its state file (killed inside save_state) is passed over silently."""
    newest = run_copy / checkpoints.CHECKPOINTS / "step_0000012"
    with ledger.fault("checkpoint folder without its state file"):
        (newest / STATE).unlink()
        assert checkpoints.latest(run_copy).name == "step_0000008"
        assert checkpoints.plan_resume(run_copy, params).checkpoint.name == "step_0000008"
        assert newest.exists()  # not a checkpoint, nothing to set aside: the next save completes it


def test_no_usable_checkpoint_is_refused_naming_each(run_copy, params, ledger):
    ckpts = sorted((run_copy / checkpoints.CHECKPOINTS).glob("step_*"))
    for c in ckpts:
        _truncate(_shard(c))
    message = ledger.bad_input("every checkpoint torn", lambda: checkpoints.plan_resume(run_copy, params),
                               "no usable checkpoint", error=checkpoints.CheckpointError)
    assert all(c.name in message for c in ckpts) and "--overwrite" in message
    assert all(c.exists() for c in ckpts)  # nothing moved when nothing can be used


def test_final_step_checkpoint_is_used(run_copy, capsys, ledger):
    """Killed while gathering the final weights: the checkpoint at run.steps is used (the run
    finishes from it without training, tests/faults/test_resume_edges.py); one past run.steps
    (the params now ask for fewer steps) is set aside and the one before is used."""
    with ledger.fault("checkpoint at run.steps without final weights"):
        plan = checkpoints.plan_resume(run_copy, config.load(PARAMS / "cpu" / "tiny.yaml", {"run.steps": 12}))
        assert plan.checkpoint.name == "step_0000012" and not plan.skipped
        assert "is not used" not in capsys.readouterr().err
    with ledger.fault("checkpoint past run.steps"):
        plan = checkpoints.plan_resume(run_copy, config.load(PARAMS / "cpu" / "tiny.yaml", {"run.steps": 10}))
        assert plan.checkpoint.name == "step_0000008"
        assert "past run.steps=10" in capsys.readouterr().err


def test_whole_checkpoints_pass(reference_run):
    for c in sorted((reference_run / "run" / checkpoints.CHECKPOINTS).glob("step_*")):
        assert checkpoints.check_complete(c) is None, c


def test_truncated_safetensors_is_detected(reference_run, tmp_path):
    f = tmp_path / "model.safetensors"
    data = (reference_run / "run" / "model" / "model.safetensors").read_bytes()
    f.write_bytes(data)
    assert checkpoints._whole_file_problem(f) is None  # noqa: SLF001
    f.write_bytes(data[: len(data) - 100])
    assert "cut short" in checkpoints._whole_file_problem(f)  # noqa: SLF001
