"""Fits of the scaling study: the loss surface per size, power laws of the optimum, the frontier.

- `fit_surface`: loss as a quadratic in (log lr, log batch) by least squares, its minimum (the
  smooth optimum eta*, B*, not the grid's argmin; at most one grid step past the grid), and flags
  when that minimum, or the grid's best point, lies on or beyond the grid's edge (extend the grid:
  the optimum is not bracketed).
- `bootstrap_optima`: residual bootstrap of the surface fit (refit on fitted values plus resampled
  residuals), giving replicates of (eta*, B*) per size. A replicate's optimum is clipped to the
  grid widened by one grid step on each side: a nearly flat refit puts its minimum at exp(+-40)
  and one such replicate made every law interval NaN; beyond a step past the grid the data say
  nothing, and the clip keeps the interval as wide as the grid allows instead of undefined.
- `fit_power_law`: log y = log a + b log x through the sizes' optima; each bootstrap replicate
  refits the line, so the exponent, the prefactor and every prediction carry an interval.
  `predict` marks a point outside the fitted x range as an extrapolation.
- `frontier`: the lower envelope of loss against compute over every trial's curve, and a power
  law L = a C^-b through it.
All logs are natural; lr and batch enter as logs, so the quadratic is scale-free.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

N_COEF = 6  # 1, x, y, x^2, y^2, xy


class FitError(ValueError):
    """Too few or unusable points for a fit: names the size and what is missing."""


@dataclass(frozen=True)
class Surface:
    """A quadratic loss surface in (x, y) = (log lr, log batch) and its optimum."""

    coef: np.ndarray  # c0 + c1 x + c2 y + c3 x^2 + c4 y^2 + c5 x y, in centred units
    center: tuple[float, float]  # the centring of x, y (means of the points fitted)
    convex: bool  # the quadratic has a minimum (positive-definite Hessian)
    lr: float  # eta*: the surface's minimum, or the grid's best when not convex
    batch: float  # B*
    loss: float  # the surface at (eta*, B*)
    grid_best: dict  # lr, batch and loss of the best measured point
    edge: list[str] = field(default_factory=list)  # e.g. "lr above grid": extend the grid
    points: int = 0
    residual_sd: float = 0.0
    fitted_points: tuple = ()  # (x, y, loss) arrays the quadratic was fitted on, x and y centred

    def predict(self, lr, batch) -> np.ndarray:
        """The surface's loss at lr, batch (arrays or scalars)."""
        x = np.log(np.asarray(lr, dtype=float)) - self.center[0]
        y = np.log(np.asarray(batch, dtype=float)) - self.center[1]
        return _design(x, y) @ self.coef

    @property
    def on_edge(self) -> bool:
        return bool(self.edge)


