"""Write notebooks 02 (precision), 03 (batch x learning rate) and 05 (report)."""

from build import code, md, write

IMPORTS = """
import warnings

warnings.filterwarnings("ignore", message="IProgress not found")  # tqdm's notebook fallback: noise on the page

from pathlib import Path

import pandas as pd
from IPython.display import Markdown, display

from mt5study import config, paths, records
from mt5study.studies import figures, report, runner
"""

write("02_precision_study.ipynb", [
    md("""
# 02 — Precision × ZeRO stage

fp32, bf16 and fp16 under DeepSpeed ZeRO-0 and ZeRO-3, on the same data and token budget, each
setting trained once per seed (`run.seed` draws the initial weights and the data order): wall
time, tokens/s, peak memory, final train and eval loss, and divergence (the step of the first
NaN; fp16's skipped steps). Each trial is a full `mt5study` training run; its folder under
`grid/trials/` says exactly what ran (`config.json`, `env.json`, `metrics.jsonl`,
`summary.json`). A precision the device cannot run is recorded as `unsupported` with the reason.
bf16's speed on a CPU depends on native support (AVX512-BF16 or AMX: each trial's `env.json`
records the CPU); without it bf16 is emulated and several times slower than fp32. Read CPU
numbers for numerics (does the loss follow fp32?), and the GPU runs (`params/gpu/`) for speed.
Every compared number is a mean over seeds with its standard deviation and n; the verdicts at
the end are computed from them with the test they name.
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
print(params.study.name, "->", dict(params.study.axes), "seeds", params.study.seeds or "one (the base file's)",
      "budget", params.study.budget_tokens, "tokens per trial")
"""),
    md("Run every trial and rebuild the results table from the run folders. A finished trial is reused only when its params, data, checkpoint and code all match what would run now; otherwise it is retrained (the run's log, left off the published page, says why; each folder's `reuse.json` keeps it)."),
    code("results = runner.run_grid(params, params_path, out_dir, redo=redo, keep_stale=keep_stale)", "hide-output"),
    md("What these numbers were computed from: the data's content sha, the trainer's code fingerprint and the machine, per trial (a banner leads if any trial was kept stale on purpose)."),
    code('''
print(records.provenance_note(root / "grid" / "trials"))
display(results[["trial", "data", "code", "machine", "stale"]])
'''),
    md("## Results over seeds\n\nPer precision and ZeRO stage: final eval and train loss as mean ± sd over the seeds that completed (n), how many diverged or could not run, and the mean wall time, speed and peak memory. The loss columns, rounded to 2 decimals, are checked by nbval."),
    code("""
summary = figures.summary_table(results, ["precision", "zero_stage"])
print(figures.stable_view(summary.drop(columns=["± sd (eval)", "± sd (train)"]))
      .round({"final eval loss": 2, "final train loss": 2}).to_string(index=False))
""", "nbval-check-output"),
    code("display(figures.for_people(summary))"),
    md("Every trial (one row per seed):"),
    code("display(figures.for_people(figures.precision_table(results)))"),
    code("fig = figures.precision_bars(results)"),
    md("**Figure 1.** Wall time, speed, peak memory and final eval loss per precision (x) and ZeRO stage (colour); bars are means over seeds and whiskers ± 1 sd (the title says when there is only one seed and so no spread). Speed and memory compare ZeRO stages; the eval-loss panel compares precisions, and a difference smaller than the whiskers is not a difference — the verdicts below test it."),
    code("""
curves = figures.read(root / "grid", "curves")
fig = figures.loss_curves(curves, results, hue="precision", style="zero_stage")
"""),
    md("**Figure 2.** Training loss against tokens, one line per precision and ZeRO stage: the mean over seeds, with a band of ± 1 sd. Where bands overlap, the precisions cannot be told apart at this budget; a line that ends early diverged (fp16's overflow in T5's feed-forward shows here, if it happens)."),
    code('fig = figures.loss_curves(curves, results, hue="precision", style="zero_stage", y="eval_loss", marker="o")'),
    md("**Figure 3.** Held-out eval loss at each evaluation, as in Figure 2 (mean ± 1 sd over seeds). For scale: a uniform guess over the vocabulary scores ln(vocabulary size), 8.99 for the default study's 8,000 tokens; the final points are the losses the verdicts below compare."),
    md("## Verdicts\n\nComputed from the final eval losses above: each precision against fp32 at the same ZeRO stage, paired by seed (the same seed gives both the same initial weights and data order), and ZeRO-3 against ZeRO-0 in fp32."),
    code('display(Markdown("\\n".join(f"- {line}" for line in report.precision_verdicts(results))))'),
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
    md("**Figure 1.** Training loss while the learning rate grows geometrically (one run, one seed). The dashed line marks the steepest fall, the dotted one a tenth of the lr at the lowest loss: the grid's learning rates should bracket them; beyond the minimum the run is unstable."),
    md("## 2. The exhaustive grid"),
    code("grid = runner.run_grid(params, params_path, out_dir, redo=redo, keep_stale=keep_stale)", "hide-output"),
    md("Per global batch and learning rate, over seeds: final eval loss as mean ± sd and n (rounded to 2 decimals, checked by nbval)."),
    code("""
summary = figures.summary_table(grid, ["global_batch", "lr"])
print(figures.stable_view(summary.drop(columns=["± sd (eval)", "± sd (train)"]))
      .round({"final eval loss": 2, "final train loss": 2}).to_string(index=False))
""", "nbval-check-output"),
    code("display(figures.for_people(summary))"),
    md("What these numbers were computed from (data sha, code fingerprint, machine), per trial:"),
    code('''
print(records.provenance_note(root / "grid" / "trials"))
display(grid[["trial", "data", "code", "machine", "stale"]])
'''),
    code("""
display(figures.for_people(grid[["trial", "seed", "wall_seconds", "tokens_per_second", "peak_memory_bytes"]]))
fig = figures.loss_vs_lr(grid)
"""),
    md("**Figure 2.** Final eval loss against peak learning rate, one line per global batch (same tokens for every point): means over seeds with ± 1 sd bars. The lowest point is the best setting; points whose bars overlap it are not shown to be worse — the verdict below tests it."),
    code("""
curves = figures.read(root / "grid", "curves")
fig = figures.loss_curves(curves, grid, hue="lr", style="global_batch")
"""),
    md("**Figure 3.** Training loss against tokens for every batch and learning rate (mean over seeds, band ± 1 sd). A bigger batch takes fewer, larger steps for the same tokens; curves that cross show a setting that starts slower but ends lower."),
    md("### Verdict"),
    code("""
verdict = report.batch_lr_verdict(grid)
display(Markdown("\\n".join(f"- {line}" for line in (verdict["sentence"], verdict["at_best_lr"]) if line)))
"""),
    md("Time to a target loss: the first step, tokens and training seconds at which each trial's eval loss reached the median final eval loss of the grid (a dash: never reached)."),
    code("""
target = float(grid.loc[grid.status == "completed", "final_eval_loss"].median())
print(f"target eval loss {target:.4f}")
display(report.time_to_target_table(curves, grid, target))
"""),
    md("## 3. The early-stopping search, and the comparison"),
    code("""
search = runner.run_search(params, params_path, out_dir)
print(search[["number", "state", *axes, "value", "last_step", "compute"]].round({"value": 4}).to_string())
"""),
    md("The search trains each point once, with the base file's seed; the grid's best above is a mean over seeds."),
    code("""
comparison = runner.compare(grid, search, axes)
print({k: (round(v, 4) if isinstance(v, float) else v) for k, v in comparison.items()})
""", "nbval-check-output"),
    code("fig = figures.compute_spent(runner.grid_as_search_results(grid, axes), search)"),
    md("**Figure 4.** Examples processed by the exhaustive grid (every seed) and by the pruned search (the base seed only). The search is worth it when it finds the grid's best, or a setting within noise of it, for a fraction of the compute."),
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
precision, the best batch and learning rate, QA and translation from the pretrained start against
random initialisation, how the best learning rate and batch move with model size and the recipe
per mT5 size, the memory table for mT5-XXL, and the recommendations that follow. It refuses to
compare studies whose runs were computed from different data or code (naming the difference)
unless `allow_mixed`, and its first lines say what the numbers were computed from. A study whose
step has not run is named in one line.
"""),
    code(IMPORTS + "from mt5study import memory\nfrom mt5study.studies import report"),
    code("""
precision_dir = "outputs/precision_smoke"   # notebook 02's study folder (relative to the repository root)
batch_lr_dir = "outputs/batch_lr_smoke"     # notebook 03's study folder
qa_dir = "outputs/qa_smoke"                 # notebook 04's study folder (skipped when absent)
translation_dir = "outputs/translation_smoke"  # notebook 07's study folder (one line when absent)
scaling_dir = "outputs/scaling_smoke"       # notebook 06's study folder (one line when absent)
out_dir = None                              # where report.json goes; by default outputs/report
gpu_gib = [40, 80]                                       # GPU memory sizes for the fits table
allow_mixed = False                         # compare studies run on different data or code (refused otherwise)
""", "parameters"),
    code("""
precision_dir, batch_lr_dir = paths.find(precision_dir), paths.find(batch_lr_dir)
findings = report.findings(precision_dir, batch_lr_dir, allow_mixed=allow_mixed)
findings["qa"] = report.qa_findings(paths.find(qa_dir))
findings["translation"] = report.translation_findings(paths.find(translation_dir))
findings["scaling"] = report.scaling_findings(paths.find(scaling_dir))
print(report.describe(findings))
"""),
    md("## Conclusions\n\nThe verdicts, computed from the results above with the test each names (95 % intervals; with one seed no spread can be given and no verdict is drawn). The site's index page leads with these sentences."),
    code('display(Markdown("\\n".join(f"- {line}" for line in report.conclusions(findings))))'),
    md("""
## Translation: pretrained start against random initialisation (notebook 07)

Fine-tuned as one multilingual translator on gettext catalog pairs, from the pretrained checkpoint
and from random initialisation with the same params and budget, each seed; held-out strings scored
with sacrebleu. The verdict compares chrF++ averaged over pairs, paired by seed; with one seed a
side no spread can be given and no verdict is drawn.
"""),
    code("report.show(report.translation_section(findings[\"translation\"], translation_dir))", "nbval-check-output"),
    md("""
## Scaling: the best learning rate and batch across model sizes, and the recipe (notebook 06)

Per ladder size the optimum of a smooth fit of its batch × learning-rate grid, power laws of the
optimum against size, the proof on a size held out of the fit, and what the laws predict for each
mT5 size with the GPUs it needs. The numbers below are fixed by the trials (checked by nbval);
the step-time table after them is measured and varies from run to run.
"""),
    code("report.show(report.scaling_section(paths.find(scaling_dir)))", "nbval-check-output"),
    code('report.show(report.scaling_section(paths.find(scaling_dir), part="steptime"))'),
    md("## The models\n\nThe presets of `mt5study.model`: `mt5-*` match Google's released mT5 checkpoints parameter for parameter (untied output layer, gated-GELU, 250,112-token vocabulary)."),
    code("print(report.presets_table().to_string())", "nbval-check-output"),
    md("## Memory: the model beside the measured peaks\n\nThe memory model (`mt5study.memory.estimate`) for each completed precision trial, DeepSpeed's own model-state estimator (ZeRO-2/3 only), and the measured peak. On CPU the measured peak is the process's resident set, which also holds the Python/torch runtime and the dataset."),
    code("display(figures.for_people(report.memory_vs_measured(precision_dir)))"),
    md("## Memory: which settings fit mT5-XXL (12.9B parameters) on N GPUs"),
    code("""
fits = memory.fits_table("mt5-xxl", gpu_gib=tuple(gpu_gib))
display(figures.for_people(report.fits_summary(fits)))
"""),
    md("## Recommendations for the 13B run"),
    code("""
print(report.recommend(findings, fits))
report.save(findings, fits, out_dir)
"""),
])
print("wrote notebooks 02, 03, 05")
