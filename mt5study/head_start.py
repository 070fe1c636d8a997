"""What a pretrained start is worth in fine-tuning steps: the two starts' loss curves, step by step.

The downstream verdicts (QA's EM/F1, translation's chrF++) say whether the pretrained start ends
ahead. This says where its advantage goes on the way: the training loss of the pretrained start
and of random initialisation at every logged step, paired by seed (a seed gives both starts the
same data order, so the batch-to-batch noise cancels in the difference):

- `lead_first`: how much lower the pretrained start is at the first logged step;
- `lead_until`: the last logged step at which it is still lower by more than the noise (the
  paired 95 % interval of the difference excludes 0), and `lead_after`, whether that holds again
  later (a lead that comes back is not a head start that ran out);
- `behind_from`: the first logged step at which random initialisation is lower by more than the noise;
- `worth_steps`: random initialisation first reaches the pretrained start's first-step loss
  `worth_steps` steps later: what the pretraining saved, in fine-tuning steps (the idea of
  Hernandez et al. 2021, "Scaling laws for transfer", counted in steps rather than tokens);
- `final`: the held-out loss at the last evaluation, pretrained minus random, with its verdict.

With one seed per start no interval can be given and the sentence says so.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd

from mt5study import stats

STARTS = ("pretrained", "random_init")
NAMES = {"pretrained": "the pretrained start", "random_init": "random initialisation"}


@dataclass
class HeadStart:
    seeds: int
    first_step: int
    lead_first: stats.Difference  # random - pretrained training loss at first_step (> 0: pretrained lower)
    lead_until: int | None  # last step with the lead outside the noise; None: never outside it
    lead_after: bool  # the lead is outside the noise again after a step where it was not
    behind_from: int | None  # first step where random init is lower outside the noise; None: never
    worth_steps: int | None  # None: random never reaches the pretrained start's first-step loss
    last_step: int
    final_text: str  # held-out loss at the last evaluation, pretrained vs random (stats.verdict)

    def as_dict(self) -> dict[str, Any]:
        d = self.lead_first
        return {"seeds": self.seeds, "first_step": self.first_step, "lead_first": d.diff,
                "lead_first_interval": None if d.low is None else [d.low, d.high], "lead_until": self.lead_until,
                "lead_after": self.lead_after, "behind_from": self.behind_from, "worth_steps": self.worth_steps, "last_step": self.last_step,
                "final": self.final_text}


def _paired(curves: pd.DataFrame, column: str) -> pd.DataFrame:
    """step x (init, seed) table of `column`, the steps and seeds that both starts logged."""
    rows = curves.dropna(subset=[column])
    table = rows.pivot_table(index="step", columns=["init", "seed"], values=column, aggfunc="last")
    seeds = sorted(set(table["pretrained"].columns) & set(table["random_init"].columns))
    return table.loc[:, [(i, s) for i in STARTS for s in seeds]].dropna()


def _step_differences(train: pd.DataFrame) -> list[stats.Difference]:
    """Per logged step of a `_paired` table: random init minus pretrained, paired over seeds."""
    return [stats.difference(train.loc[s, "random_init"].tolist(), train.loc[s, "pretrained"].tolist(), "paired-t")
            for s in train.index]


def head_start(curves: pd.DataFrame) -> HeadStart | None:
    """The comparison above from `finetune.curves(runs)` (init, seed, step, loss, eval_loss); None
    when the curves lack either start."""
    if curves.empty or not set(STARTS) <= set(curves["init"]):
        return None
    train = _paired(curves, "loss")
    if train.empty:
        return None
    seeds = train["pretrained"].shape[1]
    steps = list(train.index)
    diffs = _step_differences(train)
    ahead = [d.measurable and d.low > 0 for d in diffs]  # pretrained lower, outside the noise
    lead_until = lead_after = None
    if ahead[0]:
        k = ahead.index(False) if False in ahead else len(ahead)
        lead_until = steps[k - 1]
        lead_after = any(ahead[k:])
    behind = [s for s, d in zip(steps, diffs) if d.measurable and d.high < 0]
    target = train.loc[steps[0], "pretrained"].mean()
    reached = [s for s in steps if train.loc[s, "random_init"].mean() <= target]
    evals = _paired(curves, "eval_loss")
    if evals.empty:
        final = "no held-out loss was logged by both starts."
    else:
        last = evals.index[-1]
        final = stats.verdict(evals.loc[last, "pretrained"].tolist(), evals.loc[last, "random_init"].tolist(),
                              "the pretrained start", "random initialisation", f"held-out loss at step {last}",
                              test="paired-t", digits=3)
    return HeadStart(seeds=seeds, first_step=int(steps[0]), lead_first=diffs[0], lead_until=lead_until,
                     lead_after=bool(lead_after), behind_from=int(behind[0]) if behind else None, worth_steps=None if not reached else int(reached[0] - steps[0]),
                     last_step=int(steps[-1]), final_text=final)


def text(h: HeadStart | None, digits: int = 2) -> str:
    """The comparison in sentences, from the numbers."""
    if h is None:
        return "Head start: the curves of both starts are needed (compare_random_init: true)."
    d = h.lead_first
    word = "lower" if d.diff > 0 else "higher"
    first = (f"At step {h.first_step} the pretrained start's training loss is {abs(d.diff):.{digits}f} {word} than "
             f"random initialisation's (mean over {h.seeds} seed{'s' if h.seeds != 1 else ''}, paired by seed")
    if not d.measurable:
        return first + "); with one seed no spread can be given, so no verdict on the head start."
    first += f", 95 % interval [{d.low:+.{digits}f}, {d.high:+.{digits}f}])."
    if h.lead_until is None:
        lead = " That lead is within the noise from the first step on."
    elif h.lead_until == h.last_step:
        lead = f" The pretrained start stays lower by more than the noise up to the last logged step ({h.last_step})."
    else:
        lead = (f" Its lead is larger than the noise up to step {h.lead_until} and not at the next logged step"
                + (" (it is again at some later steps)." if h.lead_after else ", nor later."))
    if h.worth_steps is None:
        worth = f" Random initialisation does not reach the pretrained start's step-{h.first_step} loss by step {h.last_step}."
    else:
        worth = (f" Random initialisation reaches the pretrained start's step-{h.first_step} loss "
                 f"{h.worth_steps} steps later: the pretraining is worth about {h.worth_steps} fine-tuning steps here.")
    behind = ("" if h.behind_from is None else
              f" From step {h.behind_from} random initialisation is lower by more than the noise at some steps.")
    return first + lead + worth + behind + " At the end, " + h.final_text


def lead_table(curves: pd.DataFrame, digits: int = 3) -> pd.DataFrame:
    """Per logged step: each start's mean training loss and the paired difference with its interval."""
    train = _paired(curves, "loss")
    rows = []
    for s, d in zip(train.index, _step_differences(train)):
        rows.append({"step": int(s), "pretrained": train.loc[s, "pretrained"].mean(),
                     "random init": train.loc[s, "random_init"].mean(), "lead": d.diff,
                     "lead low": d.low if d.low is not None else math.nan,
                     "lead high": d.high if d.high is not None else math.nan})
    return pd.DataFrame(rows).round(digits) if rows else pd.DataFrame(rows)


def run_curves(study: str | Path) -> pd.DataFrame:
    """The fine-tuning curves of a finished QA or translation study folder (its runs.parquet), each
    run read from <study>/runs/<init>/seed<k> (the folder moves with the study)."""
    from mt5study.qa.finetune import curves

    runs = pd.read_parquet(Path(study) / "runs.parquet")
    runs = runs.assign(run=[str(Path(study) / "runs" / r.init / f"seed{int(r.seed)}") for r in runs.itertuples()])
    return curves(runs[[Path(r, "metrics.jsonl").exists() for r in runs.run]])


def findings(study: str | Path | None) -> dict[str, Any] | None:
    """For the report (report.json): the head start of a finished study folder and its sentences;
    None without runs of both starts."""
    if study is None or not (Path(study) / "runs.parquet").exists():
        return None
    h = head_start(run_curves(study))
    return None if h is None else {**h.as_dict(), "text": text(h)}


__all__ = ["HeadStart", "findings", "head_start", "lead_table", "run_curves", "text"]
