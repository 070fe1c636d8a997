"""Running a study: trials are trainer run folders; the results table is rebuilt from them.

    outputs/<study>/
      grid/trials/<trial>/      one run folder per grid point (config.json ... summary.json)
      grid/results.parquet      one row per trial, rebuilt from the folders (never appended)
      grid/curves.parquet       every metrics line of every trial
      search/journal.log        Optuna's shared storage (several workers may join)
      search/trials/<trial>/    the pruned search's run folders, trained rung by rung
      lr_range/                 the LR range test's run folder

Re-running reuses a trial whose folder holds a finished result (completed, diverged or
unsupported) only when its config.json, and its inputs.json (data, checkpoint and code by
content, see records.run_inputs), equal what would run now; otherwise it is trained again and
the console says why ("data changed: manifest sha ... -> ...", "code changed: loss.py ...").
`keep_stale` keeps such a run on purpose: its reuse.json and its row in the tables say so.
A preempted trial resumes from its checkpoint (when nothing changed); a failed one reruns.
"""

from __future__ import annotations

import functools
import math
import re
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import config, launch, records
from mt5study.paths import OUTPUTS
from mt5study.studies.config import StudyParams, axis_keys, trial_name, trial_overrides, validate_trials

FINISHED = ("completed", "diverged", "unsupported")
SUMMARY_COLUMNS = ("status", "reason", "error", "steps", "tokens", "wall_seconds", "tokens_per_second",
                   "peak_memory_bytes", "final_train_loss", "final_eval_loss", "diverged_at_step",
                   "skipped_steps", "mfu", "engine", "fp16_engine")


def study_dir(params: StudyParams, out_dir: str | Path | None = None) -> Path:
    """The study's folder: `out_dir` when given (papermill's parameter), else outputs/<name>."""
    return Path(out_dir) if out_dir else OUTPUTS / params.study.name


def run_trial(out: Path, base_path: Path, overrides: dict[str, Any], redo: bool = False,
              extra_args: tuple[str, ...] = (), keep_stale: bool = False) -> dict[str, Any]:
    """Train one trial into `out`, or reuse it when its params, data, checkpoint and code all match
    what would run now (the console says which, and why not); a crash is recorded as failed.

    keep_stale: reuse a finished run even when they do not match; reuse.json then says so and
    every table that shows it carries the mark. Inputs that cannot be hashed (data or checkpoint
    gone) are a reason to rerun, never a match: the launch then fails naming them.
    """
    summary_path = out / "summary.json"
    prior = records.read_json(summary_path) if summary_path.exists() else None
    params = config.load(base_path, overrides or None)
    resumable = (out / "checkpoints").exists()
    try:
        wanted = records.run_inputs(params, out)
    except records.InputsError as e:
        finished = bool(prior) and prior.get("status") in FINISHED
        if finished and not keep_stale:
            raise  # a finished run whose inputs are gone: a named error, never a silent reuse
        if not finished:  # nothing to keep: record why it cannot run (the study goes on)
            records.write_json_atomic(summary_path, {"status": "failed", "error": f"InputsError: {e}"})
            records.record_decision(out, "trained", [f"inputs cannot be named: {e}"])
            return records.read_json(summary_path)
        wanted, reasons = None, [f"inputs cannot be named: {e}"]
    else:
        reasons = records.stale_reasons(out, config.to_dict(params), wanted) if prior or resumable else []
    finished = bool(prior) and prior.get("status") in FINISHED
    if finished and not redo and not extra_args:
        if records.reuse_or_redo(out, reasons, keep_stale, "params, data, checkpoint and code match"):
            return prior
    elif reasons:
        print(f"[rerun] {out}: {'; '.join(reasons)}", flush=True)
    redo = redo or bool(reasons)  # never resume or reuse a run of other params, data or code
    args = list(extra_args)
    if redo:
        args.append("--overwrite")
    elif prior and prior.get("status") == "preempted" or resumable:
        args.append("--resume")
    (out / records.INPUTS_FILE).unlink(missing_ok=True)  # describes the old run, not this one
    t0 = time.perf_counter()
    result = launch.run(base_path, out, overrides=overrides, extra_args=args, check=False)
    _record_timing(out, time.perf_counter() - t0)
    if result.get("status") == "failed" and not summary_path.exists():
        log = Path(result["log"]).read_text(encoding="utf-8", errors="replace")
        result["error"] = _last_error(log)
        records.write_json_atomic(summary_path, result)
    if wanted is not None and not (out / records.INPUTS_FILE).exists():  # a trainer that does not record them
        records.write_json_atomic(out / records.INPUTS_FILE, wanted)
    why = reasons or (["redo requested"] if redo else [f"previous attempt {prior.get('status')}"] if prior else ["no run yet"])
    records.record_decision(out, "trained", why)
    return records.read_json(summary_path)


