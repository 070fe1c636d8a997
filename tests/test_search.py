"""Pruned batch x learning-rate search on a synthetic loss surface with a known optimum.

Run as a script (`python tests/test_search.py worker JOURNAL NAME OUT`) it is one search worker,
used by the two-process test.
"""

from __future__ import annotations

import json
import math
import random
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pandas as pd
import pytest

from mt5study.studies.search import grid_points, grid_vs_pruned, make_study, results, run_search

BATCHES = [16, 32, 64, 128, 256]  # global batch, examples
LRS = [1e-4, 3e-4, 1e-3, 3e-3, 1e-2]
SPACE = {"global_batch": BATCHES, "lr": LRS}
BEST = {"global_batch": 64, "lr": 3e-3}  # the optimum of `synthetic_loss`, by construction
RUNGS = [3, 9, 27, 81, 243]  # optimizer steps at which the objective reports (factor 3)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def synthetic_loss(batch: int, lr: float, step: int) -> float:
    """floor + amplitude / sqrt(step) + noise; floor and amplitude are both least at BEST.

    Curves of different configurations do not cross (the regime where successive halving keeps
    the best); the nearest grid neighbour's floor is 0.068 higher, the noise (seeded by the
    configuration and step, so every run sees the same curve) has sd 0.003.
    """
    db, dl = math.log2(batch / 64), math.log10(lr / 3e-3)
    floor = 2.0 + 0.15 * db**2 + 0.3 * dl**2
    amplitude = 3.0 * (1.0 + 0.1 * db**2 + 0.2 * dl**2)
    noise = random.Random(f"{batch}-{lr}-{step}").gauss(0.0, 0.003)
    return floor + amplitude / math.sqrt(step) + noise


def make_objective(calls: list | None = None, delay: float = 0.0, fail_on: dict | None = None):
    def objective(params, report):
        if calls is not None:
            calls.append(dict(params))
        loss = float("nan")
        for step in RUNGS:
            if fail_on is not None and params == fail_on and step == 27:
                raise RuntimeError("simulated crash")
            loss = synthetic_loss(params["global_batch"], params["lr"], step)
            time.sleep(delay)
            report(loss, step)
        return loss
    return objective


def keys(points):
    return sorted((p["global_batch"], p["lr"]) for p in points)


GRID_KEYS = keys(grid_points(SPACE))


def finished(df: pd.DataFrame) -> pd.DataFrame:
    return df[df.state.isin(["COMPLETE", "PRUNED"])]


@pytest.mark.parametrize("pruner", ["successive_halving", "hyperband"])
def test_pruned_search_finds_the_grid_best_for_less_compute(tmp_path, pruner):
    grid = make_study("grid", tmp_path / "grid.journal", SPACE, pruner="none")
    grid_df = run_search(grid, make_objective())
    assert len(finished(grid_df)) == 25 and (grid_df.state == "COMPLETE").all()
    # The exhaustive grid: 25 points x 243 steps x batch.
    assert grid_df.compute.sum() == 243 * sum(BATCHES) * len(LRS)

    pruned = make_study("pruned", tmp_path / "pruned.journal", SPACE, pruner=pruner, seed=1,
                        min_resource=3, max_resource=243, reduction_factor=3)
    pruned_df = run_search(pruned, make_objective())
    assert keys(finished(pruned_df).to_dict("records")) == GRID_KEYS  # every point started once
    cmp = grid_vs_pruned(grid_df, pruned_df)
    assert cmp["grid_best"] == BEST  # the known optimum
    assert cmp["found_best"] and cmp["same_config"]
    assert cmp["pruned_trials"] > 0
    assert cmp["compute_fraction"] < 1.0
    print(pruner, {k: cmp[k] for k in ("compute_fraction", "pruned_trials", "completed_trials")})


def test_tpe_with_pruning_runs_within_the_grid(tmp_path):
    study = make_study("tpe", tmp_path / "tpe.journal", SPACE, sampler="tpe", seed=0, min_resource=3)
    df = run_search(study, make_objective(), n_trials=12)
    assert len(df) == 12
    assert set(keys(finished(df).to_dict("records"))) <= set(GRID_KEYS)
    real = df[df.duplicate_of.isna()]  # repeats of a finished point are copied at zero compute
    assert (df[df.duplicate_of.notna()].compute == 0).all()
    assert len(set(keys(real.to_dict("records")))) == len(real)


def test_rerun_resumes_instead_of_starting_over(tmp_path):
    path = tmp_path / "study.journal"
    first, second = [], []
    run_search(make_study("s", path, SPACE, min_resource=3), make_objective(first), n_trials=7)
    assert len(first) == 7
    df = run_search(make_study("s", path, SPACE, min_resource=3), make_objective(second))
    assert len(second) == 25 - 7
    assert keys(first + second) == GRID_KEYS  # nothing trained twice, nothing left out
    assert len(df) == 25 and len(finished(df)) == 25


