"""Write notebooks 02 (precision), 03 (batch x learning rate) and 05 (report)."""

from build import code, md, write

IMPORTS = """
from pathlib import Path

import pandas as pd
from IPython.display import display

from mt5study import config, paths, records
from mt5study.studies import figures, runner
"""

write("02_precision_study.ipynb", [
    md("""
# 02 — Precision × ZeRO stage

fp32, bf16 and fp16 under DeepSpeed ZeRO-0 and ZeRO-3, on the same data, seed and token budget:
wall time, tokens/s, peak memory, final train and eval loss, and divergence (the step of the
first NaN; fp16's skipped steps). Each trial is a full `mt5study` training run launched through
`accelerate launch`; its folder under `grid/trials/` says exactly what ran (`config.json`,
`env.json`, `metrics.jsonl`, `summary.json`). A precision the device cannot run is recorded as
`unsupported` with DeepSpeed's reason — on CPU, fp16. bf16's speed on a CPU depends on native
support (AVX512-BF16 or AMX: each trial's `env.json` records the CPU and torch's capability
level); without it bf16 is emulated and several times slower than fp32. Read CPU numbers as a
check of the pipeline and of numerics, and the GPU runs (`params/gpu/`) for speed.
"""),
    code(IMPORTS),
    code("""
params_path = "params/cpu/precision_smoke.yaml"  # relative to the repository root, or absolute
out_dir = None      # the study folder; by default outputs/STUDY_NAME
overrides = {}      # dotted overrides of the study file, e.g. {"study.budget_tokens": 6400}
redo = False        # retrain trials that already finished
keep_stale = False  # keep finished trials whose params, data or code changed (marked STALE below)
""", "parameters"),
    code("""
params_path = str(paths.find(params_path))
params = config.load(params_path, overrides)
root = runner.study_dir(params, out_dir)
print(params.study.name, "->", dict(params.study.axes), "budget", params.study.budget_tokens, "tokens per trial")
"""),
    md("Run every trial and rebuild the results table from the run folders. A finished trial is reused only when its params, data, checkpoint and code all match what would run now; otherwise it is retrained and the line above its result says why."),
    code("results = runner.run_grid(params, params_path, out_dir, redo=redo, keep_stale=keep_stale)"),
    md("What these numbers were computed from: the data's content sha, the trainer's code fingerprint and the machine, per trial (a banner leads if any trial was kept stale on purpose)."),
    code('''
print(records.provenance_note(root / "grid" / "trials"))
display(results[["trial", "data", "code", "machine", "stale"]])
'''),
    md("The outcome of each trial: stable at the default params (checked by nbval)."),
    code("""
table = figures.precision_table(results)
print(figures.stable_view(table).to_string())
""", "nbval-check-output"),
    md("With timings and memory (these vary from run to run):"),
    code("display(table)"),
    code("fig = figures.precision_bars(results)"),
    code("""
curves = figures.read(root / "grid", "curves")
fig = figures.loss_curves(curves, results, hue="precision", style="zero_stage")
"""),
])