def _design(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    x, y = np.atleast_1d(x), np.atleast_1d(y)
    return np.stack([np.ones_like(x), x, y, x * x, y * y, x * y], axis=-1)


def _minimum(coef: np.ndarray) -> tuple[bool, np.ndarray]:
    hess = np.array([[2 * coef[3], coef[5]], [coef[5], 2 * coef[4]]])
    if np.any(np.linalg.eigvalsh(hess) <= 0):
        return False, np.full(2, np.nan)
    return True, np.linalg.solve(hess, -coef[1:3])


def _usable(lr, batch, loss) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    lr, batch, loss = (np.asarray(v, dtype=float) for v in (lr, batch, loss))
    ok = np.isfinite(loss) & np.isfinite(lr) & np.isfinite(batch) & (lr > 0) & (batch > 0)
    return lr[ok], batch[ok], loss[ok]


def fit_surface(lr, batch, loss, label: str = "surface", trim: float | None = 0.5) -> Surface:
    """Fit loss(lr, batch) and find its optimum; `trim` drops points worse than best x (1 + trim)
    (a diverging corner would otherwise bend the quadratic) while >= 6 points and 3 values of each
    axis remain. Non-finite losses (diverged trials) are left out."""
    lr, batch, loss = _usable(lr, batch, loss)
    if len(loss) < N_COEF or len(set(lr)) < 3 or len(set(batch)) < 3:
        raise FitError(f"{label}: needs >= {N_COEF} completed trials over >= 3 learning rates and >= 3 "
                       f"batches, got {len(loss)} trials, lrs {sorted(set(lr))}, batches {sorted(set(batch))}")
    keep = np.ones(len(loss), dtype=bool)
    if trim is not None:
        near = loss <= loss.min() * (1 + trim)
        if near.sum() >= N_COEF and len(set(lr[near])) >= 3 and len(set(batch[near])) >= 3:
            keep = near
    x_all, y_all = np.log(lr), np.log(batch)
    center = (float(x_all[keep].mean()), float(y_all[keep].mean()))
    coef = _lstsq(x_all[keep] - center[0], y_all[keep] - center[1], loss[keep])
    resid = loss[keep] - _design(x_all[keep] - center[0], y_all[keep] - center[1]) @ coef
    dof = max(1, int(keep.sum()) - N_COEF)
    best = int(np.argmin(loss))
    grid_best = {"lr": float(lr[best]), "batch": float(batch[best]), "loss": float(loss[best])}
    convex, opt = _minimum(coef)
    edge = _edges(lr, batch, grid_best, opt + np.array(center) if convex else None)
    if convex:
        # As the bootstrap's replicates: no further than one grid step past the grid (flagged above).
        (xlo, xhi), (ylo, yhi) = _widened(x_all - center[0]), _widened(y_all - center[1])
        opt = np.clip(opt, [xlo, ylo], [xhi, yhi])
        lr_opt, batch_opt = float(np.exp(opt[0] + center[0])), float(np.exp(opt[1] + center[1]))
    else:
        edge.append("surface not convex: optimum from the grid's best point")
        lr_opt, batch_opt = grid_best["lr"], grid_best["batch"]
    surf = Surface(coef=coef, center=center, convex=convex, lr=lr_opt, batch=batch_opt, loss=0.0,
                   grid_best=grid_best, edge=edge, points=int(keep.sum()),
                   residual_sd=float(np.sqrt(resid @ resid / dof)),
                   fitted_points=(x_all[keep] - center[0], y_all[keep] - center[1], loss[keep]))
    return Surface(**{**surf.__dict__, "loss": float(surf.predict(lr_opt, batch_opt)[0])})


def _lstsq(x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
    return np.linalg.lstsq(_design(x, y), z, rcond=None)[0]


def _edges(lr, batch, grid_best, opt_log) -> list[str]:
    """Where the optimum is not bracketed by the grid (each a reason to extend it)."""
    out = []
    for name, values, best in (("lr", lr, grid_best["lr"]), ("batch", batch, grid_best["batch"])):
        lo, hi = values.min(), values.max()
        if best <= lo:
            out.append(f"best {name} is the grid's smallest ({best:g}): extend the grid below")
        elif best >= hi:
            out.append(f"best {name} is the grid's largest ({best:g}): extend the grid above")
    if opt_log is not None:
        for name, values, v in (("lr", lr, opt_log[0]), ("batch", batch, opt_log[1])):
            lo, hi = np.log(values.min()), np.log(values.max())
            if v < lo or v > hi:
                out.append(f"fitted {name}* = {np.exp(v):.3g} lies outside the grid "
                           f"[{np.exp(lo):g}, {np.exp(hi):g}]: extend the grid")
    return out


def bootstrap_optima(surface: Surface, n: int, seed: int = 0) -> np.ndarray:
    """(n, 2) replicates of (eta*, B*) by residual bootstrap of the points `surface` was fitted
    on; a replicate whose quadratic is not convex takes its own best point."""
    x, y, z = surface.fitted_points
    fitted = _design(x, y) @ surface.coef
    # Residuals scaled to an unbiased sd (n - 6 degrees of freedom), as in a standard residual bootstrap.
    resid = (z - fitted) * np.sqrt(len(z) / max(1, len(z) - N_COEF))
    rng = np.random.default_rng(seed)
    xr, yr = _widened(x), _widened(y)  # (low, high) of log lr and log batch, centred
    out = np.empty((n, 2))
    for i in range(n):
        zz = fitted + rng.choice(resid, size=len(z), replace=True)
        convex, opt = _minimum(_lstsq(x, y, zz))
        if not convex:
            j = int(np.argmin(zz))
            opt = np.array([x[j], y[j]])
        opt = np.clip(opt, [xr[0], yr[0]], [xr[1], yr[1]])
        out[i] = np.exp(opt + np.array(surface.center))
    return out


def _widened(v: np.ndarray) -> tuple[float, float]:
    """The range of a grid axis (log units) widened by its median step on each side."""
    vals = np.unique(np.round(v, 9))
    step = float(np.median(np.diff(vals))) if len(vals) > 1 else 0.0
    return float(vals[0] - step), float(vals[-1] + step)


@dataclass(frozen=True)
class PowerLaw:
    """y = a x^b fitted in log-log, with bootstrap replicates of (log a, b)."""

    name: str
    a: float
    b: float
    x_range: tuple[float, float]
    replicates: np.ndarray  # (n, 2): log a, b
    confidence: float

    def interval(self, which: str = "b") -> tuple[float, float]:
        col = self.replicates[:, 1] if which == "b" else np.exp(self.replicates[:, 0])
        q = (1 - self.confidence) / 2
        return float(np.quantile(col, q)), float(np.quantile(col, 1 - q))

    def predict(self, x: float) -> dict:
        """Point prediction, its interval, and whether x lies outside the fitted range."""
        reps = np.exp(self.replicates[:, 0] + self.replicates[:, 1] * np.log(x))
        q = (1 - self.confidence) / 2
        lo, hi = self.x_range
        return {"value": float(self.a * x**self.b), "low": float(np.quantile(reps, q)),
                "high": float(np.quantile(reps, 1 - q)),
                "extrapolation": bool(x < lo * (1 - 1e-9) or x > hi * (1 + 1e-9))}


def _line(logx: np.ndarray, logy: np.ndarray) -> tuple[float, float]:
    b, loga = np.polyfit(logx, logy, 1)
    return float(loga), float(b)


def fit_power_law(name: str, x, y, replicates_y=None, confidence: float = 0.9) -> PowerLaw:
    """Fit y = a x^b through the sizes; `replicates_y` (n, sizes) gives the bootstrap replicates
    of y per size (bootstrap_optima), each refitted; without it the residuals are resampled."""
    x, y = np.asarray(x, dtype=float), np.asarray(y, dtype=float)
    if len(x) < 3 or len(set(x)) < 3:
        raise FitError(f"{name}: a power law needs >= 3 distinct sizes, got {len(set(x))}")
    if np.any(x <= 0) or np.any(y <= 0) or not np.all(np.isfinite(y)):
        raise FitError(f"{name}: needs positive finite values, got x={x.tolist()}, y={y.tolist()}")
    logx = np.log(x)
    loga, b = _line(logx, np.log(y))
    if replicates_y is None:
        rng = np.random.default_rng(0)
        fitted = loga + b * logx
        resid = np.log(y) - fitted
        replicates_y = np.exp(fitted + rng.choice(resid, size=(400, len(x))))
    reps = np.array([_line(logx, np.log(r)) for r in np.asarray(replicates_y, dtype=float)])
    return PowerLaw(name=name, a=float(np.exp(loga)), b=b, x_range=(float(x.min()), float(x.max())),
                    replicates=reps, confidence=confidence)


def frontier(curves: pd.DataFrame, compute: str = "compute", loss: str = "loss", bins: int = 30) -> pd.DataFrame:
    """The lowest loss reached at or below each compute level, over every curve (log-spaced bins)."""
    df = curves[[compute, loss]].dropna()
    df = df[(df[compute] > 0) & np.isfinite(df[loss])]
    if df.empty:
        return pd.DataFrame(columns=[compute, loss])
    edges = np.geomspace(df[compute].min(), df[compute].max(), bins + 1)
    rows, best = [], np.inf
    for hi in edges[1:]:
        seen = df[df[compute] <= hi * (1 + 1e-12)]
        if not seen.empty and seen[loss].min() < best:
            best = float(seen[loss].min())
            rows.append({compute: float(seen.loc[seen[loss].idxmin(), compute]), loss: best})
    return pd.DataFrame(rows).drop_duplicates(compute).reset_index(drop=True)
