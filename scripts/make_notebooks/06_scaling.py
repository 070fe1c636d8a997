"""Write notebook 06 (scaling: the optimum's power laws, the held-out proof, workers, the recipe)."""

from build import code, md, write

write("06_scaling.ipynb", [
    md("""
# 06 — Scaling: how the best learning rate and batch move with model size

A batch × learning-rate grid at 13B parameters would cost thousands of GPU-hours per point. The
study instead measures the optimum on a ladder of small mT5s (`mt5study/ladder.py`: one shape rule,
gated-GELU, untied head, relative position buckets, the ETL's vocabulary), fits how it moves with
size, and **proves the fit on a size it did not see**: every size but the largest is fitted, the
largest size's optimum is predicted (and written down) before its grid runs, then its full grid
and the predicted point are trained. Then the workers axis: step time and memory at 1 and 2 ranks
under ZeRO 0–3 against a step-time model, and the recipe for mt5-small … mt5-xxl.

Each trial is a run folder of the studies runner (`sizes/<size>/grid/trials/…`), reused when its
params, data and code match.
"""),
    code("""
from IPython.display import display
import pandas as pd

from mt5study import paths
from mt5study.scaling import config as scaling_config, figures, study, tables as tables_lib
"""),
    code("""
params_path = "params/cpu/scaling_smoke.yaml"  # relative to the repository root, or absolute
out_dir = None      # the study folder; by default outputs/SCALING_NAME
overrides = {}      # dotted overrides, e.g. {"scaling.fit.bootstrap": 100}
redo = False        # retrain trials that already finished
keep_stale = False  # keep finished trials whose params, data or code changed (marked stale)
""", "parameters"),
    code("""
params_path = str(paths.find(params_path))
params = scaling_config.load(params_path, overrides)
root = study.study_dir(params, out_dir)
s = params.scaling
print(s.name, "| sizes", s.sizes, "| held out", scaling_config.holdout(s), "| budget", s.budget.rule)
"""),
    md("""
## 1. The ladder and the token budget

Non-embedding parameters, FLOPs per token (matmuls, forward + backward), tokens per trial by the
stated rule, model FLOPs per trial, and each size's grid: with `lr_by_width` the learning rates
scale as d_model^-k (`lr_width_exponent` k; k = 1 is μP's rule for Adam), so one grid ratio can
bracket every size's optimum. The held-out size is the largest.
"""),
    code("""
sizes = study.size_info(params)
grids = {z: study.size_axes(params, z) for z in sizes["size"]}
print(sizes.assign(flops_per_token=sizes.flops_per_token.round(-3), compute=sizes.compute.map("{:.3g}".format),
                   lr_grid=[grids[z]["optim.lr"] for z in sizes["size"]],
                   batch_grid=[grids[z]["run.global_batch"] for z in sizes["size"]]).to_string(index=False))
""", "nbval-check-output"),
    md("""
## 2. Train and fit

The whole study in one call: the fitted sizes' grids, the fits and the prediction
(`prediction.json`, written before the held-out grid runs), the held-out grid and the predicted
point, the fits on every size, the workers axis, and the recipe. Progress lines name the size,
the trial and the time left.
"""),
    code("result = study.run_study(params, params_path, out_dir, redo=redo, keep_stale=keep_stale)"),
    code("""
tables = result["tables"]
readable = tables_lib.for_readers(root)  # the tables run_study wrote, formatted for the page
results = study.read_results(params, out_dir)
g = figures.surfaces(results)
"""),
    md("""
*Final eval loss against peak learning rate, one line per global batch, one panel per size.* A
size whose lines turn up on both sides of its best learning rate has its optimum bracketed; a
minimum at the first or last point means the grid should be extended (flagged below).
"""),
    md("""
## 3. The optimum per size

η\\* and B\\* are the minimum of a quadratic fitted in (log η, log B), not the grid's best point;
their intervals come from a residual bootstrap of that fit. `edge` says when a grid does not
bracket its optimum.
"""),
    code("""
opt = tables["optima"]
display(readable["optima"])
print(figures.edge_note(opt))
"""),
    md("## 4. Power laws of the optimum"),
    code("display(readable['laws'])"),
    code("""
laws = result["laws"]
fig = figures.law(opt, laws, "lr", s.fit.lr_x, "lr_opt", "lr_low", "lr_high", "eta* (peak learning rate)")
"""),
    md("""
*η\\* of every size (bootstrap intervals) against the fitted power law and its band.* The exponent
says how fast the best learning rate falls with size; the band is where the recipe's learning rate
for a new size is expected.
"""),
    code("""
fig = figures.law(opt, laws, "batch_tokens", s.fit.batch_x, "batch_tokens_opt", "batch_tokens_low",
                  "batch_tokens_high", "B* (tokens per step)")
"""),
    md("""
*B\\* in tokens per step against the fitted law.* Transferred in tokens, not examples, so that a
run with other sequence lengths can use it.
"""),
    md("""
## 5. The held-out proof

Fitted without the largest size, the laws predicted its optimum; that point was then trained like
any trial. The gap is its final eval loss against the best of the held-out grid (goal: ≤ 1 %).
"""),
    code("""
proof = result["proof"]["proof"]
print(figures.holdout_sentence(proof))
display(readable["holdout"])
"""),
    md("## 6. The loss–compute frontier"),
    code("""
curves, front = study.frontier_table(params, out_dir)
fig = figures.frontier(curves, front)
"""),
    md("""
*Every trial's training loss against model FLOPs (coloured by size) and their lower envelope.*
Where a bigger size's curves reach below the smaller sizes', spending the compute on the bigger
model pays.
"""),
    md("""
## 7. The workers axis: step time against ranks and ZeRO stage

One short run per (world size, ZeRO stage) at the same micro-batch and the same CPU threads per
rank. The model's inputs are measured now (matmul FLOP/s at a rank's threads; gloo all-reduce
bandwidth and latency). Two numbers are calibrated on 1-rank runs (`calibrated`): MFU on ZeRO-0,
and the software cost of one ZeRO-3 module gather on ZeRO-3 (`gather_ms`: DeepSpeed's fetch and
release hooks, paid at any world size). Every 2-rank run is predicted, not fitted.
"""),
    code("""
if "steptime" in tables:
    display(readable["steptime"])
    fig = figures.steptime_bars(tables["steptime"])
"""),
    md("""
*Measured and predicted seconds per step.* ZeRO-3 gathers every module's parameters in forward
and backward: on one machine's gloo the bytes cost little, the per-module software and latency
most, and that term grows with the number of modules (depth), not with their size.
"""),
    md("""
## 8. The recipe for the cluster

Per mt5-\\* preset at the token budget in the params: η\\* and B\\* from the laws fitted on every size
(intervals; `extrapolation` marks sizes beyond the ladder, which is all of them), the micro-batch
and ZeRO plan that fit each GPU (`mt5study.memory.estimate`, bf16, activation checkpointing), and
the predicted days on N nodes from the step-time model.
"""),
    code("""
if "recommendation" in tables:
    with pd.option_context("display.max_columns", 40, "display.width", 200):
        display(readable["recommendation"])
        display(readable["days"])
"""),
])
print("wrote notebook 06")
