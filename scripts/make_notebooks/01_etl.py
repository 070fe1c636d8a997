"""Write notebooks/01_etl.ipynb (run: python scripts/make_notebooks/01_etl.py).

The notebook is generated so that its source stays small and reviewable; executed copies
(papermill) belong in outputs/, not here.
"""

from pathlib import Path

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = Path(__file__).resolve().parents[2]

cells = [
    new_markdown_cell(
        "# ETL: multilingual text → balanced, tokenized, span-corrupted examples\n\n"
        "Reads the source named in the params (default: the translated Linux manual pages), cleans each "
        "language, samples languages with mT5's temperature α, trains the SentencePiece tokenizer, packs "
        "documents and applies T5's span corruption. Everything below is read back from the output folder."
    ),
    new_code_cell(
        "import matplotlib.pyplot as plt\n"
        "import pandas as pd\n\n"
        "from mt5study import config, paths\n"
        "from mt5study.data import etl, report"
    ),
    new_code_cell(
        'params_path = str(paths.PARAMS / "cpu" / "etl.yaml")  # ETL params; cpu/etl_smoke.yaml runs in seconds\n'
        'out_dir = str(paths.OUTPUTS / "etl" / "manpages")  # the ETL output folder\n'
        "overrides = {}  # dotted keys, e.g. {\"etl.source.fraction\": 0.1}\n"
        "overwrite = True  # replace a completed output in out_dir",
        metadata={"tags": ["parameters"]},
    ),
    new_code_cell(
        "params = config.load(params_path, overrides)\n"
        "config.to_dict(params)[\"etl\"][\"source\"]"
    ),
    new_code_cell(
        "manifest = etl.run(params, out_dir, overwrite=overwrite)\n"
        "{k: manifest[k] for k in (\"languages\", \"vocab_size\", \"inputs_length\", \"targets_length\", "
        "\"num_examples\", \"wall_time_s\")}"
    ),
    new_markdown_cell(
        "## Per-language table\n\nDocuments and characters read and kept after cleaning, tokens, "
        "natural share, sampling probability (α from the params) and the share sampled into `train`."
    ),
    new_code_cell("report.language_table(manifest).round(4)"),
    new_markdown_cell("Documents each cleaning filter dropped (`report.filter_table(manifest, \"chars\")` for characters)."),
    new_code_cell("report.filter_table(manifest)"),
    new_markdown_cell("## Natural versus sampled language shares"),
    new_code_cell("report.plot_shares(manifest)\nplt.show()"),
    new_markdown_cell("## Document length in tokens"),
    new_code_cell("report.plot_token_lengths(out_dir)\nplt.show()"),
    new_markdown_cell("## Tokenizer fertility: tokens per character of each language's own text"),
    new_code_cell("report.plot_fertility(manifest)\nplt.show()"),
    new_markdown_cell(
        "## Span-corruption examples\n\nInputs keep the text with a sentinel `<extra_id_k>` per masked span; "
        "targets list each sentinel followed by the tokens it replaced; both end with `</s>`."
    ),
    new_code_cell(
        'pd.set_option("display.max_colwidth", None)\n'
        "report.span_examples(out_dir, n=3)"
    ),
]

nb = new_notebook(cells=cells, metadata={
    "kernelspec": {"display_name": "Python 3", "language": "python", "name": "python3"},
    "language_info": {"name": "python"},
})
for i, cell in enumerate(nb.cells):  # stable ids keep the diff of a regenerated notebook empty
    cell["id"] = f"etl-{i:02d}"
path = ROOT / "notebooks" / "01_etl.ipynb"
nbformat.validate(nb)
nbformat.write(nb, str(path))
print(f"wrote {path}")
