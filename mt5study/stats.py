"""Spread, intervals and verdicts: what every compared number of the study carries.

A compared number is a mean over repeats (seeds: initialisation and data order, `run.seed`) or
over eval examples. `spread` gives mean, sd, n and a 95 % interval of the mean; with one repeat
it says that no spread can be given (sd and interval are None, never a zero-width bar).

Verdicts are sentences computed from the numbers with a named test:
- `paired` repeats (the same seeds on both sides, or the same eval examples): a t-interval of
  the mean per-seed difference (`paired-t`), or a paired bootstrap over examples
  (`paired-bootstrap`, resampling the examples and recomputing both means);
- unpaired repeats: Welch's t-interval of the difference of means (`welch`), or the overlap of
  the two 95 % intervals of the means (`overlap`, conservative).
A difference whose interval contains 0 (or whose intervals overlap) is "within noise".
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats as sps

LEVEL = 0.95  # two-sided confidence level of every interval
TESTS = ("paired-t", "paired-bootstrap", "welch", "overlap")


def _finite(values: Sequence[float] | np.ndarray) -> np.ndarray:
    a = np.asarray([np.nan if v is None else v for v in values], dtype=float)
    return a[np.isfinite(a)]


@dataclass(frozen=True)
class Spread:
    """Mean of n repeats, their sd (ddof 1) and a t-interval of the mean; None where n < 2."""

    mean: float
    n: int
    sd: float | None
    low: float | None
    high: float | None
    over: str = "seeds"  # what the repeats are: seeds, or eval examples

    @property
    def has_spread(self) -> bool:
        return self.sd is not None

    def format(self, digits: int = 3) -> str:
        """'6.098 ± 0.012 (n=3 seeds)', or '6.098 (n=1 seed: no spread)'."""
        if math.isnan(self.mean):
            return "n/a (no finite value)"
        if not self.has_spread:
            return f"{self.mean:.{digits}f} (n={self.n} {self.over.rstrip('s')}: no spread)"
        return f"{self.mean:.{digits}f} ± {self.sd:.{digits}f} (n={self.n} {self.over})"


def spread(values: Sequence[float] | np.ndarray, over: str = "seeds", level: float = LEVEL) -> Spread:
    """Mean, sd and t-interval of the finite values (NaN and None, e.g. diverged runs, left out)."""
    a = _finite(values)
    if a.size == 0:
        return Spread(math.nan, 0, None, None, None, over)
    mean = float(a.mean())
    if a.size < 2:
        return Spread(mean, 1, None, None, None, over)
    sd = float(a.std(ddof=1))
    half = float(sps.t.ppf(0.5 + level / 2, a.size - 1)) * sd / math.sqrt(a.size)
    return Spread(mean, int(a.size), sd, mean - half, mean + half, over)


def bootstrap_interval(values: Sequence[float], n_boot: int = 2000, seed: int = 0,
                       level: float = LEVEL) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling the values with replacement)."""
    a = _finite(values)
    if a.size < 2:
        raise ValueError(f"a bootstrap needs at least 2 values, got {a.size}")
    rng = np.random.default_rng(seed)
    means = a[rng.integers(0, a.size, size=(n_boot, a.size))].mean(axis=1)
    return float(np.quantile(means, (1 - level) / 2)), float(np.quantile(means, (1 + level) / 2))


@dataclass(frozen=True)
class Difference:
    """a - b with its interval under `test`; within_noise when the interval contains 0."""

    diff: float
    low: float | None
    high: float | None
    test: str
    n_a: int
    n_b: int

    @property
    def measurable(self) -> bool:
        return self.low is not None

    @property
    def within_noise(self) -> bool:
        return self.measurable and self.low <= 0.0 <= self.high


