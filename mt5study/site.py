"""The published study: executed notebooks rendered to a static HTML site with an index page.

`build(notebooks, out)` converts each executed notebook with nbconvert's HTMLExporter (figures
embedded as data URIs, so the folder is self-contained and can be copied anywhere), and writes
`index.html` linking them with their title, when they ran, whether any cell failed, and what
their numbers were computed from (data sha, code fingerprint, machine: short forms read from the
run folders' inputs.json and env.json), with a banner where results were kept stale on purpose.
`check(site)` opens every page in headless Chromium (Debian's chromium + chromium-driver,
through Selenium) and reports pages that did not load, images that did not render and cells
that show an error.

The pages are for readers: `for_readers` drops what only a developer watching the run needs
(stderr streams, i.e. library warnings and progress-bar fallbacks; widget outputs; the outputs of
cells tagged `hide-output`, e.g. a training log whose results a table below shows) and writes
the machine's paths relative to the repository (the injected parameters name absolute folders).
Each page gets a navigation bar (index, previous, next); the index leads with the study's
conclusions, read from the report's report.json (verdict and headline sentences computed from the
results, grouped by study: precision, batch x lr, QA, translation, scaling).
"""

from __future__ import annotations

import html
import json
import re
from pathlib import Path
from typing import Any

from mt5study import records

STYLE = """
body { font-family: system-ui, sans-serif; max-width: 52rem; margin: 2rem auto; padding: 0 1rem; color: #222; }
li { margin: .6rem 0; } .meta { color: #666; font-size: .9rem; } .bad { color: #b00; }
.stale { border: 2px solid #b00; background: #fee; padding: .5rem 1rem; color: #700; }
code { font-size: .85rem; }
"""


def _title(nb: Any, fallback: str) -> str:
    for cell in nb.cells:
        if cell.cell_type == "markdown":
            for line in cell.source.splitlines():
                if line.startswith("# "):
                    return line[2:].strip()
    return fallback


HIDE_OUTPUT_TAG = "hide-output"  # a cell whose outputs the page leaves out (its source stays)
# A library's log line written to stdout, e.g. DeepSpeed's
# "[2026-11-30 10:15:38,026] [WARNING] [real_accelerator.py:213:get_accelerator] Setting accelerator to CPU."
_LOG_LINE = re.compile(r"^\[\d{4}-\d\d-\d\d [\d:,.]+\] \[(DEBUG|INFO|WARNING|ERROR)\] .*(\n|$)", re.MULTILINE)
_DROPPED_MIME = ("application/vnd.jupyter.widget-view+json",)


def _relative(text: str, roots: list[str]) -> str:
    """`text` with each root folder (absolute) written relative to it: /work/main/outputs/x -> outputs/x."""
    for root in roots:
        text = text.replace(root + "/", "").replace(root, ".")
    return text


def for_readers(nb: Any, roots: list[str | Path] | None = None) -> dict[str, int]:
    """Clean an executed notebook for publication in place (see module doc); returns what it
    dropped or rewrote, by kind. `roots`: absolute folders to write paths relative to (default:
    the repository root and the user's home)."""
    from mt5study.paths import ROOT

    roots_s = sorted({str(Path(r)) for r in (roots or [ROOT, Path.home()])}, key=len, reverse=True)
    counts = {"stderr": 0, "widgets": 0, "hidden": 0, "paths": 0, "log_lines": 0}
    for cell in nb.cells:
        new = _relative(cell.source, roots_s)
        counts["paths"] += new != cell.source
        cell.source = new
        if cell.cell_type != "code":
            continue
        if HIDE_OUTPUT_TAG in cell.metadata.get("tags", []):
            counts["hidden"] += len(cell.outputs)
            cell.outputs = []
            continue
        kept = []
        for out in cell.outputs:
            if out.get("output_type") == "stream" and out.get("name") == "stderr":
                counts["stderr"] += 1
                continue
            data = out.get("data") or {}
            if any(m in data for m in _DROPPED_MIME):
                for m in _DROPPED_MIME:
                    data.pop(m, None)
                counts["widgets"] += 1
                if not data:
                    continue
            if out.get("output_type") == "stream":
                text = "".join(out["text"]) if isinstance(out["text"], list) else out["text"]
                quiet = _LOG_LINE.sub("", text)
                counts["log_lines"] += quiet != text
                if not quiet.strip():
                    continue
                t = _relative(quiet, roots_s)
                counts["paths"] += t != quiet
                out["text"] = t
            for mime in ("text/plain", "text/html", "text/markdown"):
                if isinstance(data.get(mime), str):
                    t = _relative(data[mime], roots_s)
                    counts["paths"] += t != data[mime]
                    data[mime] = t
            kept.append(out)
        cell.outputs = kept
    return counts


