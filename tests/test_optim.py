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


@pytest.mark.parametrize("name", ["adamw", "adafactor"])
def test_relative_embedding_lr_moves_the_embedding_at_the_kernels_relative_rate(name):
    """embedding_lr=relative: the shared embedding in its own group at lr x sqrt(d_model), which the
    schedule scales like the others; its first Adam step is sqrt(d_model) times the kernels'."""
    import torch

    from mt5study.optim import build_scheduler

    torch.manual_seed(0)
    model = build("tiny", vocab_size=400)
    d = model.config.d_model
    same = build_optimizer(model, OptimConfig(name=name, lr=1e-3))
    assert len(same.param_groups) == 2
    cfg = OptimConfig(name=name, lr=1e-3, embedding_lr="relative", schedule="cosine", warmup_steps=2)
    opt = build_optimizer(model, cfg)
    (emb,) = [g for g in opt.param_groups if any(p is model.shared.weight for p in g["params"])]
    assert len(opt.param_groups) == 3 and len(emb["params"]) == 1
    assert emb["lr"] == pytest.approx(1e-3 * math.sqrt(d))
    sched = build_scheduler(opt, cfg, total_steps=10)
    assert emb["lr"] / opt.param_groups[0]["lr"] == pytest.approx(math.sqrt(d))  # after the warm-up's first factor
    if name == "adamw":
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ids = torch.randint(0, 400, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        sched.step()
        step = {n: (p.detach() - before[n]).abs().max().item() for n, p in model.named_parameters()}
        kernel = step["encoder.block.0.layer.1.DenseReluDense.wo.weight"]
        assert step["shared.weight"] == pytest.approx(kernel * math.sqrt(d), rel=0.01)


def test_adafactor_scale_parameter_steps_each_weight_by_its_size():
    """optim.scale_parameter (T5X's multiply_by_parameter_scale): a weight's step is lr x its RMS,
    so the std-1.0 embedding moves far more than a small-std kernel (wo: d_ff^-0.5); without it
    both move about lr. AdamW, or scaling the embedding twice, is refused by name."""
    import torch

    def first_steps(scale: bool) -> dict[str, float]:
        torch.manual_seed(0)
        model = build("tiny", vocab_size=400)
        opt = build_optimizer(model, OptimConfig(name="adafactor", lr=1e-2, scale_parameter=scale))
        before = {n: p.detach().clone() for n, p in model.named_parameters()}
        ids = torch.randint(0, 400, (2, 8))
        model(input_ids=ids, labels=ids).loss.backward()
        opt.step()
        rms = {n: b.pow(2).mean().sqrt().item() for n, b in before.items()}
        return {n: ((p.detach() - before[n]).pow(2).mean().sqrt().item(), rms[n]) for n, p in model.named_parameters()}

    kernel, emb = "encoder.block.0.layer.1.DenseReluDense.wo.weight", "shared.weight"
    scaled, plain = first_steps(True), first_steps(False)
    for name in (kernel, emb):
        step, size = scaled[name]
        assert step / size == pytest.approx(plain[name][0] / 1.0, rel=0.05)  # lr x RMS vs lr x 1
    assert scaled[emb][0] / scaled[kernel][0] > 3 * plain[emb][0] / plain[kernel][0]

    with pytest.raises(ValueError, match="scale_parameter=true is Adafactor's"):
        OptimConfig(name="adamw", lr=1e-3, scale_parameter=True)
    with pytest.raises(ValueError, match="scales the embedding's step twice"):
        OptimConfig(name="adafactor", lr=1e-3, scale_parameter=True, embedding_lr="relative")


def test_scale_parameter_is_refused_where_deepspeed_flattens_the_weights(tmp_path):
    """Under ZeRO or DeepSpeed's bf16 optimizer Adafactor sees flat partitions: refused, named."""
    import yaml

    from mt5study.config import ConfigError, load

    base = {"model": {"preset": "tiny"}, "optim": {"name": "adafactor", "lr": 1e-3, "scale_parameter": True},
            "run": {"steps": 1, "micro_batch": 1}}
    f = tmp_path / "p.yaml"
    f.write_text(yaml.safe_dump(base))
    assert load(f).optim.scale_parameter  # ZeRO-0, fp32: whole weights
    for key, value in (("run.zero_stage", 3), ("run.zero_stage", 1), ("run.precision", "bf16")):
        with pytest.raises(ConfigError, match="scale_parameter=true needs each weight as its own tensor"):
            load(f, {key: value})