def difference(a: Sequence[float], b: Sequence[float], test: str = "welch", n_boot: int = 2000,
               seed: int = 0, level: float = LEVEL) -> Difference:
    """The difference of means a - b and its interval by `test` (one of TESTS).

    Paired tests need a and b of equal length, element i of both from the same seed or example;
    a pair with a non-finite side is dropped. With fewer than 2 repeats on a side the interval is
    None: no spread can be given.
    """
    if test not in TESTS:
        raise ValueError(f"unknown test {test!r}; choose one of {TESTS}")
    if test.startswith("paired"):
        if len(a) != len(b):
            raise ValueError(f"paired test {test!r} needs equal lengths, got {len(a)} and {len(b)}")
        x = np.asarray([np.nan if v is None else v for v in a], dtype=float)
        y = np.asarray([np.nan if v is None else v for v in b], dtype=float)
        keep = np.isfinite(x) & np.isfinite(y)
        x, y = x[keep], y[keep]
        n = int(x.size)
        if n == 0:
            return Difference(math.nan, None, None, test, 0, 0)
        diff = float((x - y).mean())
        if n < 2:
            return Difference(diff, None, None, test, n, n)
        if test == "paired-t":
            s = spread(x - y, level=level)
            return Difference(diff, s.low, s.high, test, n, n)
        lo, hi = bootstrap_interval(x - y, n_boot=n_boot, seed=seed, level=level)  # mean of diffs = diff of means
        return Difference(diff, lo, hi, test, n, n)
    sa, sb = spread(a, level=level), spread(b, level=level)
    diff = sa.mean - sb.mean
    if not (sa.has_spread and sb.has_spread):
        return Difference(diff, None, None, test, sa.n, sb.n)
    if test == "overlap":  # [a_lo - b_hi, a_hi - b_lo] contains 0 exactly when the intervals overlap
        return Difference(diff, sa.low - sb.high, sa.high - sb.low, test, sa.n, sb.n)
    va, vb = sa.sd**2 / sa.n, sb.sd**2 / sb.n
    se = math.sqrt(va + vb)
    if se == 0.0:
        return Difference(diff, diff, diff, test, sa.n, sb.n)
    dof = (va + vb) ** 2 / (va**2 / (sa.n - 1) + vb**2 / (sb.n - 1))  # Welch-Satterthwaite
    half = float(sps.t.ppf(0.5 + level / 2, dof)) * se
    return Difference(diff, diff - half, diff + half, test, sa.n, sb.n)


TEST_NAMES = {
    "paired-t": "paired t-interval over seeds",
    "paired-bootstrap": "paired bootstrap over eval examples",
    "welch": "Welch t-interval",
    "overlap": "overlap of the 95 % intervals",
}


def _fmt(x: float, digits: int) -> str:
    return f"{0.0 if abs(x) < 0.5 * 10**-digits else x:+.{digits}f}"  # no "-0.000"


def verdict(a: Sequence[float], b: Sequence[float], name_a: str, name_b: str, metric: str,
            test: str = "welch", lower_is_better: bool = True, digits: int = 3, over: str = "seeds",
            n_boot: int = 2000, seed: int = 0) -> str:
    """One sentence comparing a with b on `metric`, from the numbers and the stated test.

    "bf16 matches fp32 within noise on eval loss: 6.098 ± 0.012 vs 6.099 ± 0.011 (n=3 seeds);
    difference -0.001, 95 % interval [-0.020, +0.018] contains 0 (Welch t-interval)."
    """
    sa, sb = spread(a, over), spread(b, over)
    d = difference(a, b, test=test, n_boot=n_boot, seed=seed)
    if test.startswith("paired"):
        over = "eval examples" if test == "paired-bootstrap" else over
        sa, sb = spread(a, over), spread(b, over)
    nums = f"{sa.format(digits)} vs {sb.format(digits)}"
    if math.isnan(d.diff):
        return f"{name_a} vs {name_b} on {metric}: no finite values to compare ({nums})."
    if not d.measurable:
        return (f"{name_a} vs {name_b} on {metric}: {nums}; difference {_fmt(d.diff, digits)}, but with one "
                f"repeat no spread can be given, so no verdict.")
    why = (f"difference {_fmt(d.diff, digits)}, {round(LEVEL * 100)} % interval [{_fmt(d.low, digits)}, "
           f"{_fmt(d.high, digits)}] ({TEST_NAMES[test]})")
    if d.within_noise:
        bound = max(abs(d.low), abs(d.high), 10**-digits)  # below the last shown digit: say so
        return (f"{name_a} matches {name_b} within noise on {metric}: {nums}; {why} contains 0, so any "
                f"difference is smaller than {bound:.{digits}f}.")
    if abs(d.diff) < 0.5 * 10**-digits:  # real (the interval excludes 0) but below the digits shown
        return (f"{name_a} and {name_b} differ on {metric} by less than {0.5 * 10**-digits:.{digits + 1}f}, below "
                f"the digits shown: {nums}; {why} excludes 0, so the difference is consistent over {over} but "
                f"negligible at this precision.")
    better = (d.diff < 0) == lower_is_better
    word = "better" if better else "worse"
    return f"{name_a} is {word} than {name_b} on {metric} by {abs(d.diff):.{digits}f}: {nums}; {why} excludes 0."


