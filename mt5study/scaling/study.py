"""The scaling study end to end, every trial through the studies runner.

    outputs/<name>/
      sizes/<size>/grid/{trials,results.parquet,curves.parquet}   one batch x lr grid per size
      sizes/<size>/search/                                        optional pruned search (search_sizes)
      prediction.json        the held-out size's predicted optimum, written BEFORE its grid runs
      holdout/grid/          the trial at the predicted point
      steptime/trials/       one run per (world size, ZeRO stage); steptime.json (measured link, peak)
      tables/*.parquet       what `tables.report_tables` returns; scaling.json the headline numbers

Order: validate every trial of every size -> the sizes to fit -> fits and the prediction ->
the held-out size's grid and the predicted point -> the gap -> the workers axis -> the
recommendation. Reruns reuse finished trials (the runner's rules); progress lines name the size,
the trials done and an estimate of the time left.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from mt5study import config, records
from mt5study.config import ConfigError
from mt5study.paths import OUTPUTS
from mt5study.scaling import fits
from mt5study.scaling.budget import budget_tokens, flops_per_token, non_embedding_parameters
from mt5study.scaling.config import ScalingParams, holdout
from mt5study.studies import runner
from mt5study.studies.config import StudyParams, resolve, validate_trials


def study_dir(params: ScalingParams, out_dir: str | Path | None = None) -> Path:
    return Path(out_dir) if out_dir else OUTPUTS / params.scaling.name


def _base(params: ScalingParams):
    return config.load(resolve(params.scaling.base), params.scaling.fixed or None)


def size_info(params: ScalingParams) -> pd.DataFrame:
    """Per size: non-embedding parameters, FLOPs per token, tokens per trial and compute per trial."""
    s, base = params.scaling, _base(params)
    li, lt, v = base.data.input_length, base.data.target_length, base.model.vocab_size
    rows = []
    for size in s.sizes:
        tokens = budget_tokens(s.budget, size, li, lt, v)
        fpt = flops_per_token(size, li, lt, v)
        rows.append({"size": size, "parameters": non_embedding_parameters(size), "flops_per_token": fpt,
                     "tokens": tokens, "compute": tokens * fpt, "held_out": size == holdout(s)})
    return pd.DataFrame(rows)


def size_axes(params: ScalingParams, size: str) -> dict[str, list]:
    """The batch x lr grid of one size: the params' axes, lr scaled by width^-exponent with lr_by_width."""
    s = params.scaling
    axes = {k: list(v) for k, v in s.axes.items()}
    if s.lr_by_width:
        from mt5study.model import PRESETS as DIMS

        ratio = (DIMS[s.sizes[0]]["d_model"] / DIMS[size]["d_model"]) ** s.lr_width_exponent
        axes["optim.lr"] = [float(f"{v * ratio:.3g}") for v in axes["optim.lr"]]
    return axes


def size_study(params: ScalingParams, size: str, source: str) -> StudyParams:
    """The batch x lr grid of one size as a studies-runner study (its own axes and budget)."""
    s = params.scaling
    info = size_info(params).set_index("size").loc[size]
    doc = {"study": {"name": f"{s.name}-{size}", "base": s.base, "axes": size_axes(params, size),
                     "budget_tokens": int(info["tokens"]), "fixed": {**s.fixed, "model.preset": size},
                     "concurrency": s.concurrency}}
    if s.search is not None and size in s.search_sizes:
        doc["study"]["search"] = config.to_dict(s.search)
    return config.validate(doc, f"{source}: size {size}", StudyParams)


def validate_all(params: ScalingParams, source: str) -> dict[str, StudyParams]:
    """Every trial of every size validated (and long enough) before anything trains."""
    s, base = params.scaling, _base(params)
    per_example = base.data.input_length + base.data.target_length
    studies = {}
    for size in s.sizes:
        sp = size_study(params, size, source)
        validate_trials(sp, source)
        steps = sp.study.budget_tokens // (max(s.axes["run.global_batch"]) * per_example)
        if steps < s.budget.min_steps:
            raise ConfigError(f"{source}: scaling.budget: size {size} gets {sp.study.budget_tokens} tokens, "
                              f"{steps} steps at batch {max(s.axes['run.global_batch'])} "
                              f"(< budget.min_steps {s.budget.min_steps})")
        studies[size] = sp
    return studies