TIMING_FILE = "trial_timing.json"


def _record_timing(out: Path, wall: float) -> None:
    """The trial's wall time as the study saw it, and the part outside the step loop (process
    start, imports, engine and data set-up, final save): the per-trial overhead."""
    path = out / "summary.json"
    loop = (records.read_json(path).get("timings_seconds") or {}).get("steps") if path.exists() else None
    timing: dict[str, Any] = {"wall_seconds": wall, "loop_seconds": loop}
    if loop is not None and wall > 0:
        timing.update(overhead_seconds=wall - loop, overhead_fraction=(wall - loop) / wall)
    records.write_json_atomic(out / TIMING_FILE, timing)


def overhead_line(timings: list[dict[str, Any]]) -> str | None:
    """'per-trial overhead: 2.1 s of 9.8 s (21 %) over 9 trials', from the trials' timings."""
    done = [t for t in timings if t.get("overhead_seconds") is not None]
    if not done:
        return None
    over, wall = sum(t["overhead_seconds"] for t in done), sum(t["wall_seconds"] for t in done)
    return (f"per-trial overhead: {over / len(done):.1f} s of {wall / len(done):.1f} s "
            f"({over / wall:.0%}) over {len(done)} trials trained now")


def _last_error(log: str) -> str:
    """The last exception line of a rank (not the launcher's ChildFailedError), without its prefix."""
    named = [re.sub(r"^\[rank\d+\]:\s*", "", ln.strip()) for ln in log.splitlines()
             if re.search(r"\w+(Error|Exception): \S", ln) and "ChildFailedError" not in ln]
    lines = named or [ln for ln in log.splitlines() if "Error" in ln or "error:" in ln]
    return lines[-1].strip()[:500] if lines else "launch failed (see launch.log)"


def side_by_side(jobs: list[Callable[[], Any]], concurrency: int) -> list[Any]:
    """Run `jobs` (each trains or reuses one run) `concurrency` at a time; results in job order.

    The callers check that every run is one process with its threads set (check_side_by_side).
    Each job waits on its own trial process from a worker thread, and a SIGUSR1/SIGTERM reaching
    the study goes on to every trial running (launch.forwarding_to_workers): each checkpoints."""
    if concurrency <= 1 or len(jobs) <= 1:
        return [job() for job in jobs]
    with launch.forwarding_to_workers(), ThreadPoolExecutor(max_workers=concurrency) as pool:
        futures = [pool.submit(job) for job in jobs]
        return [f.result() for f in futures]


def run_grid(params: StudyParams, source: str, out_dir: str | Path | None = None, redo: bool = False,
             keep_stale: bool = False) -> pd.DataFrame:
    """Train every grid point (validated first), then rebuild and return the results table."""
    base_path, trials = validate_trials(params, source)
    root = study_dir(params, out_dir) / "grid"
    name_ = params.study.name
    start, progress, timings, lock = time.monotonic(), {"started": 0, "trained": 0}, [], threading.Lock()

    def one(name: str, ov: dict[str, Any]) -> dict[str, Any]:
        with lock:
            progress["started"] += 1
            elapsed, done = time.monotonic() - start, progress["trained"]
            left = (f", {elapsed / 60:.1f} min so far, about "
                    f"{elapsed / done * (len(trials) - progress['started'] + 1) / 60:.1f} min left" if done else "")
            print(f"[{name_}] trial {progress['started']}/{len(trials)} {name}{left}", flush=True)
        folder = root / "trials" / name
        before = (folder / TIMING_FILE).stat().st_mtime_ns if (folder / TIMING_FILE).exists() else None
        s = run_trial(folder, base_path, ov, redo=redo, keep_stale=keep_stale)
        with lock:
            if (folder / TIMING_FILE).exists() and (folder / TIMING_FILE).stat().st_mtime_ns != before:
                progress["trained"] += 1  # trained now, not reused: counts for the pace and the overhead
                timings.append(records.read_json(folder / TIMING_FILE))
            print(f"[{name_}]   {name}: {s.get('status')} eval loss {records.loss_text(s.get('final_eval_loss'))}", flush=True)
        return s

    side_by_side([functools.partial(one, name, ov) for name, ov in trials], params.study.concurrency)
    if line := overhead_line(timings):
        print(f"[{name_}] {line}", flush=True)
    return results_table(root, axis_keys(params.study), names=[name for name, _ in trials])


