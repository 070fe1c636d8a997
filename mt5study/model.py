"""mT5 model presets, construction and FLOP arithmetic.

The five `mt5-*` presets match Google's released mT5 checkpoints (google-research/multilingual-t5
README; t5x mt5 gin files): gated-GELU feed-forward, 250,112-token vocabulary, untied output
layer, relative position buckets. `tiny` and `mini` are CPU-sized members of the same family.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from transformers import MT5Config, MT5ForConditionalGeneration

MT5_VOCAB = 250_112  # 250k SentencePiece pieces + 100 sentinels, padded (mT5 paper)

# d_model, d_ff, layers (encoder = decoder), heads; head dim (d_kv) is 64 everywhere.
PRESETS: dict[str, dict[str, int]] = {
    "tiny": dict(d_model=32, d_ff=64, num_layers=2, num_heads=2, d_kv=16, vocab_size=512),
    "mini": dict(d_model=128, d_ff=320, num_layers=3, num_heads=4, d_kv=32, vocab_size=8_000),
    "mt5-small": dict(d_model=512, d_ff=1024, num_layers=8, num_heads=6, d_kv=64, vocab_size=MT5_VOCAB),
    "mt5-base": dict(d_model=768, d_ff=2048, num_layers=12, num_heads=12, d_kv=64, vocab_size=MT5_VOCAB),
    "mt5-large": dict(d_model=1024, d_ff=2816, num_layers=24, num_heads=16, d_kv=64, vocab_size=MT5_VOCAB),
    "mt5-xl": dict(d_model=2048, d_ff=5120, num_layers=24, num_heads=32, d_kv=64, vocab_size=MT5_VOCAB),
    "mt5-xxl": dict(d_model=4096, d_ff=10240, num_layers=24, num_heads=64, d_kv=64, vocab_size=MT5_VOCAB),
}

# Parameter counts of the released checkpoints (google/mt5-*, safetensors metadata; the same
# numbers follow from the architecture arithmetic in `count_parameters`).
RELEASED_PARAMETERS = {
    "mt5-small": 300_176_768,
    "mt5-base": 582_401_280,
    "mt5-large": 1_229_581_312,
    "mt5-xl": 3_742_619_648,
    "mt5-xxl": 12_921_057_280,
}


def config_for(preset: str, vocab_size: int | None = None, dropout_rate: float = 0.0) -> MT5Config:
    """The MT5Config of a preset (untied output layer, gated-GELU, no dropout by default)."""
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    dims = dict(PRESETS[preset])
    if vocab_size is not None:
        dims["vocab_size"] = vocab_size
    return MT5Config(
        **dims,
        num_decoder_layers=dims["num_layers"],
        feed_forward_proj="gated-gelu",
        tie_word_embeddings=False,
        dropout_rate=dropout_rate,
        relative_attention_num_buckets=32,
        relative_attention_max_distance=128,
        pad_token_id=0,
        eos_token_id=1,
        decoder_start_token_id=0,
    )


def build(
    preset: str,
    device: str | torch.device | None = None,
    vocab_size: int | None = None,
    dropout_rate: float = 0.0,
    checkpoint: str | Path | None = None,
) -> MT5ForConditionalGeneration:
    """An mT5 model of `preset`; `device="meta"` allocates nothing; `checkpoint` loads weights."""
    config = config_for(preset, vocab_size, dropout_rate)
    if checkpoint is not None:
        return load_checkpoint(checkpoint, expect=config, dropout_rate=dropout_rate)
    with torch.device(device) if device is not None else _nullcontext():
        model = MT5ForConditionalGeneration(config)
    _check_untied(model)
    return model


def load_checkpoint(
    source: str | Path, expect: MT5Config | None = None, dropout_rate: float | None = None
) -> MT5ForConditionalGeneration:
    """Load released or saved mT5 weights from a local folder or hub name, checking the shape."""
    local = Path(source)
    if not local.exists() and (str(source).startswith((".", "/")) or local.suffix):
        raise FileNotFoundError(f"checkpoint {source}: no such folder")
    kwargs: dict[str, Any] = {}
    if dropout_rate is not None:
        kwargs["dropout_rate"] = dropout_rate
    try:
        model = MT5ForConditionalGeneration.from_pretrained(str(source), **kwargs)
    except OSError as e:
        raise FileNotFoundError(f"checkpoint {source}: cannot load mT5 weights: {e}") from e
    if expect is not None:
        keys = ("d_model", "d_ff", "num_layers", "num_heads", "d_kv", "vocab_size")
        got = {k: getattr(model.config, k) for k in keys}
        want = {k: getattr(expect, k) for k in keys}
        if got != want:
            raise ValueError(f"checkpoint {source}: architecture {got} does not match the preset {want}")
    _check_untied(model)
    return model


def _check_untied(model: MT5ForConditionalGeneration) -> None:
    if model.lm_head.weight is model.shared.weight:
        raise RuntimeError("mT5's output layer must be untied from the input embedding (transformers<5 needed)")


class _nullcontext:
    def __enter__(self):
        return None

    def __exit__(self, *exc):
        return False


def count_parameters(preset: str, vocab_size: int | None = None) -> int:
    """Parameters of a preset from the architecture alone (shared embedding counted once)."""
    p = dict(PRESETS[preset])
    if vocab_size is not None:
        p["vocab_size"] = vocab_size
    d, f, n, h, k, v = p["d_model"], p["d_ff"], p["num_layers"], p["num_heads"], p["d_kv"], p["vocab_size"]
    attn = 4 * d * h * k  # q, k, v, o projections
    ffn = 3 * d * f  # gated: wi_0, wi_1, wo
    enc = n * (attn + ffn + 2 * d) + d + 32 * h  # 2 layer norms per layer, final norm, position bias
    dec = n * (2 * attn + ffn + 3 * d) + d + 32 * h
    return 2 * v * d + enc + dec  # shared input embedding + untied lm_head


def flops_per_example(preset: str, input_length: int, target_length: int, vocab_size: int | None = None) -> int:
    """Training FLOPs of one example (forward + backward = 3 x forward), matmuls only.

    Forward FLOPs are 2 per multiply-accumulate: every weight matrix once per token that passes
    it, plus the attention score and value products (the PaLM appendix B accounting, applied to
    an encoder-decoder). Embedding lookups, norms and softmax are left out.
    """
    p = dict(PRESETS[preset])
    if vocab_size is not None:
        p["vocab_size"] = vocab_size
    d, f, n, h, k, v = p["d_model"], p["d_ff"], p["num_layers"], p["num_heads"], p["d_kv"], p["vocab_size"]
    li, lt, a = input_length, target_length, h * k
    attn_w, ffn_w = 4 * d * a, 3 * d * f
    enc = n * (li * (attn_w + ffn_w) + 2 * li * li * a)  # weights + (QK^T, AV)
    dec = n * (lt * (2 * attn_w + ffn_w) + 2 * lt * lt * a + 2 * lt * li * a)  # self + cross
    head = lt * d * v
    return 3 * 2 * (enc + dec + head)