def run_sizes(params: ScalingParams, source: str, sizes: list[str], out_dir=None, redo: bool = False,
              keep_stale: bool = False) -> pd.DataFrame:
    """Run the grid (and the pruned search where asked) of each size; one results table."""
    studies, root = validate_all(params, source), study_dir(params, out_dir)
    tables, start = [], time.monotonic()
    for k, size in enumerate(sizes):
        done = time.monotonic() - start
        left = f", about {done / k * (len(sizes) - k) / 60:.0f} min left (at this pace)" if k else ""
        print(f"[{params.scaling.name}] size {k + 1}/{len(sizes)} {size}: "
              f"{studies[size].study.budget_tokens} tokens per trial{left}", flush=True)
        table = runner.run_grid(studies[size], source, root / "sizes" / size, redo=redo, keep_stale=keep_stale)
        if size in params.scaling.search_sizes:
            runner.run_search(studies[size], source, root / "sizes" / size)
        tables.append(table.assign(size=size))
    return pd.concat(tables, ignore_index=True) if tables else pd.DataFrame()


def read_results(params: ScalingParams, out_dir=None, sizes: list[str] | None = None) -> pd.DataFrame:
    """The sizes' results tables as written by the runner (no training)."""
    root = study_dir(params, out_dir)
    frames = []
    for size in sizes or params.scaling.sizes:
        path = root / "sizes" / size / "grid" / "results.parquet"
        if path.exists():
            frames.append(pd.read_parquet(path).assign(size=size))
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame()


def _completed(results: pd.DataFrame, size: str) -> pd.DataFrame:
    rows = results[(results["size"] == size)] if not results.empty else results
    ok = rows[(rows["status"] == "completed") & rows["final_eval_loss"].notna()] if not rows.empty else rows
    if ok.empty:
        raise fits.FitError(f"size {size}: no completed trial to fit (run its grid first)")
    return ok


def optima(params: ScalingParams, results: pd.DataFrame, sizes: list[str]) -> tuple[pd.DataFrame, dict]:
    """Per size the smooth optimum (eta*, B* in examples and tokens per step), its edge flags and
    its bootstrap replicates; a size with no completed trial is a FitError naming it."""
    s, base = params.scaling, _base(params)
    per_example = base.data.input_length + base.data.target_length
    info = size_info(params).set_index("size")
    rows, reps = [], {}
    for size in sizes:
        ok = _completed(results, size)
        surf = fits.fit_surface(ok["lr"], ok["global_batch"], ok["final_eval_loss"], label=f"size {size}")
        boot = fits.bootstrap_optima(surf, s.fit.bootstrap, seed=s.fit.seed)
        reps[size] = (surf, boot)
        q = (1 - s.fit.confidence) / 2
        rows.append({"size": size, **info.loc[size][["parameters", "tokens", "compute"]].to_dict(),
                     "lr_opt": surf.lr, "lr_low": float(np.quantile(boot[:, 0], q)),
                     "lr_high": float(np.quantile(boot[:, 0], 1 - q)),
                     "batch_opt": surf.batch, "batch_low": float(np.quantile(boot[:, 1], q)),
                     "batch_high": float(np.quantile(boot[:, 1], 1 - q)),
                     "batch_tokens_opt": surf.batch * per_example,
                     "batch_tokens_low": float(np.quantile(boot[:, 1], q)) * per_example,
                     "batch_tokens_high": float(np.quantile(boot[:, 1], 1 - q)) * per_example, "loss_opt": surf.loss,
                     "grid_best_lr": surf.grid_best["lr"], "grid_best_batch": surf.grid_best["batch"],
                     "grid_best_loss": surf.grid_best["loss"], "trials": len(ok), "fitted_points": surf.points,
                     "residual_sd": surf.residual_sd, "edge": "; ".join(surf.edge)})
    return pd.DataFrame(rows), reps


def power_laws(params: ScalingParams, table: pd.DataFrame, reps: dict) -> dict[str, fits.PowerLaw]:
    """eta* and B* (tokens per step) as power laws of the configured x, bootstrap replicates refitted."""
    s = params.scaling
    per_example = _per_example(params)
    sizes = list(table["size"])
    if len(sizes) < 3:
        raise fits.FitError(f"power laws need >= 3 fitted sizes, got {sizes}")
    lr_reps = np.stack([reps[z][1][:, 0] for z in sizes], axis=1)
    b_reps = np.stack([reps[z][1][:, 1] * per_example for z in sizes], axis=1)
    return {"lr": fits.fit_power_law("lr", table[s.fit.lr_x], table["lr_opt"], lr_reps, s.fit.confidence),
            "batch_tokens": fits.fit_power_law("batch_tokens", table[s.fit.batch_x], table["batch_tokens_opt"],
                                               b_reps, s.fit.confidence)}


