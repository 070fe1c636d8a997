"""The loss: float32 logits and cross-entropy under 16-bit weights, z-loss, ignored labels."""

from __future__ import annotations

import copy

import pytest
import torch

from mt5study import model as model_lib
from mt5study.batches import attention_mask
from mt5study.loss import IGNORE, LossOut, compute_loss, shift_right, token_losses


def _batch(vocab: int, seed: int = 0, b: int = 4, li: int = 24, lt: int = 8):
    g = torch.Generator().manual_seed(seed)
    ids = torch.randint(2, vocab, (b, li), generator=g)
    ids[0, -5:] = 0  # padding: masked out of attention
    labels = torch.randint(2, vocab, (b, lt), generator=g)
    labels[1, -3:] = IGNORE  # a short target
    return ids, labels


@pytest.fixture(scope="module")
def mini():
    torch.manual_seed(0)
    return model_lib.build("mini").eval()


def test_equals_transformers_loss_in_fp32(mini):
    ids, labels = _batch(mini.config.vocab_size)
    with torch.no_grad():
        out = compute_loss(mini, ids, labels)
        hf = mini(input_ids=ids, attention_mask=attention_mask(ids), labels=labels).loss
    assert isinstance(out, LossOut) and out.total.dtype == torch.float32
    assert out.total.item() == out.cross_entropy.item()  # no z-loss by default
    assert out.cross_entropy.item() == pytest.approx(hf.item(), rel=1e-6)


def test_shift_right_matches_transformers(mini):
    _, labels = _batch(mini.config.vocab_size)
    assert torch.equal(shift_right(labels), mini._shift_right(labels))


def test_ignored_labels_do_not_count(mini):
    ids, labels = _batch(mini.config.vocab_size)
    with torch.no_grad():
        logits = mini(input_ids=ids, attention_mask=attention_mask(ids), decoder_input_ids=shift_right(labels)).logits
        ce = compute_loss(mini, ids, labels).cross_entropy
    keep = labels != IGNORE
    by_hand = torch.nn.functional.cross_entropy(logits[keep], labels[keep])  # only the kept tokens
    assert ce.item() == pytest.approx(by_hand.item(), rel=1e-6)
    assert keep.sum() < labels.numel()
    ce_tok, log_z = token_losses(logits, labels)
    assert torch.all(ce_tok[~keep] == 0) and torch.all(log_z[~keep] == 0)
    # everything ignored: zero, not nan
    assert compute_loss(mini, ids, torch.full_like(labels, IGNORE)).total.item() == 0.0


def test_z_loss_is_the_mean_squared_log_normaliser(mini):
    ids, labels = _batch(mini.config.vocab_size, seed=1)
    with torch.no_grad():
        out = compute_loss(mini, ids, labels, z_loss=1e-4)
        logits = mini(input_ids=ids, attention_mask=attention_mask(ids), decoder_input_ids=shift_right(labels)).logits
    keep = labels != IGNORE
    log_z = torch.log(torch.exp(logits.double()).sum(-1))[keep]  # log Z by its definition, float64
    assert (out.total - out.cross_entropy).item() == pytest.approx(1e-4 * (log_z**2).mean().item(), abs=4e-6)  # total - ce: fp32 at ~10
    assert out.cross_entropy.item() == pytest.approx(compute_loss(mini, ids, labels).total.item(), rel=1e-6)


def test_z_loss_gradient_pulls_log_z_to_zero():
    torch.manual_seed(0)
    m = model_lib.build("tiny")
    ids, labels = _batch(m.config.vocab_size)
    compute_loss(m, ids, labels, z_loss=1.0).total.backward()
    g_z = m.lm_head.weight.grad.clone()
    m.zero_grad()
    compute_loss(m, ids, labels).total.backward()
    assert not torch.allclose(g_z, m.lm_head.weight.grad)


def test_bf16_weights_give_fp32_logits_closer_to_the_fp32_loss(mini):
    """T5X's float32 logits: under bf16 weights the loss is nearer the fp32 one than transformers' bf16 loss."""
    ids, labels = _batch(mini.config.vocab_size, seed=2, b=8, lt=16)
    with torch.no_grad():
        ref = compute_loss(mini, ids, labels).cross_entropy.item()
        ours_model = copy.deepcopy(mini).to(torch.bfloat16)
        logits = ours_model(input_ids=ids, attention_mask=attention_mask(ids),
                            decoder_input_ids=shift_right(labels)).logits
        ours = compute_loss(ours_model, ids, labels).cross_entropy.item()
        plain = copy.deepcopy(mini).to(torch.bfloat16)
        plain.lm_head.__class__ = torch.nn.Linear  # transformers' own head: bf16 logits, bf16 loss
        hf = plain(input_ids=ids, attention_mask=attention_mask(ids), labels=labels)
    assert logits.dtype == torch.float32 and hf.logits.dtype == torch.bfloat16
    print(f"fp32 {ref:.6f}  bf16 with fp32 logits {ours:.6f}  transformers bf16 {hf.loss.item():.6f}")
    assert abs(ours - ref) < abs(hf.loss.item() - ref)
    assert abs(ours - ref) < 0.01 * ref


def test_backward_through_the_fp32_head_reaches_bf16_weights(mini):
    m = copy.deepcopy(mini).to(torch.bfloat16).train()
    ids, labels = _batch(m.config.vocab_size)
    out = compute_loss(m, ids, labels, z_loss=1e-4)
    out.total.backward()
    assert out.total.dtype == torch.float32
    assert m.lm_head.weight.grad.dtype == torch.bfloat16 and torch.isfinite(m.lm_head.weight.grad).all()
    assert m.shared.weight.grad is not None


def test_works_through_a_wrapper_with_module(mini):
    """DeepSpeed's engine and DDP hold the model as .module and forward calls to it."""

    class Engine(torch.nn.Module):
        def __init__(self, module):
            super().__init__()
            self.module = module

        def forward(self, *args, **kwargs):
            return self.module(*args, **kwargs)

    ids, labels = _batch(mini.config.vocab_size)
    with torch.no_grad():
        assert compute_loss(Engine(mini), ids, labels).total.item() == compute_loss(mini, ids, labels).total.item()