def test_rerun_after_a_crash_redoes_only_the_failed_point(tmp_path):
    path = tmp_path / "study.journal"
    bad = {"global_batch": 32, "lr": 1e-3}
    first, second = [], []
    with pytest.raises(RuntimeError, match="simulated crash"):
        run_search(make_study("s", path, SPACE, pruner="none"), make_objective(first, fail_on=bad))
    assert first[-1] == bad
    df = run_search(make_study("s", path, SPACE, pruner="none"), make_objective(second))
    assert keys(first + second) == sorted(GRID_KEYS + keys([bad]))  # only `bad` ran twice
    assert keys(finished(df).to_dict("records")) == GRID_KEYS
    assert (df.state == "FAIL").sum() == 1


def test_stale_running_trial_of_a_dead_worker_is_redone(tmp_path):
    path = tmp_path / "study.journal"
    study = make_study("s", path, SPACE, pruner="none")
    dead = study.ask()  # popped from the queue by a worker that then died: stays RUNNING
    calls = []
    df = run_search(make_study("s", path, SPACE, pruner="none", fail_stale_running=True),
                    make_objective(calls))
    assert len(calls) == 25 and keys(calls) == GRID_KEYS
    assert df.loc[df.number == dead.number, "state"].item() == "FAIL"


def test_sqlite_storage(tmp_path):
    path = tmp_path / "study.db"
    run_search(make_study("s", path, SPACE, min_resource=3), make_objective(), n_trials=3)
    df = run_search(make_study("s", path, SPACE, min_resource=3), make_objective())
    assert keys(finished(df).to_dict("records")) == GRID_KEYS


def test_two_worker_processes_share_one_journal(tmp_path):
    journal = tmp_path / "shared.journal"
    outs = [tmp_path / f"worker{i}.json" for i in range(2)]
    procs = [subprocess.Popen([sys.executable, __file__, "worker", str(journal), "shared", str(out)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for out in outs]
    for p in procs:
        output, _ = p.communicate(timeout=300)
        assert p.returncode == 0, output
    ran = [json.loads(out.read_text()) for out in outs]
    assert all(len(r) > 0 for r in ran), [len(r) for r in ran]  # both did work
    print("trials per worker", [len(r) for r in ran])
    assert keys(ran[0] + ran[1]) == GRID_KEYS  # each point trained by exactly one worker
    df = results(make_study("shared", journal, SPACE, min_resource=3))
    assert len(df) == 25 and len(finished(df)) == 25 and df.duplicate_of.isna().all()


def test_grid_vs_pruned_arithmetic():
    cols = ["number", "state", "global_batch", "lr", "value", "last_step", "compute", "duplicate_of"]
    grid = pd.DataFrame([[0, "COMPLETE", 16, 0.1, 2.00, 10, 160, None],
                         [1, "COMPLETE", 32, 0.1, 1.50, 10, 320, None]], columns=cols)
    pruned = pd.DataFrame([[0, "PRUNED", 16, 0.1, 2.30, 2, 32, None],
                           [1, "COMPLETE", 32, 0.1, 1.51, 10, 320, None],
                           [2, "PRUNED", 64, 0.1, 1.40, 1, 64, None]], columns=cols)
    cmp = grid_vs_pruned(grid, pruned)
    assert cmp["grid_best"] == {"global_batch": 32, "lr": 0.1} and cmp["same_config"]
    assert cmp["compute_fraction"] == pytest.approx(416 / 480)
    assert cmp["pruned_trials"] == 2 and cmp["completed_trials"] == 1
    other = pruned.assign(global_batch=[16, 48, 64])  # best elsewhere, loss 0.67 % worse
    cmp = grid_vs_pruned(grid, other)
    assert not cmp["same_config"] and cmp["within_tolerance"] and cmp["found_best"]
    assert not grid_vs_pruned(grid, other, tolerance=0.005)["found_best"]
    with pytest.raises(ValueError, match="pruned results have no completed trial"):
        grid_vs_pruned(grid, pruned[pruned.state == "PRUNED"])


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(sampler="bayes"), "bayes"),
        (dict(pruner="median"), "median"),
        (dict(search_space={}), "non-empty"),
        (dict(search_space={"global_batch": [16, 16]}), "distinct"),
        (dict(search_space={"lr": [1e-3]}), "batch_key 'global_batch'"),
        (dict(reduction_factor=1), "reduction_factor"),
        (dict(min_resource=0), "min_resource"),
        (dict(pruner="hyperband"), "max_resource"),
    ],
)
def test_bad_input(tmp_path, kwargs, match):
    args = dict(name="s", storage_path=tmp_path / "s.journal", search_space=SPACE)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        make_study(**args)


def test_joining_with_other_settings_is_refused(tmp_path):
    path = tmp_path / "s.journal"
    make_study("s", path, SPACE)
    with pytest.raises(ValueError, match="search_space"):
        make_study("s", path, {"global_batch": [16, 32], "lr": LRS})
    with pytest.raises(ValueError, match="n_trials"):
        run_search(make_study("t", path, SPACE, sampler="tpe"), make_objective())


if __name__ == "__main__" and sys.argv[1:2] == ["worker"]:
    _, _, journal_path, study_name, out_path = sys.argv
    calls: list = []
    worker_study = make_study(study_name, journal_path, SPACE, min_resource=3)
    run_search(worker_study, make_objective(calls, delay=0.02))
    Path(out_path).write_text(json.dumps(calls))
