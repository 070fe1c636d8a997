"""Write notebook 07 (translation: parallel catalogs, multilingual fine-tuning, BLEU and chrF++)."""

from build import code, md, write

write("07_translation.ipynb", [
    md("""
# 07 — Translation: is the pretrained model a better translator than random initialisation?

mT5 is pretrained to become a translation model. Here the study's pretrained model is fine-tuned
as one multilingual translator — text to text, `translate English to German: …` → the German —
with the same trainer as pretraining and QA (`mt5study.launch.run`: ZeRO stage, precision, batch
and learning rate from the fine-tuning params), from the pretrained checkpoint and from random
initialisation on the same budget, several seeds each. Held-out strings are translated greedily
and with beam search and scored with sacrebleu: BLEU and chrF++ per pair, with their signatures.

**The parallel text is real and offline**: the gettext catalogs installed on the machine
(`/usr/share/locale/<lang>/LC_MESSAGES/*.mo`, GTK, GLib, coreutils …; `scripts/install_catalogs.sh`),
English msgid → translated msgstr, read with Babel. Plural forms, message contexts, format
specifiers (`%s`, `{0}`), mnemonics (`_File`), markup and untranslated entries are handled and
counted; unreadable catalogs and wrong charsets are counted and named. Translated man pages
(aligned by command and option flag), TSV/JSONL files and WMT/OPUS/FLORES through `datasets` go
through the same path (`sources: [{kind: manpages | files | hub}]`).

**Splits by English string**: a msgid is in one split only, for every pair and direction, so
no test string was seen in training, not even in another language. Training mixes the pairs with
the ETL's temperature sampling (p ∝ n^0.3).
"""),
    code("""
import pandas as pd
from IPython.display import display

from mt5study import config, head_start, paths, stats
from mt5study.qa.finetune import INIT_LABELS
from mt5study.translation import finetune, prepare
from mt5study.translation.config import TranslationParams
"""),
    code("""
params_path = "params/cpu/translation_smoke.yaml"  # relative to the repository root, or absolute
out_dir = None      # the study folder; by default outputs/TRANSLATION_NAME
overrides = {}      # dotted overrides, e.g. {"translation.eval.num_beams": 2}
redo = False        # rebuild the data and retrain runs that already finished
keep_stale = False  # reuse finished runs even when params, data or code changed (marked stale)
""", "parameters"),
    code("""
params_path = str(paths.find(params_path))
params = config.load(params_path, overrides, schema=TranslationParams)
tr = params.translation
root = finetune.study_dir(params, out_dir)
root.mkdir(parents=True, exist_ok=True)
print(tr.name, "| pairs", tr.pairs, "| sources", [s.kind for s in tr.sources], "| seeds", tr.finetune.seeds)
"""),
    md("""
## 1. The model to start from

The pretraining run's checkpoint and its tokenizer, checked against each other and against the
fine-tuning preset (the QA study's checks). With `translation.pretrain` (the smoke params) the study
first builds its own: the ETL smoke output and a few steps of span corruption, in `pretrain/`.
"""),
    code("""
base = finetune.base_model(params, root, redo=redo, keep_stale=keep_stale)
print("vocabulary", base["vocab_size"])
"""),
    md("""
## 2. The parallel data

What each catalog language gave: catalogs found and read, bad ones (`catalogs_unreadable`,
`catalogs_bad_charset`, named in `manifest.json`), messages, and how they were handled
(`plural`, `with_context`, `mnemonic`, `markup`, `format_specifiers`, `multiline`) or dropped
(`untranslated`, `identical`, `format_mismatch`).
"""),
    code("data = prepare.prepare(tr, root, base[\"tokenizer\"], base[\"vocab_size\"], redo=redo)"),
    code("display(prepare.source_report(data))"),
    md("""
Per pair, every filter's drops (empty, no letters, too short or long in characters, duplicates,
too long for the encoder or decoder, token-length ratio), the split sizes (held-out splits keep one
target per source: `alternative_targets`) and each pair's share of the balanced training set.
"""),
    code("""
sizes = prepare.sizes(data)
sizes["train_share"] = sizes["train_share"].map("{:.3f}".format)  # counts stay integers in the transposed table
print(sizes.T.to_string())
""", "nbval-check-output"),
    md("## 3. Fine-tuning: pretrained start and random initialisation, same params and budget, each seed"),
    code("""
runs = finetune.train_runs(params, root, data, base, redo=redo, keep_stale=keep_stale)
display(runs.drop(columns=["run"]).round(3))
"""),
    code("""
import seaborn as sns

curves = finetune.curves(runs)
ax = sns.lineplot(data=curves.assign(start=curves["init"].map(INIT_LABELS)), x="step", y="loss", hue="start",
                  errorbar="sd")
ax.set_ylabel("training loss (mean ± sd over seeds)");
"""),
    md("""
*Training loss per step of each start (line: mean over seeds, band ± 1 sd). Where the pretrained
start's line stays below random initialisation's, pretraining still helps at that step; where the
lines meet, what it gave has been learnt again from the pairs.*

What the pretrained start is worth, from these curves (`mt5study.head_start`, paired by seed: a
seed gives both starts the same data order):
"""),
    code("print(stats.wrap(head_start.text(head_start.head_start(curves))))", "nbval-check-output"),
    md("""
## 4. BLEU and chrF++ per pair

Each run's `model/` translates the test strings of every pair, greedily and with beam search.
BLEU uses tokenizer 13a, `zh` for Chinese targets and `ja-mecab` for Japanese; chrF++ is chrF
with word bigrams. Mean ± sd over seeds and the number of seeds; `mean over pairs` averages each
seed's pairs first, so its sd is the spread between seeds.
"""),
    code("results, translations = finetune.evaluate_runs(params, root, data, base, runs, redo=redo)"),
    code("""
with pd.option_context("display.width", 200):
    print(finetune.per_pair_table(results).to_string(index=False))
""", "nbval-check-output"),
    code("display(finetune.signatures(results))"),
    code("""
table = finetune.per_pair_table(results)
greedy = results[results.decoding == "greedy"]
ax = sns.barplot(data=greedy.assign(start=greedy["init"].map(INIT_LABELS)), x="pair", y="chrf", hue="start", errorbar="sd")
ax.set_ylabel("chrF++ (greedy, mean ± sd over seeds)");
"""),
    code("""
for decoding in results["decoding"].unique() if not results.empty else []:
    print(finetune.verdict_text(finetune.verdict(results, decoding)))
"""),
    md("A few translations of the first seed beside their references:"),
    code("""
with pd.option_context("display.max_colwidth", 60):
    display(finetune.sample_translations(translations, tr.eval.show_translations))
finetune.record(root, params, base, data, runs, results)
"""),
])
print("wrote notebook 07")