def _per_example(params: ScalingParams) -> int:
    base = _base(params)
    return base.data.input_length + base.data.target_length


def law_table(laws: dict[str, fits.PowerLaw], params: ScalingParams) -> pd.DataFrame:
    xs = {"lr": params.scaling.fit.lr_x, "batch_tokens": params.scaling.fit.batch_x}
    rows = []
    for name, law in laws.items():
        lo, hi = law.interval("b")
        alo, ahi = law.interval("a")
        rows.append({"quantity": {"lr": "eta*", "batch_tokens": "B* (tokens/step)"}[name], "x": xs[name],
                     "exponent": law.b, "exponent_low": lo, "exponent_high": hi, "prefactor": law.a,
                     "prefactor_low": alo, "prefactor_high": ahi, "x_min": law.x_range[0], "x_max": law.x_range[1],
                     "confidence": law.confidence})
    return pd.DataFrame(rows)


def predict_size(params: ScalingParams, laws: dict[str, fits.PowerLaw], size: str) -> dict[str, Any]:
    """eta* and B* of `size` from the laws, with intervals and the extrapolation mark."""
    s = params.scaling
    info = size_info(params).set_index("size").loc[size]
    lr = laws["lr"].predict(float(info[s.fit.lr_x]))
    bt = laws["batch_tokens"].predict(float(info[s.fit.batch_x]))
    per_example = _per_example(params)
    return {"size": size, "lr": lr, "batch_tokens": bt,
            "batch": {k: (v / per_example if k in ("value", "low", "high") else v) for k, v in bt.items()}}


def valid_batch(params: ScalingParams, batch: float) -> int:
    """The nearest global batch a trial can run: a multiple of micro-batch x world size."""
    run = _base(params).run
    step = run.micro_batch * run.world_size
    return max(step, int(round(batch / step)) * step)


def holdout_proof(params: ScalingParams, source: str, out_dir=None, redo: bool = False,
                  keep_stale: bool = False) -> dict[str, Any]:
    """Fit every size but the held-out one, predict it, then measure it: its grid, the predicted
    point trained as a trial, the gap in eval loss to the grid's best and where the point falls."""
    s, root = params.scaling, study_dir(params, out_dir)
    held = holdout(s)
    fit_sizes = [z for z in s.sizes if z != held]
    validate_all(params, source)
    run_sizes(params, source, fit_sizes, out_dir, redo, keep_stale)
    results = read_results(params, out_dir, fit_sizes)
    table, reps = optima(params, results, fit_sizes)
    laws = power_laws(params, table, reps)
    pred = predict_size(params, laws, held)
    pred["made_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    pred["fitted_on"] = fit_sizes
    records.write_json_atomic(root / "prediction.json", pred)  # before the held-out grid runs
    run_sizes(params, source, [held], out_dir, redo, keep_stale)
    lr_p = float(f"{pred['lr']['value']:.3g}")
    b_p = valid_batch(params, pred["batch"]["value"])
    point = config.validate({"study": {"name": f"{s.name}-predicted", "base": s.base,
                                       "axes": {"run.global_batch": [b_p], "optim.lr": [lr_p]},
                                       "budget_tokens": int(size_info(params).set_index("size").loc[held, "tokens"]),
                                       "fixed": {**s.fixed, "model.preset": held}}}, source, StudyParams)
    print(f"[{s.name}] predicted point of {held}: global batch {b_p}, lr {lr_p:g}", flush=True)
    ptab = runner.run_grid(point, source, root / "holdout", redo=redo, keep_stale=keep_stale)
    held_results = read_results(params, out_dir, [held])
    held_table, held_reps = optima(params, held_results, [held])
    surf = held_reps[held][0]
    ok = _completed(held_results, held)
    measured = float(ptab["final_eval_loss"].iloc[0]) if ptab["status"].iloc[0] == "completed" else math.nan
    best = float(ok["final_eval_loss"].min())
    grid_lr, grid_b = sorted(set(ok["lr"])), sorted(set(ok["global_batch"]))
    proof = {"size": held, "fitted_on": fit_sizes, "predicted_lr": lr_p, "predicted_batch": b_p,
             "predicted_lr_interval": [pred["lr"]["low"], pred["lr"]["high"]],
             "predicted_batch_interval": [pred["batch"]["low"], pred["batch"]["high"]],
             "extrapolation": bool(pred["lr"]["extrapolation"] or pred["batch"]["extrapolation"]),
             "loss_at_prediction": measured, "grid_best_loss": best,
             "grid_best": {"lr": float(ok.loc[ok["final_eval_loss"].idxmin(), "lr"]),
                           "global_batch": int(ok.loc[ok["final_eval_loss"].idxmin(), "global_batch"])},
             "gap_percent": (measured - best) / best * 100,
             "surface_at_prediction": float(surf.predict(lr_p, b_p)[0]),
             "surface_optimum": {"lr": surf.lr, "batch": surf.batch, "loss": surf.loss},
             "inside_grid": bool(grid_lr[0] <= lr_p <= grid_lr[-1] and grid_b[0] <= b_p <= grid_b[-1]),
             "rank_among_grid": int((ok["final_eval_loss"] < measured).sum()) + 1, "grid_trials": len(ok),
             "held_out_edge": held_table["edge"].iloc[0]}
    records.write_json_atomic(root / "holdout.json", proof)
    return {"fit_table": table, "laws": laws, "prediction": pred, "proof": proof}


def frontier_table(params: ScalingParams, out_dir=None) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Every trial's training curve as loss vs model FLOPs, and their lower envelope."""
    root, info = study_dir(params, out_dir), size_info(params).set_index("size")
    frames = []
    for size in params.scaling.sizes:
        path = root / "sizes" / size / "grid" / "curves.parquet"
        if path.exists():
            c = pd.read_parquet(path)
            if not c.empty:
                frames.append(c.assign(size=size, compute=c["tokens"] * info.loc[size, "flops_per_token"]))
    curves = pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["compute", "loss", "size"])
    return curves, fits.frontier(curves)


