"""Batch size x learning rate search that stops bad trials early, on a storage workers share.

Built on Optuna. `make_study` opens (or creates) a study in a journal file (`JournalStorage` with
a `JournalFileBackend`: an append-only log that several processes, on several nodes of a shared
file system, can use at once) or, for a path ending in .db/.sqlite, an SQLite `RDBStorage`.
The search space is categorical over the grid's values, so a pruned search visits the same
configurations as the exhaustive grid and the two can be compared point for point.

- sampler "grid": every grid point is enqueued once, in a seeded random order, by the process
  that creates the study; workers pop them from Optuna's queue, an atomic claim in the storage,
  so two workers never train the same point. "tpe": Optuna's TPE proposes configurations.
- pruner "successive_halving" (asynchronous successive halving, Li et al. 2018), "hyperband"
  (Li et al. 2017) or "none" (the exhaustive grid). Rungs are at min_resource x factor^k steps.

`run_search` calls `objective(params, report)`; the objective trains and calls
`report(value, step)` at its budget rungs (always also at its last step); `report` raises
`optuna.TrialPruned` when the pruner says stop. Each trial records its compute as last reported
step x the configuration's batch (examples processed; x tokens per example for tokens), so
`grid_vs_pruned` can say what fraction of the grid's compute a pruned search spent.
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

SAMPLERS = ("grid", "tpe")
PRUNERS = ("successive_halving", "hyperband", "none")
Objective = Callable[[dict[str, Any], Callable[[float, int], None]], float]
_ALIVE = (TrialState.WAITING, TrialState.RUNNING, TrialState.COMPLETE, TrialState.PRUNED)
_READY_TIMEOUT_S = 120.0  # how long a loading worker waits for the creator to fill the queue


def _storage(path: str | Path) -> optuna.storages.BaseStorage:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.suffix in (".db", ".sqlite", ".sqlite3"):
        return optuna.storages.RDBStorage(f"sqlite:///{path}")
    from optuna.storages.journal import JournalFileBackend, JournalStorage

    return JournalStorage(JournalFileBackend(str(path)))


def _check_space(search_space: Mapping[str, Sequence[Any]], batch_key: str | None) -> dict[str, list]:
    if not isinstance(search_space, Mapping) or not search_space:
        raise ValueError(f"search_space must be a non-empty mapping of name -> values, got {search_space!r}")
    space = {}
    for name, values in search_space.items():
        values = list(values) if isinstance(values, (list, tuple)) else None
        if not values or len(set(values)) != len(values) or not all(
                isinstance(v, (int, float, str)) and not isinstance(v, bool) for v in values):
            raise ValueError(f"search_space[{name!r}] must be a list of distinct numbers or strings, "
                             f"got {search_space[name]!r}")
        space[str(name)] = values
    if batch_key is not None and batch_key not in space:
        raise ValueError(f"batch_key {batch_key!r} is not in the search space {sorted(space)}")
    return space


def grid_points(search_space: Mapping[str, Sequence[Any]]) -> list[dict[str, Any]]:
    """Every configuration of a categorical search space, in row-major order."""
    points: list[dict[str, Any]] = [{}]
    for name, values in search_space.items():
        points = [{**p, name: v} for p in points for v in values]
    return points


def make_study(name: str, storage_path: str | Path, search_space: Mapping[str, Sequence[Any]],
               sampler: str = "grid", pruner: str = "successive_halving", seed: int = 0,
               min_resource: int = 1, max_resource: int | None = None, reduction_factor: int = 3,
               batch_key: str | None = "global_batch", fail_stale_running: bool = False) -> optuna.Study:
    """Create the study `name` in `storage_path`, or open it to resume or join as another worker.

    A worker joining an existing study must pass the same search space, sampler, pruner and
    batch_key (checked). For "tpe", give each parallel worker its own seed. With
    `fail_stale_running` (only when no other worker is alive, e.g. restarting a killed job),
    trials left RUNNING are marked failed; a "grid" study re-enqueues every point that has only
    failed trials, so a rerun finishes the grid instead of starting over.
    """
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; choose one of {SAMPLERS}")
    if pruner not in PRUNERS:
        raise ValueError(f"unknown pruner {pruner!r}; choose one of {PRUNERS}")
    if isinstance(min_resource, bool) or not isinstance(min_resource, int) or min_resource < 1:
        raise ValueError(f"min_resource must be an integer >= 1 (steps), got {min_resource!r}")
    if isinstance(reduction_factor, bool) or not isinstance(reduction_factor, int) or reduction_factor < 2:
        raise ValueError(f"reduction_factor must be an integer >= 2, got {reduction_factor!r}")
    if pruner == "hyperband" and (not isinstance(max_resource, int) or max_resource <= min_resource):
        raise ValueError(f"pruner 'hyperband' needs max_resource > min_resource (steps), "
                         f"got {max_resource!r}")
    space = _check_space(search_space, batch_key)
    settings = {"search_space": space, "sampler": sampler, "pruner": pruner, "batch_key": batch_key}

    opt_sampler = optuna.samplers.TPESampler(seed=seed) if sampler == "tpe" else \
        optuna.samplers.RandomSampler(seed=seed)  # grid: only used if the queue runs dry in a race
    if pruner == "successive_halving":
        opt_pruner = optuna.pruners.SuccessiveHalvingPruner(min_resource=min_resource,
                                                            reduction_factor=reduction_factor)
    elif pruner == "hyperband":
        opt_pruner = optuna.pruners.HyperbandPruner(min_resource=min_resource, max_resource=max_resource,
                                                    reduction_factor=reduction_factor)
    else:
        opt_pruner = optuna.pruners.NopPruner()

    storage = _storage(storage_path)
    try:
        study = optuna.create_study(study_name=name, storage=storage, sampler=opt_sampler,
                                    pruner=opt_pruner, direction="minimize")
    except optuna.exceptions.DuplicatedStudyError:
        study = optuna.load_study(study_name=name, storage=storage, sampler=opt_sampler, pruner=opt_pruner)
        _join(study, settings, storage_path, fail_stale_running)
        return study
    # This process created the study: record its settings and fill the grid queue, then flag it
    # ready so that workers loading it meanwhile do not start on a half-filled queue.
    study.set_user_attr("settings", json.dumps(settings, sort_keys=True))
    if sampler == "grid":
        points = grid_points(space)
        random.Random(seed).shuffle(points)  # no systematic order for successive halving to see
        for point in points:
            study.enqueue_trial(point)
    study.set_user_attr("ready", True)
    return study


def _join(study: optuna.Study, settings: dict, storage_path: str | Path, fail_stale: bool) -> None:
    deadline = time.monotonic() + _READY_TIMEOUT_S
    while not study.user_attrs.get("ready"):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{storage_path}: study {study.study_name!r} was created but never "
                               f"finished setting up (did its creator die?)")
        time.sleep(0.05)
    stored = json.loads(study.user_attrs["settings"])
    mine = json.loads(json.dumps(settings, sort_keys=True))  # same JSON round trip as stored
    diff = {k: (stored.get(k), mine[k]) for k in mine if stored.get(k) != mine[k]}
    if diff:
        raise ValueError(f"{storage_path}: study {study.study_name!r} exists with other settings "
                         f"(stored, given): {diff}")
    if fail_stale:
        for t in study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            study.tell(t.number, state=TrialState.FAIL)
    if stored["sampler"] == "grid":
        alive = {_key(_params(t)) for t in study.get_trials(deepcopy=False, states=_ALIVE)}
        for point in grid_points(stored["search_space"]):
            if _key(point) not in alive:
                study.enqueue_trial(point)


def _params(t: optuna.trial.FrozenTrial) -> dict[str, Any]:
    return t.params or t.system_attrs.get("fixed_params", {})


def _key(params: Mapping[str, Any]) -> tuple:
    return tuple(sorted(params.items()))


def _duplicate_of(study: optuna.Study, number: int, params: dict) -> optuna.trial.FrozenTrial | None:
    # The earliest-numbered live trial with the same configuration owns it; a later one is a
    # duplicate. Ordering by number breaks ties between two workers that raced to the same point.
    for t in study.get_trials(deepcopy=False, states=_ALIVE):
        if t.number < number and _key(_params(t)) == _key(params):
            return t
    return None


def _finish_duplicate(study: optuna.Study, trial: optuna.Trial, original: optuna.trial.FrozenTrial) -> None:
    trial.set_user_attr("duplicate_of", original.number)
    trial.set_user_attr("compute", 0)
    if original.state == TrialState.COMPLETE:  # same configuration, same result, no compute
        for step, value in sorted(original.intermediate_values.items()):
            trial.report(value, step)
        study.tell(trial, original.value)
    elif original.state == TrialState.PRUNED:
        for step, value in sorted(original.intermediate_values.items()):
            trial.report(value, step)
        study.tell(trial, state=TrialState.PRUNED)
    else:  # still queued or running elsewhere: nothing to copy yet
        study.tell(trial, state=TrialState.FAIL)


def _waiting(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=(TrialState.WAITING,)))


def run_search(study: optuna.Study, objective: Objective, n_trials: int | None = None):
    """Run trials of `study` in this process; returns `results(study)` when done.

    n_trials caps the trials this process runs; None (grid only) runs until the queue is empty.
    An exception from the objective marks its trial failed and is raised again.
    """
    settings = json.loads(study.user_attrs["settings"])
    space, batch_key = settings["search_space"], settings["batch_key"]
    if n_trials is None and settings["sampler"] != "grid":
        raise ValueError(f"n_trials=None runs until the grid is done; sampler "
                         f"{settings['sampler']!r} needs a number")
    if n_trials is not None and (isinstance(n_trials, bool) or not isinstance(n_trials, int) or n_trials < 0):
        raise ValueError(f"n_trials must be an integer >= 0 or None, got {n_trials!r}")
    ran = 0
    while n_trials is None or ran < n_trials:
        if settings["sampler"] == "grid" and _waiting(study) == 0:
            break
        trial = study.ask()
        params = {name: trial.suggest_categorical(name, values) for name, values in space.items()}
        original = _duplicate_of(study, trial.number, params)
        if original is not None:
            _finish_duplicate(study, trial, original)
            ran += settings["sampler"] != "grid"  # tpe: counts, so a repeating sampler still ends
            continue
        batch = params[batch_key] if batch_key is not None else 1

        def report(value: float, step: int, trial=trial, batch=batch) -> None:
            trial.report(float(value), step)
            trial.set_user_attr("last_step", step)
            trial.set_user_attr("compute", step * batch)  # examples processed (step x batch)
            if trial.should_prune():
                raise optuna.TrialPruned(f"pruned at step {step}")

        try:
            value = objective(dict(params), report)
        except optuna.TrialPruned:
            study.tell(trial, state=TrialState.PRUNED)
        except BaseException:
            study.tell(trial, state=TrialState.FAIL)
            raise
        else:
            study.tell(trial, float(value))
        ran += 1
    return results(study)


def results(study: optuna.Study):
    """One row per trial: number, state, the parameters, value, last_step, compute, duplicate_of."""
    import pandas as pd

    space = json.loads(study.user_attrs["settings"])["search_space"]
    rows = []
    for t in study.get_trials(deepcopy=False):
        params = _params(t)
        value = t.value if t.value is not None else (
            t.intermediate_values[max(t.intermediate_values)] if t.intermediate_values else None)
        rows.append({"number": t.number, "state": t.state.name, **{k: params.get(k) for k in space},
                     "value": value, "last_step": t.user_attrs.get("last_step"),
                     "compute": t.user_attrs.get("compute", 0),
                     "duplicate_of": t.user_attrs.get("duplicate_of")})
    df = pd.DataFrame(rows)
    df.attrs["params"] = list(space)
    return df


def grid_vs_pruned(grid_results, pruned_results, tolerance: float = 0.01) -> dict[str, Any]:
    """Did the pruned search find the grid's best (same point, or within `tolerance`), for what compute?"""
    grid, pruned = (r if hasattr(r, "columns") else results(r) for r in (grid_results, pruned_results))
    names = grid.attrs.get("params") or [c for c in grid.columns if c not in
                                         ("number", "state", "value", "last_step", "compute", "duplicate_of")]
    best = {}
    for label, df in (("grid", grid), ("pruned", pruned)):
        done = df[df.state == "COMPLETE"]
        if done.empty:
            raise ValueError(f"{label} results have no completed trial")
        row = done.loc[done.value.idxmin()]
        config = {k: row[k].item() if hasattr(row[k], "item") else row[k] for k in names}  # plain types
        best[label] = (config, float(row.value))
    (g_params, g_value), (p_params, p_value) = best["grid"], best["pruned"]
    grid_compute, pruned_compute = float(grid.compute.sum()), float(pruned.compute.sum())
    same = g_params == p_params
    close = abs(p_value - g_value) <= tolerance * abs(g_value)
    return {
        "grid_best": g_params, "grid_best_value": g_value,
        "pruned_best": p_params, "pruned_best_value": p_value,
        "same_config": same, "within_tolerance": close, "found_best": same or close,
        "grid_compute": grid_compute, "pruned_compute": pruned_compute,
        "compute_fraction": pruned_compute / grid_compute if grid_compute else float("nan"),
        "pruned_trials": int((pruned.state == "PRUNED").sum()),
        "completed_trials": int((pruned.state == "COMPLETE").sum()),
    }
