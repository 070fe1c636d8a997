"""The published site: executed notebooks -> HTML with an index, checked in headless Chromium."""

from __future__ import annotations

import shutil
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

from mt5study import site

pytestmark = pytest.mark.slow


def executed(path: Path, cells: list[str], allow_errors: bool = False) -> Path:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell(f"# {path.stem} study")] + [nbformat.v4.new_code_cell(c) for c in cells]
    NotebookClient(nb, timeout=120, kernel_name="python3", allow_errors=allow_errors).execute()
    nbformat.write(nb, path)
    return path


@pytest.fixture(scope="module")
def notebooks(tmp_path_factory):
    d = tmp_path_factory.mktemp("nbs")
    good = executed(d / "good.ipynb", [
        "%matplotlib inline\nimport seaborn as sns, pandas as pd\n"
        "df = pd.DataFrame({'lr': [1e-3, 2e-3, 4e-3], 'loss': [3.0, 2.5, 2.8]})",
        "ax = sns.lineplot(data=df, x='lr', y='loss', marker='o')",
        "print(df.to_string())",
    ])
    bad = executed(d / "bad.ipynb", ["1 / 0"], allow_errors=True)
    return good, bad


@pytest.mark.skipif(not shutil.which("chromium") or not shutil.which("chromedriver"),
                    reason="needs Debian's chromium and chromium-driver (scripts/setup.sh installs them as root)")
def test_site_renders_every_page_and_figure(notebooks, tmp_path):
    good, bad = notebooks
    index = site.build([good], tmp_path / "site")
    assert index.exists() and "good study" in index.read_text()
    reports = site.check(tmp_path / "site", screenshot_dir=tmp_path / "shots")
    assert {r["page"] for r in reports} == {"index.html", "good.html"}
    page = next(r for r in reports if r["page"] == "good.html")
    assert page["images"] >= 1 and not page["broken"]  # the seaborn figure rendered
    assert all(r["ok"] for r in reports), reports
    assert (tmp_path / "shots" / "good.png").stat().st_size > 10_000

    # a notebook with a failed cell is flagged on the index and by the check
    site.build([good, bad], tmp_path / "site2")
    assert "1 failed cell" in (tmp_path / "site2" / "index.html").read_text()
    reports = {r["page"]: r for r in site.check(tmp_path / "site2")}
    assert not reports["bad.html"]["ok"] and reports["good.html"]["ok"]


def test_missing_notebook_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="absent.ipynb"):
        site.build([tmp_path / "absent.ipynb"], tmp_path / "site")


def test_index_says_what_each_page_was_computed_from_and_flags_stale_results(tmp_path):
    from mt5study import config, records
    from mt5study.paths import PARAMS

    page = tmp_path / "02_study.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 02 study")]
    nbformat.write(nb, page)
    study = tmp_path / "outputs" / "precision"
    inputs = records.run_inputs(config.load(PARAMS / "cpu" / "tiny.yaml"))
    for trial in ("a", "b"):
        records.write_json_atomic(study / "grid" / "trials" / trial / "inputs.json", inputs)
        records.write_json_atomic(study / "grid" / "trials" / trial / "env.json",
                                  {"hardware": {"gpus": ["NVIDIA H100"] * 8}})
    index = site.build([page], tmp_path / "site", sources={page.name: [study]}).read_text()
    assert f"data <code>{inputs['data']['sha256'][:10]} (synthetic)</code>" in index
    assert f"code <code>{inputs['code']['sha256'][:10]}</code>" in index and "8x NVIDIA H100" in index
    assert "STALE" not in index
    records.record_decision(study / "grid" / "trials" / "b", "kept stale", ["code changed: loss.py"])
    index = site.build([page], tmp_path / "site", sources={page.name: [study]}).read_text()
    assert "Stale results shown on purpose" in index and "STALE: 1 result folder(s)" in index
    assert records.read_json(tmp_path / "site" / "site.json")["pages"][0]["origin"]["stale"] == [
        "precision/grid/trials/b: code changed: loss.py"]