def trial_overhead(results: pd.DataFrame) -> dict[str, Any]:
    """The study's per-trial overhead (outside the step loop) as a fraction of the trials' wall time."""
    if results.empty or "overhead_fraction" not in results:
        return {"trials": 0, "fraction": None}
    t = results.dropna(subset=["overhead_fraction", "trial_wall_seconds"])
    wall = float(t["trial_wall_seconds"].sum())
    over = float((t["overhead_fraction"] * t["trial_wall_seconds"]).sum())
    return {"trials": len(t), "wall_seconds": wall, "overhead_seconds": over,
            "fraction": over / wall if wall > 0 else None}


def write_tables(root: Path, tables: dict[str, pd.DataFrame], summary: dict[str, Any]) -> None:
    (root / "tables").mkdir(parents=True, exist_ok=True)
    for name, df in tables.items():
        runner._write_parquet(df, root / "tables" / f"{name}.parquet")
    records.write_json_atomic(root / "scaling.json", json.loads(json.dumps(summary, default=float)))


def run_study(params: ScalingParams, source: str, out_dir=None, redo: bool = False,
              keep_stale: bool = False) -> dict[str, Any]:
    """The whole study: held-out proof, fits on every size, workers axis, recommendation, tables."""
    from mt5study.scaling import recommend, workers

    s, root = params.scaling, study_dir(params, out_dir)
    start = time.monotonic()
    proof = holdout_proof(params, source, out_dir, redo, keep_stale)
    all_table, all_reps = optima(params, read_results(params, out_dir), s.sizes)
    laws = power_laws(params, all_table, all_reps)  # every size, for the recommendation
    tables = {"sizes": size_info(params), "optima": all_table, "laws": law_table(laws, params),
              "holdout": pd.DataFrame([{k: v for k, v in proof["proof"].items() if not isinstance(v, (dict, list))}])}
    summary: dict[str, Any] = {"holdout": proof["proof"], "laws": tables["laws"].to_dict("records"),
                               "laws_without_holdout": law_table(proof["laws"], params).to_dict("records")}
    if s.steptime is not None:
        runs = workers.run_workers(params, root, redo, keep_stale)
        inputs = workers.measure_inputs(params, root, [int(w) for w in runs["world_size"]])
        tables["steptime"] = workers.validate(params, runs, inputs)
        summary["steptime"] = tables["steptime"][["world_size", "zero_stage", "step_seconds", "predicted_step_seconds",
                                                  "error_percent", "calibrated", "gather_ms"]].to_dict("records")
    if s.recommend is not None:
        tables["recommendation"], tables["days"] = recommend.recommend(s.recommend, laws, s.fit.lr_x, s.fit.batch_x)
    summary["trial_overhead"] = trial_overhead(read_results(params, out_dir))
    summary["wall_seconds"] = time.monotonic() - start
    write_tables(root, tables, summary)
    return {"tables": tables, "laws": laws, "proof": proof, "summary": summary}
