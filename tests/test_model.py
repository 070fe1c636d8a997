"""mT5 presets: exact parameter counts of the released checkpoints, untied head, loading."""

from __future__ import annotations

import pytest
import torch

from mt5study import model

# Released google/mt5-* checkpoints (transformers' model cards / safetensors index sizes).
RELEASED = {
    "mt5-small": 300_176_768,
    "mt5-base": 582_401_280,
    "mt5-large": 1_229_581_312,
    "mt5-xl": 3_742_619_648,
    "mt5-xxl": 12_921_057_280,
}


@pytest.mark.parametrize("preset", sorted(RELEASED))
def test_released_parameter_counts(preset):
    m = model.build(preset, device="meta")
    assert m.num_parameters() == RELEASED[preset]
    assert model.count_parameters(preset) == RELEASED[preset]
    assert m.lm_head.weight is not m.shared.weight
    assert m.config.vocab_size == 250_112 and m.config.feed_forward_proj == "gated-gelu"
    assert not m.config.tie_word_embeddings


@pytest.mark.parametrize("preset", ["tiny", "mini"])
def test_small_presets(preset):
    m = model.build(preset, device="meta")
    assert m.num_parameters() == model.count_parameters(preset)
    assert 1e4 < m.num_parameters() < 1e8


def test_unknown_preset():
    with pytest.raises(ValueError, match="'nano'"):
        model.build("nano", device="meta")


def test_forward_and_save_load_roundtrip(tmp_path):
    torch.manual_seed(0)
    m = model.build("tiny")
    ids = torch.randint(2, 500, (2, 12))
    labels = torch.randint(2, 500, (2, 5))
    loss = m(input_ids=ids, labels=labels).loss
    assert torch.isfinite(loss)
    m.save_pretrained(tmp_path / "ckpt")
    m2 = model.build("tiny", checkpoint=tmp_path / "ckpt")
    for (k, a), (_, b) in zip(m.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
    with pytest.raises(ValueError, match="does not match"):
        model.load_checkpoint(tmp_path / "ckpt", expect=model.config_for("mini"))


def test_missing_checkpoint(tmp_path):
    with pytest.raises(FileNotFoundError, match="no such folder"):
        model.build("tiny", checkpoint=tmp_path / "absent")


def test_flops_scale():
    f1 = model.flops_per_example("mt5-xxl", 1024, 256)
    # ~6 x params x tokens for the matmul-dominated part (order of magnitude check)
    approx = 6 * 12.9e9 * (1024 + 256) / 2
    assert 0.3 * approx < f1 < 3 * approx
    assert model.flops_per_example("tiny", 64, 16) > model.flops_per_example("tiny", 32, 16)
