"""Learning-rate schedules and optimizer construction."""

from __future__ import annotations

import math

import pytest

from mt5study.config import OptimConfig
from mt5study.model import build
from mt5study.optim import build_optimizer, lr_multiplier


def test_constant_with_warmup():
    f = lr_multiplier(OptimConfig(lr=1.0, schedule="constant", warmup_steps=4), 100)
    assert [f(s) for s in range(6)] == [0.25, 0.5, 0.75, 1.0, 1.0, 1.0]


def test_cosine_reaches_floor():
    f = lr_multiplier(OptimConfig(lr=1.0, schedule="cosine", warmup_steps=10, min_lr_ratio=0.1), 110)
    assert f(9) == pytest.approx(1.0)
    assert f(60) == pytest.approx(0.1 + 0.9 * 0.5)
    assert f(110) == pytest.approx(0.1)


def test_inverse_sqrt_is_t5():
    # T5: 1/sqrt(max(step, 10^4)) -> plateau then decay; scaled so the plateau is 1
    f = lr_multiplier(OptimConfig(lr=1.0, schedule="inverse_sqrt", warmup_steps=10_000), 10**6)
    assert f(0) == 1.0 and f(9_999) == 1.0
    assert f(39_999) == pytest.approx(math.sqrt(10_000 / 40_000))


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_optimizers(name):
    m = build("tiny")
    opt = build_optimizer(m, OptimConfig(lr=1e-3, name=name, weight_decay=0.1))
    n = sum(p.numel() for g in opt.param_groups for p in g["params"])
    assert n == m.num_parameters()
    assert opt.param_groups[1]["weight_decay"] == 0.0  # norms and position biases


def test_exponential_range_sweep():
    f = lr_multiplier(OptimConfig(lr=1.0, schedule="exponential", range_start_ratio=1e-4), 5)
    assert f(0) == pytest.approx(1e-4) and f(4) == pytest.approx(1.0)
    assert f(2) == pytest.approx(1e-2)  # geometric midpoint