def _axis_value(cfg: dict[str, Any], key: str) -> Any:
    node: Any = cfg
    for part in key.split("."):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def results_table(root: Path, axes: list[str], names: list[str] | None = None) -> pd.DataFrame:
    """One row per trial folder (sorted by trial; only `names` when given: folders of an earlier
    grid stay on disk but out of the table), written to results.parquet and curves.parquet."""
    rows, curves = [], []
    folders = sorted(p for p in (root / "trials").glob("*") if p.is_dir() and (names is None or p.name in names))
    for trial in folders:
        cfg = records.read_json(trial / "config.json") if (trial / "config.json").exists() else {}
        summary = records.read_json(trial / "summary.json") if (trial / "summary.json").exists() else {"status": "incomplete"}
        row: dict[str, Any] = {"trial": trial.name}
        for key in axes:
            row[key.split(".")[-1]] = _axis_value(cfg, key)
        if cfg:
            run = cfg["run"]
            row.update(seed=run.get("seed"), global_batch=run["micro_batch"] * run["grad_accum"] * run["nodes"] * run["processes_per_node"],
                       lr=cfg["optim"]["lr"], precision=run["precision"], zero_stage=run["zero_stage"])
        for col in SUMMARY_COLUMNS:
            row[col] = summary.get(col)
        timing = records.read_json(trial / TIMING_FILE) if (trial / TIMING_FILE).exists() else {}
        row.update(trial_wall_seconds=timing.get("wall_seconds"), overhead_fraction=timing.get("overhead_fraction"))
        row.update({k: v for k, v in records.provenance(trial).items() if k != "run"})  # data, code, machine, stale
        rows.append(row)
        for m in records.read_metrics(trial / "metrics.jsonl"):
            curves.append({"trial": trial.name, **{k: m.get(k) for k in
                           ("step", "tokens", "loss", "eval_loss", "lr", "grad_norm", "step_seconds",
                            "tokens_per_second", "peak_memory_bytes", "loss_scale", "skipped_steps")}})
    table = pd.DataFrame(rows)
    if not table.empty:
        table = table.loc[:, ~table.columns.duplicated()]
    _write_parquet_all([(table, root / "results.parquet"), (pd.DataFrame(curves), root / "curves.parquet")])
    return table


def _write_parquet(df: pd.DataFrame, path: Path) -> None:
    """Atomic Parquet write (temporary file, then rename)."""
    _write_parquet_all([(df, path)])


def _write_parquet_all(tables: list[tuple[pd.DataFrame, Path]]) -> None:
    """Write every table to a temporary file beside it (fsynced), then rename them all into place.

    A failure (a full disk, a read-only folder) removes the temporary files and leaves every
    previous table whole and consistent with the others; the OSError names the table not written.
    """
    import os
    import tempfile

    staged: list[tuple[str, Path]] = []
    try:
        for df, path in tables:
            path.parent.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            staged.append((tmp, path))
            try:
                with os.fdopen(fd, "wb") as f:
                    df.to_parquet(f, index=False)
                    f.flush()
                    os.fsync(f.fileno())
            except OSError as e:
                raise OSError(e.errno, f"{path} not written ({e.strerror or e}); the previous tables are kept") from e
    except BaseException:
        for tmp, _ in staged:
            Path(tmp).unlink(missing_ok=True)
        raise
    for tmp, path in staged:
        os.replace(tmp, path)


# The pruned search -------------------------------------------------------------------------

def _eval_at(out: Path, step: int) -> float:
    for m in records.read_metrics(out / "metrics.jsonl"):
        if m["step"] == step and m.get("eval_loss") is not None:
            return float(m["eval_loss"])
    return math.nan


