"""Temperature-balanced language sampling (mT5: p_l ∝ n_l^α with α = 0.3).

With α = 1 languages are sampled in proportion to their size; with α = 0 uniformly; mT5's
α = 0.3 boosts small languages (Xue et al. 2021, section 2; seqio's `rate_num_examples` with
temperature 1/α, whose `maximum` is the `cap` here). The probabilities drive
`datasets.interleave_datasets`.
"""

from __future__ import annotations

import math
from typing import Mapping, Sequence

import numpy as np


def temperature_probs(sizes: Mapping[str, float], alpha: float = 0.3, cap: float | None = None) -> dict[str, float]:
    """p_l ∝ min(n_l, cap)^alpha, normalised; a language of size 0 gets probability 0."""
    if not sizes:
        raise ValueError("temperature_probs: no languages given")
    if not (isinstance(alpha, (int, float)) and 0.0 <= alpha and math.isfinite(alpha)):
        raise ValueError(f"temperature_probs: alpha must be a finite number >= 0, got {alpha!r}")
    if cap is not None and not (cap > 0 and math.isfinite(cap)):
        raise ValueError(f"temperature_probs: cap must be positive, got {cap!r}")
    for lang, n in sizes.items():
        if isinstance(n, bool) or not isinstance(n, (int, float, np.integer, np.floating)) or not n >= 0 or not math.isfinite(n):
            raise ValueError(f"temperature_probs: size of {lang!r} must be a finite number >= 0, got {n!r}")
    if not any(n > 0 for n in sizes.values()):
        raise ValueError(f"temperature_probs: every language has size 0: {dict(sizes)}")
    weights = {}
    for lang, n in sizes.items():
        n = float(min(n, cap) if cap is not None else n)
        weights[lang] = n**alpha if n > 0 else 0.0  # 0**0 would be 1: an empty language stays out
    total = math.fsum(weights.values())
    return {lang: w / total for lang, w in weights.items()}


def natural_shares(sizes: Mapping[str, float]) -> dict[str, float]:
    """Each language's share of the total (α = 1)."""
    return temperature_probs(sizes, alpha=1.0)


def empirical_shares(langs: Sequence[str], languages: Sequence[str]) -> dict[str, float]:
    """Share of each of `languages` among the labels `langs` (e.g. the output's lang column)."""
    values, counts = np.unique(np.asarray(langs, dtype=object), return_counts=True)
    found = dict(zip(values.tolist(), counts.tolist()))
    total = max(sum(found.values()), 1)
    return {lang: found.get(lang, 0) / total for lang in languages}


def share_tolerance(p: float, n: int, sigmas: float = 4.0) -> float:
    """Allowed |observed - p| for a share of n draws: `sigmas` binomial standard errors,
    sqrt(p (1 - p) / n), plus 1/n for rounding (interleaving is seeded, not exact)."""
    return sigmas * math.sqrt(p * (1.0 - p) / max(n, 1)) + 1.0 / max(n, 1)


def interleave(datasets_by_lang, probabilities: Mapping[str, float], seed: int, stopping_strategy: str):
    """datasets.interleave_datasets over the languages with probability > 0, in a fixed order."""
    import datasets

    langs = [lang for lang in sorted(datasets_by_lang) if probabilities.get(lang, 0.0) > 0]
    if not langs:
        raise ValueError("interleave: no language with examples and probability > 0")
    total = math.fsum(probabilities[lang] for lang in langs)
    probs = [probabilities[lang] / total for lang in langs]
    if len(langs) == 1:
        return datasets_by_lang[langs[0]]
    return datasets.interleave_datasets(
        [datasets_by_lang[lang] for lang in langs], probabilities=probs, seed=seed, stopping_strategy=stopping_strategy
    )
