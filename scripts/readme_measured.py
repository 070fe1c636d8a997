"""Regenerate the README's measured study numbers from outputs/ (never typed by hand).

    python scripts/readme_measured.py                  # print the section (Markdown)
    python scripts/readme_measured.py --write README.md
    python scripts/readme_measured.py --earlier-record full.json --write README.md

`--write` replaces what lies between the two marker lines

    <!-- measured:begin (scripts/readme_measured.py writes this block; do not edit by hand) -->
    <!-- measured:end -->

and refuses a file without them (naming the file). The section gives the machine, the default
study's wall time per step (outputs/pipeline.json), the precision study's final eval losses as
mean ± sd over seeds with n, the best batch and learning rate with its verdict, QA EM/F1 for
both starts, translation BLEU/chrF++ for both starts, the scaling study's held-out gap, laws,
step-time error and per-trial overhead, and the verdict sentences, each read from the results
tables of the study folders.
A study not run yet is said to be missing, not filled in. `--earlier-record` names the
pipeline.json of an earlier full run when `mt5study study --only ...` has since rerun some
steps (it overwrites outputs/pipeline.json): steps not in the newer record are taken from the
earlier one, and the wall-time line says which run each step's time comes from.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

BEGIN = "<!-- measured:begin (scripts/readme_measured.py writes this block; do not edit by hand) -->"
END = "<!-- measured:end -->"


def merged_steps(newer: dict, earlier: dict | None) -> tuple[list[dict], str]:
    """The steps of `newer`, completed from `earlier` in the earlier run's order, and a note
    naming the runs (empty when there is one)."""
    steps = list(newer.get("steps", []))
    if not earlier:
        return steps, ""
    order = [s["step"] for s in earlier.get("steps", [])]
    have = {s["step"] for s in steps}
    from_earlier = [s for s in earlier.get("steps", []) if s["step"] not in have]
    merged = sorted(from_earlier + steps, key=lambda s: order.index(s["step"]) if s["step"] in order else len(order))

    def when(p: dict) -> str:
        return f"{p['env'].get('time_utc')} at {str(p['env']['git'].get('commit'))[:10]}"

    names = lambda group: ", ".join(s["step"] for s in merged if s in group)  # noqa: E731
    note = (f" Times from two runs of `mt5study study`: {names(from_earlier)} from {when(earlier)}; "
            f"{names(steps)} from {when(newer)} (`--only`).")
    return merged, note


def section(outputs: Path, earlier: Path | None = None) -> str:
    """The Markdown block from the study folders under `outputs`."""
    import pandas as pd

    from mt5study import records
    from mt5study.studies import figures, report

    lines: list[str] = []
    pipe = outputs / "pipeline.json"
    if pipe.exists():
        p = records.read_json(pipe)
        hw, v = p["env"]["hardware"], p["env"]["versions"]
        first = records.read_json(earlier) if earlier else None
        steps, note = merged_steps(p, first)
        argv = (first or p)["env"].get("argv", [])[1:]  # the full run's command when merged
        total = sum(s.get("seconds") or 0 for s in steps)
        lines.append(f"Machine: {hw.get('cpu')} ({hw.get('cpu_count')} cores, {hw.get('cpu_capability')}), "
                     f"{(hw.get('memory_bytes') or 0) / 2**30:.0f} GiB, GPUs: {', '.join(hw.get('gpus') or []) or 'none'}; "
                     f"torch {v.get('torch')}, DeepSpeed {v.get('deepspeed')}, transformers {v.get('transformers')}; "
                     f"run {p['env'].get('time_utc')} at commit {str(p['env']['git'].get('commit'))[:10]}"
                     + (" (uncommitted changes)" if p["env"]["git"].get("dirty") else "") + ".")
        lines.append("")
        lines.append(f"- **Default study wall time** (`{' '.join(argv)}`): {total / 60:.1f} min; "
                     + ", ".join(f"{s['step']} {s['seconds'] / 60:.1f}" for s in steps if s.get("seconds") is not None)
                     + " min (a step that reused finished runs costs less than a fresh one)." + note)
    else:
        lines.append(f"- Default study: not run yet ({pipe} missing).")

    prec_dir = outputs / "precision"
    if (prec_dir / "grid" / "results.parquet").exists():
        res = pd.read_parquet(prec_dir / "grid" / "results.parquet")
        t = figures.summary_table(res, ["precision", "zero_stage"])
        cells = []
        for _, r in t.iterrows():
            where = f"{r['precision']} ZeRO-{r['zero_stage']}"
            if not r["completed"]:
                cells.append(f"{where}: {r['not run'] or 'not completed'}")
                continue
            sd = r["± sd (eval)"]
            spread = f" ± {sd:.3f}" if pd.notna(sd) else ""
            speed = f", {r['tokens/s']:.0f} tokens/s" if pd.notna(r.get("tokens/s")) else ""
            cells.append(f"{where} {r['final eval loss']:.3f}{spread} (n={r['n (eval)']}"
                         f"{'' if spread else ': one seed, no spread'}{speed})")
        steps = int(res["steps"].dropna().max()) if res["steps"].notna().any() else 0
        lines.append(f"- **Precision study** (`outputs/precision`, {steps} steps per trial): final eval loss, mean ± sd "
                     f"over seeds: " + "; ".join(cells) + ". ln(8,000) = 8.99.")
        lines += [f"  - {v}" for v in report.precision_verdicts(res)]
    else:
        lines.append("- Precision study: not run yet.")

    bl_dir = outputs / "batch_lr"
    if (bl_dir / "grid" / "results.parquet").exists():
        v = report.batch_lr_verdict(pd.read_parquet(bl_dir / "grid" / "results.parquet"))
        lines.append(f"- **Batch × learning rate** (`outputs/batch_lr`): {v['sentence']}")
    else:
        lines.append("- Batch × learning rate study: not run yet.")

    qa = report.qa_findings(outputs / "qa")
    if qa:
        from mt5study.head_start import NAMES

        starts = "; ".join(f"{NAMES[k]}: {s['text']} ({s['questions']} questions)" for k, s in qa.items() if k in NAMES)
        lines.append(f"- **QA** (`outputs/qa`, all languages, language-aware normalisation): {starts}."
                     + (f" {qa['verdict']}" if qa.get("verdict") else ""))
        if qa.get("head_start"):
            lines.append(f"  - Fine-tuning curves: {qa['head_start']['text']}")
    else:
        lines.append("- QA study: not run yet.")

    tr = report.translation_findings(outputs / "translation") if (outputs / "translation" / "results.parquet").exists() else None
    if tr:
        from mt5study.translation import tables as tr_tables

        lines.append(f"- **Translation** (`outputs/translation`): " + " ".join(tr_tables.headline(tr)))
        lines += [f"  - {s}" for s in tr_tables.sentences(tr)[1:]]
    else:
        lines.append("- Translation study: not run yet.")

    sc = report.scaling_findings(outputs / "scaling")
    if sc:
        lines.append("- **Scaling** (`outputs/scaling`):")
        lines += [f"  - {s}" for s in sc["sentences"]]
        over = (sc["headline"] or {}).get("trial_overhead") or {}
        if over.get("fraction") is not None:
            lines.append(f"  - Per-trial overhead (process start, set-up, final save): {over['overhead_seconds']:.0f} s "
                         f"of {over['wall_seconds']:.0f} s over {over['trials']} trials ({over['fraction']:.1%}).")
    else:
        lines.append("- Scaling study: not run yet.")
    return "\n".join(lines) + "\n"


def replace(text: str, block: str, source: str = "README.md") -> str:
    """`text` with the block between the markers replaced; ValueError naming `source` without them."""
    if text.count(BEGIN) != 1 or text.count(END) != 1 or text.index(BEGIN) > text.index(END):
        raise ValueError(f"{source}: needs exactly one line '{BEGIN}' followed by one line '{END}'")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    return f"{head}{BEGIN}\n{block}{END}{tail}"


def main(argv: list[str] | None = None) -> int:
    from mt5study.paths import OUTPUTS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--outputs", type=Path, default=OUTPUTS, help="the study folders (default: outputs/)")
    ap.add_argument("--write", type=Path, help="replace the block between the markers in this file")
    ap.add_argument("--earlier-record", type=Path, help="pipeline.json of an earlier full run (see above)")
    args = ap.parse_args(argv)
    if args.earlier_record and not args.earlier_record.is_file():
        print(f"readme_measured: --earlier-record {args.earlier_record}: no such file", file=sys.stderr)
        return 2
    block = section(args.outputs, args.earlier_record)
    if not args.write:
        sys.stdout.write(block)
        return 0
    text = args.write.read_text(encoding="utf-8")
    args.write.write_text(replace(text, block, str(args.write)), encoding="utf-8")
    print(f"wrote the measured section of {args.write}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