def wrap(text: str, width: int = 100) -> str:
    """Verdict sentences for a printed cell: each line filled to `width` at word boundaries (a page
    would otherwise break a long line mid-word)."""
    import textwrap

    return "\n".join(textwrap.fill(line, width) if line else line for line in text.split("\n"))


def best_of(groups: Mapping[str, Sequence[float]], metric: str, lower_is_better: bool = True,
            test: str = "welch", digits: int = 3, over: str = "seeds") -> dict:
    """The best group by mean, and which others are within noise of it (by `test`).

    Returns {"best", "tied" (names within noise of the best), "untestable" (one repeat),
    "sentence"}: "global batch 16 is best on eval loss (…); 32 is within noise of it (…)".
    """
    spreads = {k: spread(v, over) for k, v in groups.items()}
    finite = {k: s for k, s in spreads.items() if not math.isnan(s.mean)}
    if not finite:
        raise ValueError(f"best_of({metric}): no group has a finite value")
    best = (min if lower_is_better else max)(finite, key=lambda k: finite[k].mean)
    tied, untestable = [], []
    for k in finite:
        if k == best:
            continue
        d = difference(groups[k], groups[best], test=test)
        if not d.measurable:
            untestable.append(k)
        elif d.within_noise:
            tied.append(k)
    sentence = f"{best} is best on {metric}: {finite[best].format(digits)}"
    if not finite[best].has_spread or untestable:
        sentence += (f"; with one repeat no spread can be given, so {', '.join(untestable) or 'the others'} "
                     f"cannot be told apart from it")
    if tied:
        sentence += (f"; {', '.join(tied)} {'is' if len(tied) == 1 else 'are'} within noise of it ("
                     f"{TEST_NAMES[test]}: " + ", ".join(f"{k} {finite[k].format(digits)}" for k in tied) + ")")
    elif finite[best].has_spread and not untestable and len(finite) > 1:
        sentence += f"; every other setting is worse beyond noise ({TEST_NAMES[test]})"
    return {"best": best, "tied": tied, "untestable": untestable, "sentence": sentence + "."}


def summarize(df, by: Sequence[str], value: str, over: str = "seeds", digits: int = 4):
    """One row per group of `by`: mean, sd, n and the 95 % interval of `value` (pandas in, out)."""
    import pandas as pd

    rows = []
    for key, g in df.groupby(list(by), sort=True, dropna=False):
        key = key if isinstance(key, tuple) else (key,)
        s = spread(g[value].tolist(), over)
        rows.append({**dict(zip(by, key)), "mean": s.mean, "sd": s.sd, "n": s.n, "ci_low": s.low,
                     "ci_high": s.high, "text": s.format(min(digits, 3))})
    out = pd.DataFrame(rows)
    return out.round({c: digits for c in ("mean", "sd", "ci_low", "ci_high")}) if not out.empty else out