def test_pages_are_for_readers_and_the_index_leads_with_conclusions(tmp_path):
    from mt5study import records
    from mt5study.paths import ROOT

    nbs = tmp_path / "outputs" / "notebooks"
    nbs.mkdir(parents=True)
    cells = [
        "import sys, warnings\nprint('a ' + 'warning', file=sys.stderr)\nwarnings.warn('Tqdm' + 'Warning: IProgress not found')",
        f"out_dir = '{ROOT}/outputs/precision'\nprint(out_dir)",
        "print('[precision] trial 1/18 training ' + 'log')",
        "print('the table')",
        "print('[2026-11-30 10:15:38,026] [WARN' + 'ING] [real_accelerator.py:213:get] Setting ' + 'accelerator')",
    ]
    first = executed(nbs / "02_first.ipynb", cells)
    nb = nbformat.read(first, as_version=4)
    nb.cells[3].metadata["tags"] = ["hide-output"]
    nbformat.write(nb, first)
    second = executed(nbs / "05_second.ipynb", ["print(1)"])
    (tmp_path / "outputs" / "report").mkdir()
    index = site.build([first, second], tmp_path / "site").read_text()
    assert "No conclusions yet" in index  # nothing typed in their place

    records.write_json_atomic(tmp_path / "outputs" / "report" / "report.json",
                              {"conclusions": ["bf16 matches fp32 within noise on final eval loss: 6.1 ± 0.1"]})
    index = site.build([first, second], tmp_path / "site").read_text()
    assert "<h2>Conclusions</h2>" in index and "bf16 matches fp32 within noise" in index
    assert index.index("Conclusions") < index.index("02_first.html")
    page = (tmp_path / "site" / "02_first.html").read_text()
    assert "a warning" not in page and "TqdmWarning" not in page  # stderr streams dropped
    assert str(ROOT) not in page and "outputs/precision" in page  # paths relative to the repository
    assert "training log" not in page and "the table" in page  # hide-output: the cell's outputs left out
    assert "Setting accelerator" not in page  # a library's log line on stdout
    assert 'href="index.html"' in page and 'href="05_second.html"' in page  # navigation
    assert 'href="02_first.html"' in (tmp_path / "site" / "05_second.html").read_text()
    meta = records.read_json(tmp_path / "site" / "site.json")["pages"][0]["cleaned"]
    assert meta["stderr"] >= 1 and meta["paths"] >= 2 and meta["hidden"] == 1 and meta["log_lines"] == 1


def test_index_groups_the_conclusions_by_study(tmp_path):
    """report.json's conclusions_by_study (notebook 05): one heading per study, translation and
    scaling among them; an older report.json with a flat list still shows it."""
    from mt5study import records

    nbs = tmp_path / "outputs" / "notebooks"
    nbs.mkdir(parents=True)
    page = nbs / "05_report.ipynb"
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# 05 report")]
    nbformat.write(nb, page)
    groups = {"Precision × ZeRO stage": ["bf16 matches fp32 within noise"],
              "Translation": ["Translation pairs: en-de (234 training strings).", "Translation: chrF++ <greedy>"],
              "Scaling": ["Scaling: fitted on ladder-1, ladder-2, ladder-3, ... a gap of +0.40 %"]}
    records.write_json_atomic(tmp_path / "outputs" / "report" / "report.json",
                              {"conclusions": [c for v in groups.values() for c in v],
                               "conclusions_by_study": [{"study": k, "conclusions": v} for k, v in groups.items()]})
    index = site.build([page], tmp_path / "site").read_text()
    assert "<h3>Translation</h3>" in index and "<h3>Scaling</h3>" in index
    assert index.index("<h3>Translation</h3>") < index.index("Translation pairs: en-de") < index.index("<h3>Scaling</h3>")
    assert "chrF++ &lt;greedy&gt;" in index and "a gap of +0.40 %" in index  # escaped, verbatim
    records.write_json_atomic(tmp_path / "outputs" / "report" / "report.json", {"conclusions": ["only a flat list"]})
    index = site.build([page], tmp_path / "site").read_text()
    assert "only a flat list" in index and "<h3>" not in index
