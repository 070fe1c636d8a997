"""Write notebook 04 (QA fine-tuning: pretrained start versus random initialisation)."""

from build import code, md, write

write("04_qa_finetune.ipynb", [
    md("""
# 04 — QA fine-tuning: does pretraining help at this scale?

Extractive question answering as text to text (`question: … context: …` → the answer), fine-tuned
with the same trainer as pretraining (`mt5study.launch.run`: ZeRO stage, precision, batch and
learning rate from the fine-tuning params) on the same budget from the pretrained checkpoint and
from random initialisation, each with several seeds (data order, dropout, and the random
initialisation's weights), so every score has a spread. Both are scored by greedy generation with
SQuAD v1.1's exact match and F1, and with MLQA's language-aware normalisation, per language.

**The default QA set** is built by code from the installed manual pages (`mt5study.qa.manpages`):
every command-line option that a section-1 page documents becomes a question in the page's
language, and the context is a run of neighbouring option entries. With `task: which_option` (the
default study) the question quotes what an option does and the answer is the option as the page
prints it — a few words inside the context, as SQuAD's and MLQA's answers are: "Which option of
ls: do not ignore entries starting with ." → `-a, --all`; "Welche Option von ls: …" → the same
tag from the German page. (`task: describe_option` asks the other way, "What does the option -v
of ls do?", and the answer is the description, up to a sentence.) Train and validation are split
by command, the same commands held out in every language, so no context is shared. Hub sets
(TyDi QA GoldP, XQuAD, MLQA, SQuAD) and local SQuAD-format files go through the same path
(`source.kind: hub | files`).

**Long contexts** are cut into overlapping windows of tokens: training reads the windows that hold
the whole answer; evaluation answers every window and keeps the most probable answer. What is
dropped, and why, is counted below — never turned into a wrong label.
"""),
    code("""
from pathlib import Path

import pandas as pd
from IPython.display import display

from mt5study import config, head_start, paths, records, stats
from mt5study.qa import figures, finetune, prepare
"""),
    code("""
params_path = "params/cpu/qa_smoke.yaml"  # relative to the repository root, or absolute
out_dir = None      # the study folder; by default outputs/QA_NAME
overrides = {}      # dotted overrides of the QA file, e.g. {"qa.eval.batch_size": 8}
redo = False        # rebuild the data and retrain runs that already finished
keep_stale = False  # keep results whose params, data, checkpoint or code changed (marked STALE)
""", "parameters"),
    code("""
params_path = str(paths.find(params_path))
params = config.load(params_path, overrides)
root = finetune.study_dir(params, out_dir)
root.mkdir(parents=True, exist_ok=True)
print(params.qa.name, "|", params.qa.source.kind, params.qa.source.languages, "| input", params.qa.input_length,
      "target", params.qa.target_length, "tokens")
"""),
    md("""
## 1. The model to start from

The pretrained checkpoint and its tokenizer (`qa.finetune.checkpoint`, `qa.tokenizer`), checked
against each other (vocabulary) and against the fine-tuning preset. With `qa.pretrain` (the smoke
params) the study first builds its own: the ETL smoke output and a few steps of span-corruption
pretraining of the tiny model, in `pretrain/` of the study folder.
"""),
    code("""
base = finetune.base_model(params, root, redo=redo, keep_stale=keep_stale)
print("vocabulary", base["vocab_size"], "| checkpoint", Path(base["checkpoint"]).name)
"""),
    md("""
## 2. The QA set

Questions per split and language after the checks; `examples` reached tokenization, `windowed`
needed more than one window, `training_windows` hold the whole answer and a label that fits
`target_length`. Drops: `question_too_long` (no room left for context), `answer_longer_than_window`,
`answer_longer_than_target`, and `dropped_by_checks` (empty answers, answers not at their
`answer_start`, malformed records; see `manifest.json`).
"""),
    code("data = finetune.prepare_data(params, root, base, redo=redo, keep_stale=keep_stale)"),
    code("""
sizes = prepare.sizes(data)
for split, table in sizes.groupby("split"):  # one column per language: the table fits the page
    print(f"{split}:")
    print(table.drop(columns="split").set_index("lang").T.to_string(), end="\\n\\n")
""", "nbval-check-output"),
    md("""
For the man-page set, how it was built per language: pages listed and read (in a seeded order
shared by all languages, until each split has its commands), option entries found, answers taken
whole or cut to their first sentence, skipped as too long or too short, options not sampled.
"""),
    code("display(prepare.build_report(data))"),
    md("""
## 3. Fine-tuning: pretrained start and random initialisation, same params and budget, per seed
"""),
    code("""
runs = finetune.train_runs(params, root, data, base, redo=redo, keep_stale=keep_stale)
display(runs.drop(columns=["run"]).round(3))  # data, code, checkpoint: what each run was computed from
"""),
    code("fig = figures.loss_curves(finetune.curves(runs))"),
    md("""
*Fine-tuning loss per step (lines: mean over seeds, band ± 1 sd) and held-out loss (squares) of
each start. A pretrained start that helps begins lower and stays lower on the held-out loss.*

What the pretrained start is worth, from these curves (`mt5study.head_start`): its lead at the
first logged step, paired by seed (a seed gives both starts the same data order), how long the lead
stays larger than the noise, how many steps random initialisation needs to reach the pretrained
start's first-step loss, and the held-out loss at the end.
"""),
    code("print(stats.wrap(head_start.text(head_start.head_start(finetune.curves(runs)))))", "nbval-check-output"),
    md("""
## 4. Exact match and F1 per language

Greedy answers from each run's `model/` folder. `language-aware`: MLQA's normalisation (Unicode
punctuation, articles of en/es/de/vi/ar, one token per CJK character for zh; ja and th get
character tokens too, an extension marked `mlqa-extension` in `results.parquet`); `squad`: SQuAD
v1.1's English rules for every language. `all` is the mean over languages. Each cell is the mean
± sd over the seeds (`n`); the verdict compares the starts on the mean over languages with a paired
t-interval over seeds (`mt5study.stats`: each seed gives both starts the same data order) and says
when the difference is within noise.
"""),
    code("""
results, predictions = finetune.evaluate_runs(params, root, data, base, runs, redo=redo, keep_stale=keep_stale)
print(records.provenance_note(root))
"""),
    code("""
for norm in ("language-aware", "squad"):
    print(norm)
    print(finetune.score_pivot(results, norm).to_string())
print(stats.wrap(figures.verdict(results)))
""", "nbval-check-output"),
    code("fig = figures.scores_bars(results)"),
    md("""
*Exact match and F1 per language (language-aware normalisation), bars the mean over seeds and
error bars ± 1 sd: where the bars of the two starts and their error bars stay apart, the
pretrained start's advantage in that language is larger than the spread between seeds.*

A few predictions beside their references (the first seed of each start):
"""),
    code("""
with pd.option_context("display.max_colwidth", 70):
    display(finetune.sample_predictions(predictions, params.qa.eval.show_predictions))
finetune.record(root, params, base, data, runs)
"""),
])
print("wrote notebook 04")
