"""fp16 on CPU through torch AMP (autocast in float16 + GradScaler("cpu")), where DeepSpeed's CPU
accelerator refuses fp16: the scaler skips an overflowing step and halves its scale, the fp32 head
keeps the logits in float32, and a tiny run trains with the scaler's figures in its metrics."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from mt5study import batches, launch, loss as loss_lib, model as model_lib, records
from mt5study.amp import AmpEngine
from mt5study.config import DataConfig, SyntheticData


def tiny_batch(seed: int = 0) -> dict[str, torch.Tensor]:
    cfg = DataConfig(synthetic=SyntheticData(num_train=8, num_validation=8, vocab_size=512), input_length=32,
                     target_length=8)
    ds = batches.synthetic_splits(cfg, seed)["train"]
    return {k: torch.tensor([ds[i][k] for i in range(4)]) for k in ("input_ids", "labels")}


def engine(scale_power: int) -> AmpEngine:
    torch.manual_seed(0)
    net = model_lib.build("tiny")
    opt = torch.optim.AdamW(net.parameters(), lr=3e-3)
    return AmpEngine(net, net, opt, grad_clip=1.0, initial_scale_power=scale_power)


def test_scaler_skips_an_overflowing_step_and_halves_its_scale():
    e, b = engine(24), tiny_batch()  # 2**24 x the loss overflows fp16 gradients
    before = {k: v.clone() for k, v in e.module.state_dict().items()}
    out = loss_lib.compute_loss(e, b["input_ids"], b["labels"])
    assert torch.isfinite(out.total)
    e.backward(out.total)
    assert e.step() is False and not e.was_step_applied()
    assert e.loss_scale == 2.0**23 and e.skipped_steps == 1 and e.consecutive_skips == 1
    assert all(torch.equal(before[k], v) for k, v in e.module.state_dict().items())  # no update applied
    losses, applied = [], []
    for _ in range(12):
        out = loss_lib.compute_loss(e, b["input_ids"], b["labels"])
        e.backward(out.total)
        applied.append(e.step())
        losses.append(out.cross_entropy.item())
    assert any(applied) and applied[-1]  # the scale came down to where the gradients fit
    assert all(torch.isfinite(torch.tensor(losses)))
    assert losses[-1] < losses[0]  # same batch: applied steps lower its loss


def test_logits_stay_float32_under_autocast_while_the_body_runs_in_float16():
    e, b = engine(16), tiny_batch()
    seen = {}
    ffn = e.module.encoder.block[0].layer[-1].DenseReluDense.wi_0
    ffn.register_forward_hook(lambda m, i, o: seen.update(ffn=o.dtype))  # returns None: output kept
    out = e(input_ids=b["input_ids"], decoder_input_ids=loss_lib.shift_right(b["labels"]), use_cache=False)
    assert seen["ffn"] == torch.float16  # autocast computes the body in fp16
    assert out.logits.dtype == torch.float32  # Float32Linear: the head in fp32
    ce = loss_lib.compute_loss(e, b["input_ids"], b["labels"], z_loss=1e-4)
    assert ce.total.dtype == torch.float32 and torch.isfinite(ce.total)


@pytest.mark.slow
def test_fp16_run_on_cpu_trains_through_torch_amp(tiny_params, runs_dir):
    out = runs_dir / "fp16_amp"
    s = launch.run(tiny_params, out, overrides={
        "run.one_process": True, "run.precision": "fp16", "run.fp16_initial_scale_power": 24, "run.steps": 10,
        "run.eval_every": 0, "run.checkpoint_every": 0})
    assert s["status"] == "completed" and s["fp16_engine"] == "torch_amp" and s["engine"] == "torch_amp"
    assert records.read_json(out / "env.json")["fp16_engine"] == "torch_amp"
    assert not (out / "deepspeed_config.json").exists()  # no DeepSpeed engine ran
    rows = records.read_metrics(out / "metrics.jsonl")
    assert rows[0]["skipped_steps"] >= 1 and rows[0]["loss_scale"] <= 2.0**23  # the overflowing start
    assert all(r["loss_scale"] > 0 for r in rows) and rows[-1]["skipped_steps"] == s["skipped_steps"]
    losses = [r["loss"] for r in rows]
    assert all(torch.isfinite(torch.tensor(losses))) and losses[-1] < losses[0]
    assert s["final_eval_loss"] is not None and (out / "model").is_dir()


@pytest.mark.slow
def test_fp16_scaler_that_never_recovers_ends_as_diverged(tiny_params, tmp_path):
    out = tmp_path / "fp16_diverged"
    env = {k: v for k, v in launch.launch_env(1).items() if k not in ("LOCAL_RANK", "RANK", "WORLD_SIZE")}
    r = subprocess.run([sys.executable, "-m", "mt5study.cli", "train", "--params", str(tiny_params), "--out", str(out),
                        "--set=run.one_process=true", "--set=run.precision=fp16", "--set=run.fp16_initial_scale_power=32",
                        "--set=run.fp16_max_skipped_steps=2", "--set=run.steps=4", "--set=run.checkpoint_every=0"],
                       capture_output=True, text=True, env=env, timeout=900)
    assert r.returncode == launch.EXIT_DIVERGED, r.stderr[-2000:]
    s = records.read_json(out / "summary.json")
    assert s["status"] == "diverged" and s["diverged_at_step"] == 2 and "fp16 loss scaler" in s["reason"]
    assert s["skipped_steps"] == 2 and not (out / "model").exists()


@pytest.mark.parametrize("supported", [True, False])
def test_fp16_engine_on_cpu_does_not_depend_on_the_cpu(monkeypatch, supported):
    """auto: torch AMP on every CPU (DeepSpeed's CPU accelerator accepts fp16 on AVX512-FP16 CPUs only);
    deepspeed: DeepSpeed's engine where it accepts fp16, else unsupported, named."""
    from deepspeed.accelerator import get_accelerator

    from mt5study import config
    from mt5study.train import _engine_kind

    monkeypatch.setattr(type(get_accelerator()), "is_fp16_supported", lambda self: supported)
    run = lambda **kw: config.RunConfig(steps=1, micro_batch=1, precision="fp16", **kw)  # noqa: E731
    assert _engine_kind(run()) == ("torch_amp", None)
    kind, why = _engine_kind(run(zero_stage=3))
    assert "zero_stage 0 only" in why
    kind, why = _engine_kind(run(fp16_engine="deepspeed", zero_stage=3))
    assert kind == "deepspeed" and (why is None) == supported
    assert supported or "reports fp16 unsupported (run.fp16_engine=deepspeed)" in why
