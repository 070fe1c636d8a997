"""Scaling fits on synthetic loss surfaces whose optima follow known power laws."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from mt5study.scaling import fits

N = np.array([1.1e5, 8.9e5, 3.0e6, 7.1e6])
LR_EXP, B_EXP = -0.35, 0.3  # the truth the fits must recover


def truth(n):
    return 0.02 * (n / 1e6) ** LR_EXP, 16 * (n / 1e6) ** B_EXP


def surface_points(n, noise=0.003, seed=0, lr_span=4.0, b_span=3.0, shift=1.0):
    eta, b = truth(n)
    rng = np.random.default_rng(seed)
    lr = np.geomspace(eta * shift / lr_span, eta * shift * lr_span, 5)
    bs = np.geomspace(b / b_span, b * b_span, 3)
    L, B = np.meshgrid(lr, bs)
    x, y = np.log(L / eta), np.log(B / b)
    loss = 3 + 0.25 * x**2 + 0.15 * y**2 + 0.05 * x * y + rng.normal(0, noise, L.shape)
    return L.ravel(), B.ravel(), loss.ravel()


def test_surface_recovers_the_optimum_between_grid_points():
    eta, b = truth(1e6)
    s = fits.fit_surface(*surface_points(1e6, noise=0.0))
    assert s.convex and not s.on_edge
    assert s.lr == pytest.approx(eta, rel=1e-6) and s.batch == pytest.approx(b, rel=1e-6)
    assert s.loss == pytest.approx(3.0, abs=1e-9)


def test_power_laws_recover_known_exponents_with_intervals_that_cover_them():
    opts, reps = [], []
    for i, n in enumerate(N):
        s = fits.fit_surface(*surface_points(n, seed=i))
        opts.append((s.lr, s.batch))
        reps.append(fits.bootstrap_optima(s, 300, seed=i))
    opts, reps = np.array(opts), np.stack(reps, axis=1)  # (300, sizes, 2)
    lr_law = fits.fit_power_law("lr", N, opts[:, 0], reps[:, :, 0], confidence=0.95)
    b_law = fits.fit_power_law("batch", N, opts[:, 1], reps[:, :, 1], confidence=0.95)
    assert lr_law.b == pytest.approx(LR_EXP, abs=0.02) and b_law.b == pytest.approx(B_EXP, abs=0.05)
    lo, hi = lr_law.interval("b")
    assert lo <= LR_EXP <= hi and hi - lo < 0.1
    lo, hi = b_law.interval("b")
    assert lo <= B_EXP <= hi


def test_prediction_is_marked_as_extrapolation_outside_the_fitted_range():
    law = fits.fit_power_law("lr", N, [truth(n)[0] for n in N])
    inside, outside = law.predict(1e6), law.predict(1.3e10)
    assert not inside["extrapolation"] and outside["extrapolation"]
    assert outside["low"] <= outside["value"] <= outside["high"]
    assert outside["value"] == pytest.approx(truth(1.3e10)[0], rel=1e-6)


@pytest.mark.parametrize("shift, needle", [(6.0, "lr is the grid's smallest"), (1 / 6.0, "lr is the grid's largest")])
def test_a_best_point_on_the_grid_edge_is_flagged(shift, needle):
    lr, b, loss = surface_points(1e6, noise=0.0, shift=shift)
    s = fits.fit_surface(lr, b, loss, trim=None)
    assert s.on_edge and any(needle in e for e in s.edge), s.edge


def test_too_few_points_or_values_is_a_named_error():
    lr, b, loss = surface_points(1e6)
    with pytest.raises(fits.FitError, match="size x"):
        fits.fit_surface(lr[:5], b[:5], loss[:5], label="size x")
    with pytest.raises(fits.FitError, match=">= 3 distinct sizes"):
        fits.fit_power_law("lr", N[:2], [0.1, 0.2])
    loss = loss.copy()
    loss[:] = np.nan  # every trial diverged
    with pytest.raises(fits.FitError):
        fits.fit_surface(lr, b, loss)


def test_frontier_is_the_lower_envelope():
    c = pd.DataFrame({"compute": [1, 2, 4, 8, 1, 2, 4, 8.0], "loss": [5, 4, 3.5, 3.4, 6, 4.5, 3.0, 2.5],
                      "trial": list("aaaabbbb")})
    f = fits.frontier(c, bins=8)
    assert list(f["loss"]) == sorted(f["loss"], reverse=True)
    assert f["loss"].iloc[-1] == 2.5 and f["loss"].iloc[0] == 5


def test_bootstrap_of_a_flat_surface_stays_finite_and_within_a_step_of_the_grid():
    # Noise far above the curvature: refits put their minimum anywhere, often at exp(+-40).
    lr, batch, loss = surface_points(1e6, noise=0.5, seed=3)
    s = fits.fit_surface(lr, batch, loss, trim=None)
    reps = fits.bootstrap_optima(s, 200, seed=0)
    assert np.isfinite(reps).all()
    lr_step, b_step = np.log(4.0) / 2, np.log(3.0)  # the grid's spacing in log lr, log batch
    assert np.log(reps[:, 0]).min() >= np.log(lr.min()) - lr_step - 1e-9
    assert np.log(reps[:, 0]).max() <= np.log(lr.max()) + lr_step + 1e-9
    assert np.log(reps[:, 1]).max() <= np.log(batch.max()) + b_step + 1e-9
    # Some replicates really were clipped (else this test checks nothing): they sit on the bound.
    on_bound = np.isclose(np.log(reps[:, 0]), np.log(lr.max()) + lr_step) | np.isclose(
        np.log(reps[:, 0]), np.log(lr.min()) - lr_step)
    assert on_bound.any()
    law = fits.fit_power_law("lr", N, [s.lr] * 4, np.stack([reps[:, 0]] * 4, axis=1))
    assert all(np.isfinite(law.interval("b")))


def test_a_fitted_optimum_far_outside_the_grid_is_flagged_and_held_a_step_past_it():
    # The truth lies 8x beyond the grid's largest lr: the quadratic's minimum runs off with it.
    lr, batch, loss = surface_points(1e6, noise=0.0, shift=1 / 32)
    s = fits.fit_surface(lr, batch, loss, trim=None)
    assert any("extend" in e for e in s.edge)
    assert np.log(s.lr) <= np.log(lr.max()) + np.log(4.0) / 2 + 1e-9  # one step of the 5-point grid