def _nav(entries: list[dict[str, Any]], i: int) -> str:
    """The bar at the top of page i: index, previous, next."""
    links = ['<a href="index.html">index</a>']
    if i > 0:
        links.append(f'<a href="{html.escape(entries[i - 1]["page"])}">&larr; {html.escape(entries[i - 1]["title"])}</a>')
    if i + 1 < len(entries):
        links.append(f'<a href="{html.escape(entries[i + 1]["page"])}">{html.escape(entries[i + 1]["title"])} &rarr;</a>')
    return ('<nav class="site-nav" style="font-family: system-ui, sans-serif; padding: .6rem 1rem; '
            'border-bottom: 1px solid #ccc; background: #f6f6f6; display: flex; gap: 1.5rem;">'
            + "".join(links) + "</nav>")


def _with_nav(body: str, nav: str) -> str:
    m = re.search(r"<body[^>]*>", body)
    return body[:m.end()] + nav + body[m.end():] if m else nav + body


def _conclusions_html(report_json: Path | None) -> str:
    if not report_json or not report_json.is_file():
        return ('<p class="meta">No conclusions yet: the report notebook (05) has not written '
                f'{html.escape(report_json.name if report_json else "report.json")}.</p>')
    report = records.read_json(report_json)
    groups = {g["study"]: g["conclusions"] for g in report.get("conclusions_by_study") or []} or (
        {"": report["conclusions"]} if report.get("conclusions") else {})
    if not groups:
        return '<p class="meta">The report recorded no verdicts.</p>'
    body = "".join((f"<h3>{html.escape(study)}</h3>" if study else "")
                   + '<ul class="conclusions">' + "".join(f"<li>{html.escape(c)}</li>" for c in lines) + "</ul>"
                   for study, lines in groups.items())
    return ("<h2>Conclusions</h2><p class=\"meta\">Each sentence is computed from the results with the "
            "test or fit it names (verdicts: 95 % intervals, a difference whose interval contains 0 is within "
            "noise; scaling fits: bootstrap intervals).</p>" + body)


def _when(iso: str | None) -> str:
    """'2026-11-30T09:43:07.349+00:00' -> 'ran 2026-11-30 09:43 UTC'."""
    return f"ran {iso[:16].replace('T', ' ')} UTC" if iso else "not run by papermill"


def _errors(nb: Any) -> int:
    return sum(o.get("output_type") == "error" for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))


def origin(folders: list[str | Path]) -> dict[str, Any]:
    """Distinct data, code and machine short forms of the run folders under `folders`, and the
    folders kept stale on purpose (records.provenance of each)."""
    seen: dict[str, set[str]] = {"data": set(), "code": set(), "machine": set()}
    stale = []
    for folder in folders:
        for run in records.run_folders(folder) if Path(folder).is_dir() else []:
            p = records.provenance(run)
            if p["run"]:
                for key in seen:
                    seen[key].add(p[key])
            if p["stale"]:
                stale.append(f"{Path(folder).name}/{run.relative_to(folder)}: {p['stale']}")
    return {**{k: sorted(v) for k, v in seen.items()}, "stale": stale}


def _origin_html(o: dict[str, Any] | None) -> str:
    if not o:
        return ""
    parts = " · ".join(f"{k} <code>{html.escape(', '.join(o[k]) or '?')}</code>" for k in ("data", "code", "machine"))
    stale = (f'<div class="stale">STALE: {len(o["stale"])} result folder(s) kept on purpose although their '
             f'params, data or code changed</div>') if o["stale"] else ""
    return f'<div class="meta">computed from: {parts}</div>{stale}'


