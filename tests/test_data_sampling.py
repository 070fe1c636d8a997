"""Temperature sampling probabilities and their use with datasets.interleave_datasets."""

import math

import datasets
import numpy as np
import pytest

from mt5study.data import temperature_probs
from mt5study.data.sampling import empirical_shares, interleave, share_tolerance


def test_values_by_hand():
    # alpha 0.5: weights sqrt(100) = 10 and sqrt(1) = 1.
    assert temperature_probs({"a": 100, "b": 1}, alpha=0.5) == pytest.approx({"a": 10 / 11, "b": 1 / 11})
    # alpha 1: natural shares; alpha 0: uniform.
    assert temperature_probs({"a": 3, "b": 1}, alpha=1.0) == pytest.approx({"a": 0.75, "b": 0.25})
    assert temperature_probs({"a": 1e9, "b": 1, "c": 5}, alpha=0.0) == pytest.approx({"a": 1 / 3, "b": 1 / 3, "c": 1 / 3})


def test_mt5_alpha_boosts_small_languages():
    sizes = {"en": 3_000_000, "sw": 30_000}  # 100:1
    p = temperature_probs(sizes)  # alpha 0.3 by default
    ratio = 100 ** 0.3  # 3.98
    assert p["en"] == pytest.approx(ratio / (ratio + 1))
    assert p["sw"] > sizes["sw"] / sum(sizes.values())


def test_cap_flattens_the_largest():
    p = temperature_probs({"a": 1000, "b": 500, "c": 10}, alpha=1.0, cap=100)
    assert p == pytest.approx({"a": 100 / 210, "b": 100 / 210, "c": 10 / 210})


def test_normalised_and_empty_language_gets_zero():
    rng = np.random.default_rng(0)
    sizes = {f"l{i}": int(n) for i, n in enumerate(rng.integers(1, 10**7, size=50))}
    sizes["empty"] = 0
    for alpha in (0.0, 0.3, 0.7, 1.0):
        p = temperature_probs(sizes, alpha)
        assert math.fsum(p.values()) == pytest.approx(1.0, abs=1e-12)
        assert p["empty"] == 0.0 and all(v > 0 for k, v in p.items() if k != "empty")


@pytest.mark.parametrize("sizes,kw", [
    ({}, {}),
    ({"a": -1}, {}),
    ({"a": 0, "b": 0}, {}),
    ({"a": float("nan")}, {}),
    ({"a": "10"}, {}),
    ({"a": 10}, {"alpha": -0.1}),
    ({"a": 10}, {"cap": 0}),
])
def test_bad_input(sizes, kw):
    with pytest.raises(ValueError):
        temperature_probs(sizes, **kw)


def _lang_dataset(lang, n):
    return datasets.Dataset.from_dict({"lang": [lang] * n, "i": list(range(n))})


@pytest.mark.parametrize("strategy", ["first_exhausted", "all_exhausted"])
def test_interleaved_shares_match_probabilities(strategy):
    sizes = {"big": 6000, "mid": 1500, "small": 120}
    probs = temperature_probs(sizes, alpha=0.3)
    ds = interleave({k: _lang_dataset(k, n) for k, n in sizes.items()}, probs, seed=0, stopping_strategy=strategy)
    n = len(ds)
    shares = empirical_shares(ds["lang"], list(sizes))
    for lang, p in probs.items():
        # Tolerance: 4 binomial standard errors of the share over n draws, plus 1/n.
        assert abs(shares[lang] - p) <= share_tolerance(p, n), (lang, shares[lang], p, n)
    if strategy == "all_exhausted":
        for lang, size in sizes.items():
            seen = {i for l, i in zip(ds["lang"], ds["i"]) if l == lang}
            assert len(seen) == size  # ran until every example of every language appeared


def test_interleave_is_seeded():
    parts = {"a": _lang_dataset("a", 300), "b": _lang_dataset("b", 300)}
    probs = {"a": 0.7, "b": 0.3}
    one = interleave(parts, probs, seed=5, stopping_strategy="first_exhausted")["lang"]
    two = interleave(parts, probs, seed=5, stopping_strategy="first_exhausted")["lang"]
    other = interleave(parts, probs, seed=6, stopping_strategy="first_exhausted")["lang"]
    assert list(one) == list(two) and list(one) != list(other)


def test_tolerance_would_catch_a_wrong_mixture():
    # The share test above can fail: natural shares are far outside the tolerance of alpha 0.3.
    sizes = {"big": 6000, "mid": 1500, "small": 120}
    probs = temperature_probs(sizes, alpha=0.3)
    natural = temperature_probs(sizes, alpha=1.0)
    assert abs(natural["small"] - probs["small"]) > share_tolerance(probs["small"], 2000)
