"""What the report (notebook 05) and the site show of a finished translation study (notebook 07).

Everything here reads `finetune.report_findings` (JSON-ready, kept in report.json): the pairs with
their split sizes, BLEU and chrF++ per pair for both starts (mean ± sd over seeds) and the verdict
sentences. Tables are for readers: named columns with units, scores to one decimal, no NaN.
"""

from __future__ import annotations

import math
from typing import Any

import pandas as pd

STARTS = {"pretrained": "pretrained", "random_init": "random init"}  # init -> how a reader names it
SCORES = {"bleu": "BLEU", "chrf": "chrF++"}  # sacrebleu's scores, 0-100


def _mean_sd(mean: Any, sd: Any, digits: int = 1) -> str:
    """'12.3 ± 0.4', or '12.3' where no sd exists (one seed: no spread can be given)."""
    if mean is None or (isinstance(mean, float) and math.isnan(mean)):
        return "—"
    if sd is None or (isinstance(sd, float) and math.isnan(sd)):
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {sd:.{digits}f}"


def sizes_table(f: dict[str, Any] | None) -> pd.DataFrame:
    """One row per pair: its strings in train, validation and test (empty when unknown)."""
    sizes = (f or {}).get("sizes") or {}
    order = [p for p in (f or {}).get("pairs") or [] if p in sizes] + [p for p in sizes if p not in ((f or {}).get("pairs") or [])]
    return pd.DataFrame([{"pair": p, **{f"{split} (strings)": int(n) for split, n in sizes[p].items()}} for p in order])


def scores_table(f: dict[str, Any] | None, digits: int = 1) -> pd.DataFrame:
    """One row per pair and decoding: BLEU and chrF++ (0-100) of both starts as mean ± sd over
    seeds, and the seeds each start completed; `mean over pairs` last within each decoding."""
    table = pd.DataFrame((f or {}).get("table") or [])
    if table.empty:
        return table
    rows = []
    for (pair, decoding), g in table.groupby(["pair", "decoding"], sort=False):
        row: dict[str, Any] = {"pair": pair, "decoding": decoding}
        for score, label in SCORES.items():
            for init, name in STARTS.items():
                hit = g[g["init"] == init]
                row[f"{label} {name} (mean ± sd)"] = (
                    _mean_sd(hit[f"{score}_mean"].iloc[0], hit[f"{score}_sd"].iloc[0], digits) if not hit.empty else "—")
        seeds = [str(int(g.loc[g["init"] == init, "seeds"].iloc[0])) for init in STARTS if (g["init"] == init).any()]
        row["seeds (pretrained / random init)"] = " / ".join(seeds)
        rows.append(row)
    out = pd.DataFrame(rows)
    pairs = [p for p in dict.fromkeys(out["pair"]) if p != "mean over pairs"] + ["mean over pairs"]
    decodings = sorted(set(out["decoding"]), key=lambda d: (d != "greedy", d))  # greedy first, then beams
    rank = {**{p: i for i, p in enumerate(pairs)}, **{d: i for i, d in enumerate(decodings)}}
    return out.sort_values(["decoding", "pair"], key=lambda c: c.map(rank)).reset_index(drop=True)


def sentences(f: dict[str, Any] | None) -> list[str]:
    """The verdict sentence of each decoding (greedy first), as the study wrote them."""
    lines = list((f or {}).get("sentences") or [])
    return sorted(lines, key=lambda s: "(greedy)" not in s)


def headline(f: dict[str, Any] | None) -> list[str]:
    """For the site's index: the pairs with their training sizes, then the greedy verdict."""
    if not f:
        return []
    sizes = f.get("sizes") or {}
    pairs = ", ".join(f"{p} ({sizes[p]['train']:,} training strings)" if p in sizes and "train" in sizes[p] else p
                      for p in f.get("pairs") or [])
    lines = [f"Translation pairs: {pairs}."] if pairs else []
    return lines + sentences(f)[:1]