def rung_examples(budget_examples: int, factor: int, n_rungs: int) -> list[int]:
    """Rungs in examples processed: the full budget and its 1/factor, 1/factor^2 ... fractions."""
    return [max(1, round(budget_examples / factor**k)) for k in reversed(range(n_rungs))]


def run_search(params: StudyParams, source: str, out_dir: str | Path | None = None,
               n_trials: int | None = None) -> pd.DataFrame:
    """Early-stopping search over the axes: trials train rung by rung, the pruner stops the bad.

    Rungs are measured in examples processed (steps x global batch), so a trial at batch 64 is
    compared with one at batch 16 after the same data, not after the same number of steps.
    """
    import hashlib
    import json

    from mt5study.studies import search

    study, cfg = params.study, params.study.search
    base_path, _ = validate_trials(params, source)
    base = config.load(base_path)
    root = study_dir(params, out_dir) / "search"
    root.mkdir(parents=True, exist_ok=True)
    budget_examples = study.budget_tokens // (base.data.input_length + base.data.target_length)
    points = rung_examples(budget_examples, cfg.reduction_factor, cfg.rungs)
    # One Optuna study per search setting: a changed grid, budget or pruner starts afresh in the
    # same journal instead of clashing with the old one.
    # Data and code count too: a search over other data or code must not resume old trials' values.
    inputs = records.run_inputs(base)
    setting = json.dumps([config.to_dict(params)["study"], config.to_dict(base),
                          inputs["data"]["sha256"], inputs["code"]["sha256"]], sort_keys=True)
    opt = search.make_study(
        f"{study.name}-{hashlib.sha256(setting.encode()).hexdigest()[:10]}", root / "journal.log",
        {k: list(v) for k, v in study.axes.items()}, sampler=cfg.sampler, pruner=cfg.pruner, seed=base.run.seed,
        min_resource=points[0], max_resource=points[-1], reduction_factor=cfg.reduction_factor,
        batch_key=None)  # resource = examples already: compute = examples processed

    def objective(values: dict[str, Any], report) -> float:
        ov = trial_overrides(study, base, values)
        batch = ov.get("run.global_batch") or config.load(base_path, ov).run.effective_global_batch
        total = ov["run.steps"]
        steps = sorted({min(total, max(1, round(e / batch))) for e in points[:-1]} | {total})
        ov["run.eval_steps"] = steps
        out = root / "trials" / trial_name({k: values[k] for k in study.axes})
        value = math.nan
        for r in steps:
            s = run_trial(out, base_path, ov, extra_args=() if r == total else ("--stop-at-step", str(r)))
            if s.get("status") in ("diverged", "failed", "unsupported"):
                return math.inf  # ranks last; its folder says why
            value = _eval_at(out, r)
            report(value, r * batch)
        return value

    search.run_search(opt, objective, n_trials=n_trials or cfg.n_trials)
    df = search.results(opt)
    _write_parquet(df, root / "search.parquet")
    return df


def grid_as_search_results(table: pd.DataFrame, axes: list[str]) -> pd.DataFrame:
    """The grid's results in the search's format, one row per grid point: state, value (the mean
    final eval loss over its completed seeds), compute (steps x batch summed over its seeds)."""
    rows = []
    cols = [k.split(".")[-1] for k in axes]
    for key, g in table.groupby(cols, sort=False):
        key = key if isinstance(key, tuple) else (key,)
        ok = g[(g["status"] == "completed") & g["final_eval_loss"].notna()]
        spent = float((g["steps"].fillna(0) * g["global_batch"]).sum())
        row = dict(zip(axes, key))
        row.update(state="COMPLETE" if not ok.empty else "FAIL",
                   value=float(ok["final_eval_loss"].mean()) if not ok.empty else None,
                   compute=spent, last_step=float((g["steps"].fillna(0) * g["global_batch"]).max()))
        rows.append(row)
    df = pd.DataFrame(rows)
    df.attrs["params"] = axes
    return df


def compare(grid: pd.DataFrame, search_results: pd.DataFrame, axes: list[str], tolerance: float = 0.01) -> dict[str, Any]:
    """Did the pruned search find the grid's best (same point, or eval loss within 1 % of the best
    mean over seeds), at what compute (the grid's over all its seeds)?"""
    from mt5study.studies.search import grid_vs_pruned

    return grid_vs_pruned(grid_as_search_results(grid, axes), search_results, tolerance=tolerance)