def build(notebooks: list[str | Path], out: str | Path, title: str = "mt5study — the published study",
          sources: dict[str, list[Path]] | None = None, report_json: str | Path | None = None) -> Path:
    """Render executed notebooks into OUT/*.html plus OUT/index.html; returns the index path.
    `sources` maps a notebook's file name to the folders its numbers come from (provenance);
    `report_json` holds the conclusions for the index (default: report/report.json beside the
    notebooks' folder, where notebook 05 writes it in the default study)."""
    import nbformat
    from nbconvert import HTMLExporter

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    paths = sorted(Path(p) for p in notebooks)
    for path in paths:
        if not path.is_file():
            raise FileNotFoundError(f"{path}: executed notebook not found")
    if report_json is None and paths:
        report_json = paths[0].resolve().parent.parent / "report" / "report.json"
    exporter = HTMLExporter(template_name="lab")
    entries, bodies = [], []
    for path in paths:
        nb = nbformat.read(path, as_version=4)
        errors = _errors(nb)  # counted before cleaning: a failed cell stays on the page and the index
        cleaned = for_readers(nb)
        body, _ = exporter.from_notebook_node(nb, resources={"metadata": {"name": _title(nb, path.stem)}})
        bodies.append(body)
        meta = nb.metadata.get("papermill", {})
        entries.append({"page": path.with_suffix(".html").name, "title": _title(nb, path.stem), "errors": errors,
                        "ran": meta.get("end_time"), "seconds": meta.get("duration"), "cleaned": cleaned,
                        "origin": origin((sources or {})[path.name]) if path.name in (sources or {}) else None})
    for i, (e, body) in enumerate(zip(entries, bodies)):
        records.write_text_atomic(out / e["page"], _with_nav(body, _nav(entries, i)))
    env = records.environment()
    items = "\n".join(
        f'<li><a href="{html.escape(e["page"])}">{html.escape(e["title"])}</a>'
        f'<div class="meta">{html.escape(_when(e["ran"]))}'
        + (f", {e['seconds']:.0f} s" if e["seconds"] else "")
        + (f' — <span class="bad">{e["errors"]} failed cell(s)</span>' if e["errors"] else "")
        + "</div>" + _origin_html(e["origin"]) + "</li>" for e in entries)
    n_stale = sum(len((e["origin"] or {}).get("stale", [])) for e in entries)
    banner = (f'<p class="stale"><b>Stale results shown on purpose (keep_stale):</b> {n_stale} result folder(s) '
              "were not recomputed although their params, data or code changed; the pages marked STALE show "
              "them.</p>") if n_stale else ""
    git = env["git"]
    index = f"""<!doctype html><html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{banner}
{_conclusions_html(Path(report_json) if report_json else None)}
<h2>Pages</h2>
<p>Each page is an executed notebook of the study; every number in it was read from a run folder,
and each entry says what those numbers were computed from (data sha, code fingerprint, machine).</p>
<ol>{items}</ol>
<p class="meta">Built {html.escape(env["time_utc"])} from commit {html.escape(str(git.get("commit")))}
{"(uncommitted changes)" if git.get("dirty") else ""} on {html.escape(str(env["hardware"].get("cpu")))},
GPUs: {html.escape(", ".join(env["hardware"].get("gpus") or []) or "none")}.</p></body></html>
"""
    records.write_text_atomic(out / "index.html", index)
    records.write_json_atomic(out / "site.json", {"pages": entries, "env": env})
    return out / "index.html"


_CHECK_JS = """
const imgs = Array.from(document.images);
const broken = imgs.filter(i => !(i.complete && i.naturalWidth > 0)).map(i => (i.src || '').slice(0, 60));
const errors = document.querySelectorAll('[data-mime-type="application/vnd.jupyter.stderr"] .ansi-red-fg, .jp-OutputArea-output.jp-mod-error, .output_error').length;
const traceback = document.body.innerText.includes('Traceback (most recent call last)');
return JSON.stringify({ready: document.readyState, images: imgs.length, broken: broken, errors: errors, traceback: traceback,
                       title: document.title});
"""


def check(site: str | Path, screenshot_dir: str | Path | None = None) -> list[dict[str, Any]]:
    """Open every page of the site in headless Chromium; one report per page (see module doc)."""
    from selenium import webdriver
    from selenium.webdriver.chrome.service import Service

    site = Path(site).resolve()
    opts = webdriver.ChromeOptions()
    opts.binary_location = "/usr/bin/chromium"
    for flag in ("--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync",
                 "--no-first-run", "--window-size=1280,1600"):
        opts.add_argument(flag)
    driver = webdriver.Chrome(options=opts, service=Service("/usr/bin/chromedriver"))
    reports = []
    try:
        for page in sorted(site.glob("*.html")):
            driver.get(page.as_uri())
            result = json.loads(driver.execute_script(_CHECK_JS))
            links = driver.execute_script("return Array.from(document.links).map(a => a.getAttribute('href'))")
            missing = [h for h in links if h and not h.startswith(("http", "#", "mailto")) and not (site / h).exists()]
            if screenshot_dir:
                Path(screenshot_dir).mkdir(parents=True, exist_ok=True)
                driver.save_screenshot(str(Path(screenshot_dir) / f"{page.stem}.png"))
            reports.append({"page": page.name, **result, "missing_links": missing,
                            "ok": result["ready"] == "complete" and not result["broken"] and not result["errors"]
                            and not result["traceback"] and not missing})
    finally:
        driver.quit()
    return reports