write("03_batch_lr_study.ipynb", [
    md("""
# 03 — Global batch × learning rate, and how to find the best without paying for the grid

Every trial trains on the same token budget, so a bigger batch takes fewer optimizer steps.
Four measurements:

1. an **LR range test** at the base batch (Smith 2017): one short run with a geometrically
   growing learning rate;
2. the **exhaustive grid** of global batch × peak learning rate;
3. an **early-stopping search** over the same points with Optuna (successive halving on rungs
   measured in examples processed — 1/9, 1/3 and all of the budget by default — so trials of
   different batch sizes are compared after the same data; the journal file in `search/` lets
   Slurm array tasks share one study);
4. the **gradient noise scale** B_simple (McCandlish et al. 2018) on the best trial's weights at
   its start and end — an estimate of the critical batch size.

Then the comparison: did the pruned search find the grid's best (the same configuration, or an
eval loss within 1 %), and at what fraction of the grid's compute (examples processed)?
"""),
    code(IMPORTS + "from mt5study.studies import probes"),
    code("""
params_path = "params/cpu/batch_lr_smoke.yaml"  # relative to the repository root, or absolute
out_dir = None      # the study folder; by default outputs/STUDY_NAME
overrides = {}      # dotted overrides of the study file
redo = False        # retrain grid trials that already finished
keep_stale = False  # keep finished trials whose params, data or code changed (marked STALE below)
""", "parameters"),
    code("""
params_path = str(paths.find(params_path))
params = config.load(params_path, overrides)
root = runner.study_dir(params, out_dir)
axes = list(params.study.axes)
print(params.study.name, "->", dict(params.study.axes), "budget", params.study.budget_tokens, "tokens per trial")
"""),
    md("## 1. LR range test"),
    code("""
curve, suggestion = probes.lr_range_test(params, params_path, out_dir, keep_stale=keep_stale)
print({k: float(f"{v:.3g}") for k, v in suggestion.items()})
"""),
    code("fig = figures.lr_range_plot(curve, suggestion)"),
    md("## 2. The exhaustive grid"),
    code("grid = runner.run_grid(params, params_path, out_dir, redo=redo, keep_stale=keep_stale)"),
    code("""
cols = ["trial", "global_batch", "lr", "status", "steps", "final_eval_loss"]
print(grid[cols].round({"final_eval_loss": 4}).to_string())
""", "nbval-check-output"),
    md("What these numbers were computed from (data sha, code fingerprint, machine), per trial:"),
    code('''
print(records.provenance_note(root / "grid" / "trials"))
display(grid[["trial", "data", "code", "machine", "stale"]])
'''),
    code("""
display(grid[["trial", "wall_seconds", "tokens_per_second", "peak_memory_bytes"]])
fig = figures.loss_vs_lr(grid)
"""),
    code("""
curves = figures.read(root / "grid", "curves")
fig = figures.loss_curves(curves, grid, hue="lr", style="global_batch")
"""),
    md("Time to a target loss: the first step and token count at which each trial's eval loss reached the median final eval loss of the grid."),
    code("""
target = float(grid.loc[grid.status == "completed", "final_eval_loss"].median())
print(f"target eval loss {target:.4f}")
display(figures.time_to_target(curves, grid, target))
"""),
    md("## 3. The early-stopping search, and the comparison"),
    code("""
search = runner.run_search(params, params_path, out_dir)
print(search[["number", "state", *axes, "value", "last_step", "compute"]].round({"value": 4}).to_string())
"""),
    code("""
comparison = runner.compare(grid, search, axes)
print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in comparison.items()})
""", "nbval-check-output"),
    code("fig = figures.compute_spent(runner.grid_as_search_results(grid, axes), search)"),
    md("## 4. Gradient noise scale of the grid's best trial"),
    code("""
best = grid.loc[grid.loc[grid.status == "completed", "final_eval_loss"].idxmin(), "trial"]
noise = probes.gradient_noise_scale(params, params_path, root / "grid" / "trials" / best)
display(noise)
"""),
])

write("05_report.ipynb", [
    md("""
# 05 — Report: what to run for the 13B model

Reads only the results tables of the other notebooks' studies (no training here): the best
precision, the best batch and learning rate, the memory table for mT5-XXL, and the
recommendations that follow. It refuses to compare studies whose runs were computed from
different data or code (naming the difference) unless `allow_mixed`, and its first lines say
what the numbers were computed from.
"""),
    code(IMPORTS + "from mt5study import memory\nfrom mt5study.studies import report"),
    code("""
precision_dir = "outputs/precision_smoke"   # notebook 02's study folder (relative to the repository root)
batch_lr_dir = "outputs/batch_lr_smoke"     # notebook 03's study folder
qa_dir = "outputs/qa_smoke"                 # notebook 04's study folder (skipped when absent)
out_dir = None                              # where report.json goes; by default outputs/report
gpu_gib = [40, 80]                                       # GPU memory sizes for the fits table
allow_mixed = False                         # compare studies run on different data or code (refused otherwise)
""", "parameters"),
    code("""
precision_dir, batch_lr_dir = paths.find(precision_dir), paths.find(batch_lr_dir)
findings = report.findings(precision_dir, batch_lr_dir, allow_mixed=allow_mixed)
findings["qa"] = report.qa_findings(paths.find(qa_dir))
print(report.describe(findings))
"""),
    md("## The models\n\nThe presets of `mt5study.model`: `mt5-*` match Google's released mT5 checkpoints parameter for parameter (untied output layer, gated-GELU, 250,112-token vocabulary)."),
    code("print(report.presets_table().to_string())", "nbval-check-output"),
    md("## Memory: the model beside the measured peaks\n\nThe memory model (`mt5study.memory.estimate`) for each completed precision trial, DeepSpeed's own model-state estimator (ZeRO-2/3 only), and the measured peak. On CPU the measured peak is the process's resident set, which also holds the Python/torch runtime and the dataset."),
    code("display(report.memory_vs_measured(precision_dir))"),
    md("## Memory: which settings fit mT5-XXL (12.9B parameters) on N GPUs"),
    code("""
fits = memory.fits_table("mt5-xxl", gpu_gib=tuple(gpu_gib))
display(report.fits_summary(fits))
"""),
    md("## Recommendations for the 13B run"),
    code("""
print(report.recommend(findings, fits))
report.save(findings, fits, out_dir)
"""),
])
print("wrote notebooks 02, 03, 05")
