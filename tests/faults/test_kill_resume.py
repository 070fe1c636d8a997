"""kill -9 of a real training run (`mt5study launch`, tiny, 2 ranks, ZeRO-3) at chosen points,
then `--resume`, until it completes: the weights and losses equal an uninterrupted run's, every
step is logged once, and no sample is skipped or seen twice (by sample id).

One run folder goes through four faults in a row, which also checks that faults compound safely:
1. killed while checkpoint step 8 is written (half a shard on disk, no state file);
2. resumed from step 4, killed after step 10;
3. the rank-1 optimizer shard of checkpoint step 8 is cut short on disk; resumed: step 8 is
   detected, set aside, the console says so, step 4 is used; killed while gathering the final weights;
4. resumed: the step-12 checkpoint (at run.steps) is used; the run gathers its weights and
   completes without training further.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from mt5study import checkpoints, records

from .runs import STEPS, committed_samples as _committed_samples, launch_cmd as _cmd, run_launch, run_until_fault as _run_until_fault

def _losses(out: Path) -> list[tuple[int, float]]:
    return [(r["step"], r["loss"]) for r in records.read_metrics(out / "metrics.jsonl")]


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


def test_kill9_at_four_points_resumes_exactly(tiny_params, tmp_path, fault_env, reference_run, ledger):
    reference = reference_run
    out, samples = tmp_path / "run", tmp_path / "samples"
    samples.mkdir()
    env = dict(fault_env, MT5STUDY_FAULT_SAMPLES=str(samples))
    ckpts = out / checkpoints.CHECKPOINTS

    with ledger.fault("kill -9 while a checkpoint is written"):
        _run_until_fault(_cmd(tiny_params, out), env, "save:8", tmp_path / "mark1", tmp_path / "a1.log")
        assert (ckpts / "step_0000008").is_dir() and not (ckpts / "step_0000008" / checkpoints.STATE_FILE).exists()
        assert checkpoints.latest(out).name == "step_0000004"  # the torn folder is not a checkpoint
        assert not (out / "summary.json").exists()

    with ledger.fault("kill -9 between steps"):
        _run_until_fault(_cmd(tiny_params, out, "--resume"), env, "step:10", tmp_path / "mark2", tmp_path / "a2.log")
        assert checkpoints.latest(out).name == "step_0000008"
        assert checkpoints.check_complete(ckpts / "step_0000008") is None

    with ledger.fault("shard cut short on disk, then kill -9 while the final weights are gathered"):
        shard = ckpts / "step_0000008" / checkpoints.DS_TAG / "zero_pp_rank_1_mp_rank_00_optim_states.pt"
        shard.write_bytes(shard.read_bytes()[: shard.stat().st_size // 2])
        log = _run_until_fault(_cmd(tiny_params, out, "--resume"), env, "gather", tmp_path / "mark3", tmp_path / "a3.log")
        assert "step_0000008 is not used" in log and "cut short" in log, log[-3000:]
        assert "resuming from" in log and "step_0000004" in log
        assert list(ckpts.glob(f"{checkpoints.SET_ASIDE}-step_0000008-*"))
        assert not (out / "summary.json").exists()  # never marked completed

    with ledger.fault("resume after kill -9 during the final gather"):
        log = run_launch(_cmd(tiny_params, out, "--resume"), env, tmp_path / "a4.log")
        assert "step_0000012 is not used" not in log and "resuming from" not in log, log[-3000:]
        assert checkpoints.latest(out).name == "step_0000012" and not list(ckpts.glob(f"{checkpoints.SET_ASIDE}-step_0000012-*"))
        summary = records.read_json(out / "summary.json")
        assert summary["status"] == "completed" and summary["steps"] == STEPS

        ref = reference / "run"
        steps = [s for s, _ in _losses(out)]
        ledger.lost("metrics rows (steps missing or repeated)",
                    len(set(range(1, STEPS + 1)) ^ set(steps)) + len(steps) - len(set(steps)))
        assert steps == list(range(1, STEPS + 1))
        assert _losses(out) == _losses(ref)  # bitwise: same order of examples, same arithmetic
        a, b = _weights(out), _weights(ref)
        assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)

        got, want = _committed_samples(samples), _committed_samples(reference / "samples")
        assert sorted(want) == list(range(STEPS)) and all(len(v) == 16 for v in want.values())
        got_all, want_all = Counter(i for v in got.values() for i in v), Counter(i for v in want.values() for i in v)
        skipped = sum((want_all - got_all).values())
        repeated = sum((got_all - want_all).values())
        ledger.lost("samples skipped or seen twice across 4 kills", skipped + repeated)
        assert skipped == 0 and repeated == 0
        assert got == want  # and each at the same step
