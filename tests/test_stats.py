"""stats.py on synthetic data where the answer is known."""

import math

import numpy as np
import pandas as pd
import pytest

from mt5study import stats


def test_spread_matches_numpy_and_scipy():
    x = [6.10, 6.12, 6.08, 6.11]
    s = stats.spread(x)
    assert s.n == 4 and s.mean == pytest.approx(np.mean(x)) and s.sd == pytest.approx(np.std(x, ddof=1))
    half = 3.182446 * s.sd / 2  # t(0.975, 3) x sd / sqrt(4)
    assert (s.low, s.high) == (pytest.approx(s.mean - half), pytest.approx(s.mean + half))
    assert s.format(3) == f"{np.mean(x):.3f} ± {np.std(x, ddof=1):.3f} (n=4 seeds)"


def test_one_seed_gives_no_spread_and_no_verdict():
    s = stats.spread([6.1, float("nan"), None])  # a diverged run (NaN) is left out
    assert s.n == 1 and s.sd is None and s.low is None and not s.has_spread
    assert "no spread" in s.format()
    sentence = stats.verdict([6.1], [6.2], "bf16", "fp32", "eval loss")
    assert "no spread can be given" in sentence and "within noise" not in sentence
    assert not stats.difference([6.1], [6.2]).measurable
    best = stats.best_of({"16": [5.0], "32": [5.5]}, "eval loss")
    assert best["best"] == "16" and best["untestable"] == ["32"] and "no spread can be given" in best["sentence"]


@pytest.mark.parametrize("test", ["welch", "overlap"])
def test_same_distribution_is_within_noise_and_a_shift_is_not(test):
    rng = np.random.default_rng(0)
    a, b = rng.normal(6.0, 0.05, 5), rng.normal(6.0, 0.05, 5)
    d = stats.difference(a, b, test=test)
    assert d.within_noise
    sentence = stats.verdict(a, b, "bf16", "fp32", "eval loss", test=test)
    assert sentence.startswith("bf16 matches fp32 within noise") and "contains 0" in sentence
    far = stats.difference(a + 1.0, b, test=test)
    assert not far.within_noise and far.low > 0
    worse = stats.verdict(a + 1.0, b, "fp16", "fp32", "eval loss", test=test)
    assert worse.startswith("fp16 is worse than fp32 on eval loss by ") and "excludes 0" in worse
    better = stats.verdict(a + 1.0, b, "pretrained", "random", "F1", test=test, lower_is_better=False)
    assert better.startswith("pretrained is better than random on F1")


def test_a_real_difference_below_the_digits_shown_is_not_called_worse():
    # ZeRO-3 vs ZeRO-0 in fp32: the same curve to ~1e-5 on every seed, so a paired interval
    # excludes 0; "worse by 0.000" would mislead a reader.
    b = [6.60, 6.67, 6.75]
    a = [v + 1.2e-5 + 1e-7 * i for i, v in enumerate(b)]
    sentence = stats.verdict(a, b, "ZeRO-3", "ZeRO-0", "eval loss", test="paired-t")
    assert sentence.startswith("ZeRO-3 and ZeRO-0 differ on eval loss by less than 0.0005, below the digits shown")
    assert "excludes 0" in sentence and "worse" not in sentence and "negligible" in sentence
    shown = stats.verdict([v + 0.01 for v in b], b, "bf16", "fp32", "eval loss", test="paired-t")
    assert shown.startswith("bf16 is worse than fp32 on eval loss by 0.010")


def test_welch_interval_matches_scipy():
    a, b = [1.0, 1.2, 1.1, 1.3], [0.7, 0.9, 0.8]
    d = stats.difference(a, b, test="welch")
    r = __import__("scipy").stats.ttest_ind(a, b, equal_var=False)
    ci = r.confidence_interval(0.95)
    assert (d.low, d.high) == (pytest.approx(ci.low), pytest.approx(ci.high))


def test_pairing_finds_a_small_consistent_shift_that_seed_noise_hides():
    # Each seed moves both settings alike (large between-seed spread); b is 0.01 lower for every seed.
    seeds = np.array([6.0, 6.3, 5.8, 6.5, 6.1])
    a, b = seeds + 0.01, seeds
    assert stats.difference(a, b, test="welch").within_noise
    paired = stats.difference(a, b, test="paired-t")
    assert not paired.within_noise and paired.diff == pytest.approx(0.01)
    with pytest.raises(ValueError, match="equal lengths"):
        stats.difference(a, b[:3], test="paired-t")


def test_paired_bootstrap_over_examples():
    rng = np.random.default_rng(1)
    base = rng.uniform(0, 1, 400)  # per-example F1 of one start
    same = stats.difference(base, base[rng.permutation(400)] * 0 + base, test="paired-bootstrap")
    assert same.diff == 0 and same.within_noise
    lift = np.clip(base + rng.normal(0.05, 0.05, 400), 0, 1)
    d = stats.difference(lift, base, test="paired-bootstrap", n_boot=1000, seed=3)
    assert not d.within_noise and d.low > 0
    assert d == stats.difference(lift, base, test="paired-bootstrap", n_boot=1000, seed=3)  # seeded
    assert "paired bootstrap over eval examples" in stats.verdict(lift, base, "pretrained", "random", "F1",
                                                                  test="paired-bootstrap", lower_is_better=False)
    lo, hi = stats.bootstrap_interval(base, seed=0)
    assert lo < base.mean() < hi
    with pytest.raises(ValueError, match="at least 2"):
        stats.bootstrap_interval([1.0])


def test_best_of_names_the_known_best_and_its_ties():
    rng = np.random.default_rng(2)
    groups = {"16": rng.normal(5.0, 0.02, 3), "32": rng.normal(5.01, 0.02, 3), "64": rng.normal(5.5, 0.02, 3)}
    out = stats.best_of(groups, "eval loss")
    assert out["best"] in ("16", "32") and "64" not in out["tied"]
    clear = stats.best_of({"16": [5.0, 5.01, 4.99], "64": [5.5, 5.51, 5.49]}, "eval loss")
    assert clear["best"] == "16" and not clear["tied"] and "worse beyond noise" in clear["sentence"]
    high = stats.best_of({"a": [0.3, 0.31, 0.29], "b": [0.1, 0.11, 0.09]}, "F1", lower_is_better=False)
    assert high["best"] == "a"
    with pytest.raises(ValueError, match="no group"):
        stats.best_of({"a": [math.nan]}, "x")


def test_unknown_test_is_named():
    with pytest.raises(ValueError, match="unknown test 'ttest'"):
        stats.difference([1, 2], [1, 2], test="ttest")


def test_summarize_groups():
    df = pd.DataFrame({"precision": ["fp32"] * 3 + ["bf16"], "loss": [6.0, 6.1, 6.2, 6.3]})
    t = stats.summarize(df, ["precision"], "loss")
    bf, fp = t.set_index("precision").loc["bf16"], t.set_index("precision").loc["fp32"]
    assert fp["n"] == 3 and fp["mean"] == pytest.approx(6.1) and fp["sd"] == pytest.approx(0.1)
    assert bf["n"] == 1 and pd.isna(bf["sd"]) and "no spread" in bf["text"]
