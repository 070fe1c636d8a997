"""Write notebooks/01_etl.ipynb (run: python scripts/make_notebooks/01_etl.py)."""

from build import code, md, write

write("01_etl.ipynb", [
    md("""
# 01 — ETL: multilingual text → balanced, tokenized, span-corrupted examples

Reads the source named in the params (default: the translated Linux manual pages that Debian's
`manpages-*` packages install), cleans each language (Unicode normalisation, control characters,
minimum length, repeated boilerplate lines, exact duplicates, a language-identification check),
samples languages with mT5's temperature α (p ∝ n^α), trains the SentencePiece tokenizer on a
balanced sample, packs documents and applies T5's span corruption. Everything below is read
back from the output folder, whose `manifest.json` (written last) records sources, versions,
per-filter counts, probabilities and hashes. A completed output is reused only when its params,
source listing and ETL code match; its data sha (printed below) is what every training run on
it records, so a changed output retrains exactly the runs that read it.
"""),
    code("""
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
])
print("wrote notebook 01")
