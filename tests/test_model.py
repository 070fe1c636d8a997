"""mT5 presets: exact parameter counts of the released checkpoints, untied head, loading."""

from __future__ import annotations

import math

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
    assert m.encoder.embed_tokens.weight is m.shared.weight and m.decoder.embed_tokens.weight is m.shared.weight
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
    # the head stays untied through save/load (transformers 5's MT5Config says "tied"), the
    # embeddings stay shared, and the count is the architecture's
    assert m2.lm_head.weight is not m2.shared.weight and not torch.equal(m2.lm_head.weight, m2.shared.weight)
    assert m2.encoder.embed_tokens.weight is m2.shared.weight and m2.decoder.embed_tokens.weight is m2.shared.weight
    assert m2.num_parameters() == model.count_parameters("tiny")
    assert m2(input_ids=ids, labels=labels).loss.item() == pytest.approx(loss.item(), rel=1e-6)
    m2.tie_weights()  # what transformers calls on its own paths: must not re-tie the head
    assert m2.lm_head.weight is not m2.shared.weight
    # saved again, the file holds the head and the embedding once each, and loads back equal
    m2.save_pretrained(tmp_path / "again")
    m3 = model.load_checkpoint(tmp_path / "again")
    assert torch.equal(m3.lm_head.weight, m.lm_head.weight) and torch.equal(m3.shared.weight, m.shared.weight)
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


def test_checkpoint_without_an_output_layer_is_refused(tmp_path):
    from safetensors.torch import load_file, save_file

    model.build("tiny").save_pretrained(tmp_path / "ckpt")
    f = tmp_path / "ckpt" / "model.safetensors"
    tensors = {k: v for k, v in load_file(f).items() if k != "lm_head.weight"}  # a tied T5 v1.0 file
    save_file(tensors, f, metadata={"format": "pt"})
    with pytest.raises(ValueError, match="no separate output layer"):
        model.load_checkpoint(tmp_path / "ckpt")


# Initialisation -------------------------------------------------------------------------------
def _init_loss(m, seed: int = 0) -> float:
    """Loss of a freshly built model on random tokens (512 target tokens: noise ~1 % of ln V)."""
    g = torch.Generator().manual_seed(seed)
    v = m.config.vocab_size
    ids = torch.randint(2, v, (16, 32), generator=g)
    labels = torch.randint(2, v, (16, 32), generator=g)
    with torch.no_grad():
        return m.eval()(input_ids=ids, labels=labels).loss.item()


@pytest.mark.parametrize("preset", ["tiny", "mini", "mt5-small", "mt5-base"])
def test_loss_at_initialisation_is_near_ln_vocab(preset):
    """T5X's init starts at ~ln(V) + 1/2 (unit-variance logits); transformers' far above."""
    torch.manual_seed(0)
    m = model.build(preset, init="hf")
    ln_v = math.log(m.config.vocab_size)
    hf = _init_loss(m)
    assert m.lm_head.weight.std().item() == pytest.approx(1.0, rel=0.02)  # transformers: std 1.0
    model.init_weights_(m, "t5x")  # one construction per preset: re-draw every weight the T5X way
    t5x = _init_loss(m)
    print(f"{preset}: loss at init t5x {t5x:.3f}, hf {hf:.3f}, ln V {ln_v:.3f}")
    assert abs(t5x - ln_v) < 0.10 * ln_v
    assert hf > 1.5 * ln_v


def test_t5x_init_draws_each_weight_by_its_rule():
    torch.manual_seed(0)
    m = model.build("mini")
    c = m.config
    seen = set()
    for name, mod in m.named_modules():
        role = model._role(name, mod)
        if role is None:
            continue
        seen.add(role)
        dist, scale = model.init_rule(role, c, "t5x")
        w = mod.weight.detach()
        if dist == "ones":
            assert torch.equal(w, torch.ones_like(w)), name
        elif dist == "uniform":
            assert w.abs().max() <= scale and w.abs().max() > 0.8 * scale, name
        else:
            assert w.std().item() == pytest.approx(scale, rel=0.1 if w.numel() > 1000 else 0.3), name
            if dist == "truncated_normal":  # cut at 2 std of the underlying normal
                assert w.abs().max().item() <= 2 * scale / model._TRUNC + 1e-6, name
    assert seen == {"shared", "lm_head", "q", "k", "v", "o", "wi_0", "wi_1", "wo", "relative_attention_bias",
                    "layer_norm"}
    assert model.init_rule("lm_head", c, "t5x") == ("truncated_normal", c.d_model**-0.5)
    assert model.init_rule("lm_head", c, "hf") == ("normal", 1.0)


def test_t5x_init_is_seeded_and_independent_of_visit_order():
    torch.manual_seed(3)
    a = model.build("tiny")
    torch.manual_seed(3)
    b = model.build("tiny")
    sd_a = a.state_dict()
    for k, v in b.state_dict().items():
        assert torch.equal(v, sd_a[k]), k
    # ZeRO-3's construction visits modules in another order, some several times (mt5study.partition)
    torch.manual_seed(3)
    c = model.build("tiny", init="hf")  # the same construction, the RNG where build left it
    (init,) = model.init_passes(c, "t5x")
    for mod in reversed(list(c.modules()) + [c.shared, c.lm_head]):
        init(mod)
    for k, v in c.state_dict().items():
        assert torch.equal(v, sd_a[k]), k
    torch.manual_seed(4)
    assert not torch.equal(model.build("tiny").lm_head.weight, a.lm_head.weight)


def test_unknown_init_scheme():
    with pytest.raises(ValueError, match="'xavier'"):
        model.build("tiny", init="xavier")
