"""Write notebooks/01_etl.ipynb (run: python scripts/make_notebooks/01_etl.py)."""

from build import code, md, write

write("01_etl.ipynb", [
    md("""
# 01 — ETL: multilingual text → balanced, tokenized, span-corrupted examples

Reads the source named in the params (default: the translated Linux manual pages that Debian's
`manpages-*` packages install, the general corpus, with the text of the installed gettext catalogs
as the language-specific corpus), cleans each language (Unicode normalisation, control characters,
minimum length, repeated boilerplate lines, exact duplicates, a language-identification check),
samples languages with mT5's temperature α (p ∝ n^α), trains the SentencePiece tokenizer on a
balanced sample, packs documents and applies T5's span corruption. Everything below is read
back from the output folder, whose `manifest.json` (written last) records sources, versions,
per-filter counts, probabilities and hashes. A completed output is reused only when its params,
source listing and ETL code match; its data sha (printed below) is what every training run on
it records, so a changed output retrains exactly the runs that read it.
"""),
    code("""
import json

import matplotlib.pyplot as plt
import pandas as pd

from mt5study import config, paths
from mt5study.data import etl, report
"""),
    code("""
params_path = "params/cpu/etl_smoke.yaml"  # relative to the repository root, or absolute
out_dir = "outputs/etl_smoke"              # the ETL output folder, relative to the repository root
overrides = {}                             # dotted overrides, e.g. {"etl.source.fraction": 0.1}
overwrite = False                          # rebuild a completed output made from these params
keep_stale = False                         # keep an output whose params, source or ETL code changed (marked)
sharded_params_path = "params/cpu/etl_sharded_smoke.yaml"  # the same data as sharded stages on datatrove
sharded_out_dir = "outputs/etl_sharded_smoke"
bench_path = "outputs/bench/etl_sharded.json"  # scripts/bench_etl.py --sharded-only: rate and efficiency
mc4_nodes = (1, 8, 64, 256)                # nodes of the mC4 projection
tasks_per_node = 64                        # ETL tasks per node (one per core)
""", "parameters"),
    code("""
params_path, out_dir = str(paths.find(params_path)), str(paths.find(out_dir))
params = config.load(params_path, overrides)
manifest = etl.run_or_reuse(params, out_dir, overwrite=overwrite, keep_stale=keep_stale)
print(etl.provenance_note(manifest, out_dir))
"""),
    code("""
print({k: manifest[k] for k in ("languages", "vocab_size", "inputs_length", "targets_length", "alpha", "seed")})
""", "nbval-check-output"),
    md("""
## Per-language table

Documents and characters read and kept after cleaning, tokens, natural share, sampling
probability (α from the params) and the share actually sampled into `train`.
"""),
    code("""
table = report.language_table(manifest).round(4)
print(table.to_string())
""", "nbval-check-output"),
    md("Documents each cleaning filter dropped (`report.filter_table(manifest, \"chars\")` for characters)."),
    code("print(report.filter_table(manifest).to_string())", "nbval-check-output"),
    md("""
## The language-specific corpus: gettext catalogs

With `source.catalogs` set, each language also gets the text of the installed gettext catalogs, one
document per catalog, one message per line (English: the messages' English originals). Messages are
left out as the translation study leaves them out (untranslated, identical to the English, format
specifiers that differ), and so are those whose English string is in the translation study's
validation or test split (`heldout`): no held-out string is pretraining text in any language. The
documents then pass the same cleaning as the rest (the filter table above counts them).
"""),
    code("print(report.catalog_table(manifest).to_string())", "nbval-check-output"),
    md("## Natural versus sampled language shares"),
    code("report.plot_shares(manifest)\nplt.show()"),
    md("## Document length in tokens"),
    code("report.plot_token_lengths(out_dir)\nplt.show()"),
    md("## Tokenizer fertility: tokens per character of each language's own text"),
    code("report.plot_fertility(manifest)\nplt.show()"),
    md("""
## Span-corruption examples

Inputs keep the text with a sentinel `<extra_id_k>` per masked span; targets list each sentinel
followed by the tokens it replaced; both end with `</s>`.
"""),
    code("""
pd.set_option("display.max_colwidth", None)
report.span_examples(out_dir, n=3)
"""),
    md("""
## Sharded ETL on datatrove: per-task and merged counts

The same stages as sharded tasks (`mt5study.data.engine`): clean per shard of input files,
exact deduplication across shards partitioned by hash, tokenizer, encode (tokenize, pack,
span-corrupt) per shard, and a merge that re-hashes every shard before it writes the manifest.
Run here on datatrove's local executor; `engine.executor: slurm` runs the same stages as
chained Slurm job arrays. Languages are interleaved when the shards are read, by the trainer.
"""),
    code("""
sharded_params = config.load(str(paths.find(sharded_params_path)))
sharded_out = str(paths.find(sharded_out_dir))
sharded = etl.run_or_reuse(sharded_params, sharded_out)
print(etl.provenance_note(sharded, sharded_out))
print({k: sharded["engine"][k] for k in ("executor", "tasks", "dedup_buckets", "files_per_shard")},
      "shards:", len(sharded["shards"]))
"""),
    md("Per task: shards, documents read and kept, tokens and examples, seconds in the clean and encode stages."),
    code("""
tasks = report.task_table(sharded, sharded_out)
print(tasks.round(2).to_string())
"""),
    md("Merged over all tasks (the manifest's per-language counts summed): the per-task columns add up to these."),
    code("""
merged = report.merged_totals(sharded)
print(pd.DataFrame({"per-task sum": tasks[["read_docs", "kept_docs", "tokens", "examples"]].sum(),
                    "merged": merged[["read_docs", "kept_docs", "tokens", "examples"]]}).to_string())
print(report.language_table(sharded)[["docs_read", "docs_kept", "tokens", "train_examples", "probability",
                                      "sampled_share"]].round(4).to_string())
"""),
    md("""
## Projection: all of mC4 (6.3T tokens, 101 languages; Xue et al. 2021) on N nodes

From the measured tokens per second per task and the scaling efficiency at two tasks
(`scripts/bench_etl.py --sharded-only`, on the machine that ran the benchmark); without that
file, this run's own per-task rate and an efficiency of 1 (said below). The rate was measured
with this study's small tokenizer on manual pages: mT5's 250k-piece tokenizer and web text
change it. Disk: example shards at mT5's lengths plus the cleaned text kept between stages.
"""),
    code("""
bench = paths.find(bench_path)
if bench.exists():
    measured = json.loads(bench.read_text())["sharded"]
    one, two = measured["runs"][0], measured["runs"][-1]
    rate, efficiency, clean_bpt = one["tokens_per_s_per_task"], two["efficiency"], one["clean_bytes_per_token"]
    print(f"from {bench_path}: {rate:.0f} tokens/s per task, efficiency {efficiency:.2f} at {two['tasks']} tasks "
          f"({measured['note']})")
else:
    rate, efficiency = float(tasks["tokens"].sum() / (tasks["clean_s"] + tasks["encode_s"]).sum()), 1.0
    clean_bpt = None
    print(f"no {bench_path}: this run's {rate:.0f} tokens per busy task-second, efficiency assumed 1")
print(report.mc4_projection(rate, efficiency, nodes=tuple(mc4_nodes), tasks_per_node=tasks_per_node,
                            clean_bytes_per_token=clean_bpt).round(2).to_string())
"""),
])
print("wrote notebook 01")
