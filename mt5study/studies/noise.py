"""Gradient noise scale B_simple = tr(Sigma) / |G|^2 from gradient norms at two batch sizes.

McCandlish et al. 2018, "An Empirical Model of Large-Batch Training" (arXiv 1812.06162), appendix
A.1. With G the true gradient and Sigma the per-example gradient covariance, the mean gradient of
a batch of B examples has E|G_B|^2 = |G|^2 + tr(Sigma)/B. Two batch sizes give two equations, so
from one measurement of |G_small|^2 and |G_big|^2 the unbiased estimates are

    |G|^2    ~ (B_big |G_big|^2 - B_small |G_small|^2) / (B_big - B_small)
    tr(Sigma) ~ (|G_small|^2 - |G_big|^2) / (1/B_small - 1/B_big)        (called S below)

Each is noisy (and can be negative), and the ratio of two noisy numbers is biased, so the paper
averages |G|^2 and S separately over many steps (an exponential moving average) and divides the
averages: B_simple = EMA(S) / EMA(|G|^2). B_simple approximates the critical batch size, beyond
which a larger batch stops cutting the number of optimizer steps.

Data-parallel training measures both norms for free: B_small is the batch behind one rank's local
gradient before the all-reduce (micro_batch x grad_accum examples), B_big is the global batch,
whose gradient is the all-reduced one. The ranks' local squared norms are independent estimates
at B_small; pass their mean (or the list) to reduce variance. Gradients must be of the mean loss
over the batch (not the sum), and unclipped. Under DeepSpeed ZeRO-2/3 the local gradient is
reduce-scattered inside backward, so its norm has to be taken before that (e.g. from a hook).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np


def _check_batches(b_small: float, b_big: float) -> None:
    for name, b in (("b_small", b_small), ("b_big", b_big)):
        if isinstance(b, bool) or not isinstance(b, (int, float, np.integer, np.floating)) \
                or not np.isfinite(b) or b <= 0:
            raise ValueError(f"{name} must be a positive number of examples, got {b!r}")
    if b_big <= b_small:
        raise ValueError(f"b_big must be larger than b_small, got b_small={b_small!r}, b_big={b_big!r}")


def _check_decay(ema_decay: float) -> None:
    if not 0.0 <= ema_decay < 1.0:
        raise ValueError(f"ema_decay must be in [0, 1), got {ema_decay!r}")


def _as_norms(name: str, values: Any) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim != 1 or arr.size == 0:
        raise ValueError(f"{name} must be a non-empty 1-D sequence of squared norms, got shape {arr.shape}")
    bad = ~np.isfinite(arr) | (arr < 0)
    if bad.any():
        i = int(np.argmax(bad))
        raise ValueError(f"{name}[{i}] = {float(arr[i])!r}: squared norms must be finite and >= 0")
    return arr


def unbiased_estimates(g_small_sq, g_big_sq, b_small: float, b_big: float) -> tuple[np.ndarray, np.ndarray]:
    """Per-step unbiased (|G|^2, tr(Sigma)) from squared gradient norms at two batch sizes."""
    _check_batches(b_small, b_big)
    small, big = _as_norms("g_small_sq", g_small_sq), _as_norms("g_big_sq", g_big_sq)
    if small.shape != big.shape:
        raise ValueError(f"g_small_sq has {small.size} steps but g_big_sq has {big.size}")
    grad_sq = (b_big * big - b_small * small) / (b_big - b_small)  # |G|^2, squared-norm units
    trace = (small - big) / (1.0 / b_small - 1.0 / b_big)  # tr(Sigma), squared norm x examples
    return grad_sq, trace


def _ema(x: np.ndarray, decay: float) -> np.ndarray:
    # Running EMA from 0. Its start-up bias (a factor 1 - decay**t) is the same for |G|^2 and S,
    # so it cancels in their ratio and needs no correction there.
    out = np.empty_like(x)
    acc = 0.0
    for i, v in enumerate(x):
        acc = decay * acc + (1.0 - decay) * v
        out[i] = acc
    return out


def _ratio(num, den):
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan)


@dataclass(frozen=True)
class NoiseScale:
    """Noise-scale estimates from a run of steps (arrays have one entry per step)."""

    grad_sq: np.ndarray  # unbiased |G|^2 per step, squared-norm units
    trace_sigma: np.ndarray  # unbiased tr(Sigma) per step, squared norm x examples
    per_step: np.ndarray  # S/|G|^2 of single steps (examples; noisy, nan where |G|^2 <= 0)
    ema: np.ndarray  # EMA(S)/EMA(|G|^2) after each step (examples)
    b_simple: float  # mean(S)/mean(|G|^2) over all steps (examples)


def noise_scale(g_small_sq, g_big_sq, b_small: float, b_big: float, ema_decay: float = 0.99) -> NoiseScale:
    """B_simple from per-step squared norms |G_small|^2 and |G_big|^2 (McCandlish et al. A.1)."""
    _check_decay(ema_decay)
    grad_sq, trace = unbiased_estimates(g_small_sq, g_big_sq, b_small, b_big)
    return NoiseScale(
        grad_sq=grad_sq,
        trace_sigma=trace,
        per_step=_ratio(trace, grad_sq),
        ema=_ratio(_ema(trace, ema_decay), _ema(grad_sq, ema_decay)),
        b_simple=float(_ratio(np.array(trace.mean()), np.array(grad_sq.mean()))),
    )


class NoiseScaleTracker:
    """Running B_simple during training: call `update` once per optimizer step, read `estimate`."""

    def __init__(self, b_small: float, b_big: float, ema_decay: float = 0.99):
        _check_batches(b_small, b_big)
        _check_decay(ema_decay)
        self.b_small, self.b_big, self.ema_decay = b_small, b_big, ema_decay
        self.steps = 0
        self._grad_sq = 0.0  # EMA of |G|^2 (not bias-corrected)
        self._trace = 0.0  # EMA of tr(Sigma)

    def update(self, g_small_sq: float | Sequence[float], g_big_sq: float) -> float:
        """Add one step: local squared norm(s) at b_small (one per rank, averaged) and global at b_big."""
        small = _as_norms("g_small_sq", np.atleast_1d(np.asarray(g_small_sq, dtype=float))).mean()
        grad_sq, trace = unbiased_estimates([small], [g_big_sq], self.b_small, self.b_big)
        d = self.ema_decay
        self._grad_sq = d * self._grad_sq + (1.0 - d) * float(grad_sq[0])
        self._trace = d * self._trace + (1.0 - d) * float(trace[0])
        self.steps += 1
        return self.estimate

    @property
    def _correction(self) -> float:
        return 1.0 - self.ema_decay**self.steps if self.steps else float("nan")

    @property
    def grad_sq(self) -> float:
        """Bias-corrected EMA of |G|^2 (nan before the first update)."""
        return self._grad_sq / self._correction

    @property
    def trace_sigma(self) -> float:
        """Bias-corrected EMA of tr(Sigma) (nan before the first update)."""
        return self._trace / self._correction

    @property
    def estimate(self) -> float:
        """B_simple = EMA(S)/EMA(|G|^2) in examples; nan before any update or while EMA(|G|^2) <= 0."""
        if self.steps == 0 or self._grad_sq <= 0:
            return float("nan")
        return self._trace / self._grad_sq

    def state_dict(self) -> dict[str, float]:
        """Everything needed to resume the running averages from a checkpoint."""
        return {"b_small": self.b_small, "b_big": self.b_big, "ema_decay": self.ema_decay,
                "steps": self.steps, "grad_sq": self._grad_sq, "trace": self._trace}

    @classmethod
    def from_state_dict(cls, state: dict[str, float]) -> "NoiseScaleTracker":
        """Rebuild a tracker saved with `state_dict`."""
        tracker = cls(state["b_small"], state["b_big"], state["ema_decay"])
        tracker.steps = int(state["steps"])
        tracker._grad_sq, tracker._trace = float(state["grad_sq"]), float(state["trace"])
        return tracker
