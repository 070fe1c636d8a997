"""Two edges of a resume, on a real world-of-one run (tiny, ZeRO-0, 4 steps, checkpoints 2 and 4):

- a checkpoint folder left half-written by a killed attempt (files the new save does not write,
  such as another world size's shard) is removed before the step is saved again, so the new
  checkpoint is whole;
- a run killed after its last checkpoint (at run.steps) but before its final weights and summary
  resumes from that checkpoint and finishes without training further: same weights, same metrics.
"""

from __future__ import annotations

import shutil

import pytest

from mt5study import checkpoints, launch, records

SHORT = {"run.one_process": True, "run.steps": 4, "run.eval_every": 2, "run.checkpoint_every": 2}


@pytest.fixture(scope="module")
def world_of_one(tiny_params, tmp_path_factory):
    out = tmp_path_factory.mktemp("world_of_one") / "run"
    summary = launch.run(tiny_params, out, overrides=SHORT)
    assert summary["status"] == "completed"
    return out


def _weights(out):
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


def test_leftover_checkpoint_folder_is_replaced_whole(tiny_params, tmp_path, ledger):
    out = tmp_path / "run"
    leftover = out / checkpoints.CHECKPOINTS / "step_0000002"
    (leftover / checkpoints.DS_TAG).mkdir(parents=True)
    stale = leftover / checkpoints.DS_TAG / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
    stale.write_bytes(b"PK\x03\x04" + b"\0" * 64)  # a shard of a 2-rank attempt, cut short by its kill
    (leftover / "random_states_1.pkl").write_bytes(b"\x80")
    with ledger.fault("checkpoint folder left half-written (another world size) by a killed attempt"):
        summary = launch.run(tiny_params, out, overrides=SHORT, extra_args=["--resume"])
        assert summary["status"] == "completed"
        assert not stale.exists() and not (leftover / "random_states_1.pkl").exists()
        for c in checkpoints.complete(out):
            assert checkpoints.check_complete(c) is None, c


def test_killed_after_its_last_checkpoint_finishes_without_training(world_of_one, tiny_params, tmp_path, ledger):
    out = tmp_path / "run"
    shutil.copytree(world_of_one, out)
    shutil.rmtree(out / "model")
    (out / "summary.json").unlink()  # killed while gathering the final weights
    metrics_before = (out / "metrics.jsonl").read_bytes()
    last = out / checkpoints.CHECKPOINTS / "step_0000004"
    with ledger.fault("killed after the checkpoint at run.steps, before the final weights"):
        summary = launch.run(tiny_params, out, overrides=SHORT, extra_args=["--resume"])
        assert summary["status"] == "completed" and summary["steps"] == 4
        assert checkpoints.check_complete(last) is None  # used as it was, not set aside nor rewritten
        assert not list(last.parent.glob(f"{checkpoints.SET_ASIDE}-*"))
        assert (out / "metrics.jsonl").read_bytes() == metrics_before  # no step trained again
        ref = records.read_json(world_of_one / "summary.json")
        assert summary["final_train_loss"] == ref["final_train_loss"]
        assert summary["final_eval_loss"] == ref["final_eval_loss"]
        a, b = _weights(out), _weights(world_of_one)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
