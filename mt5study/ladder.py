"""The scaling study's model ladder: CPU-trainable members of mT5's family made by one shape rule.

A leaf module (no imports from the package) so that both `config` (which validates preset names)
and `model` (which builds them) can read it. Each entry has the keys of `mt5study.model.PRESETS`
and is built like every mT5 preset (gated-GELU, untied output layer, relative position buckets).

The shape rule, one line: a rung with L encoder (= decoder) layers has
    d_model = 32 * L            width grows with depth at a fixed aspect ratio, as from mt5-small
                                (512 / 8 layers) to mt5-base (768 / 12), both 64 per layer; 32 per
                                layer (half theirs) keeps four rungs inside the CPU study's time
    d_ff    = 5 * d_model / 2   mt5-xl and mt5-xxl's ratio (5120 / 2048, 10240 / 4096)
    d_kv    = 16, heads = d_model / 16   mT5's heads span d_model exactly (d_kv * heads = d_model
                                for base ... xxl); a quarter of mT5's head size keeps 2 heads at L = 1
on the ETL's vocabulary (8,000 pieces: params/cpu/etl.yaml). Non-embedding parameters grow as L^3
(depth x width^2): L = 1 ... 4 spans 64x (tests/test_scaling_ladder.py checks rule and span).
"""

from __future__ import annotations

ETL_VOCAB = 8_000  # pieces of the ETL's SentencePiece model (params/cpu/etl.yaml: vocab_size)
WIDTH_PER_LAYER = 32  # d_model / layers: half mt5-small and mt5-base's 64
FF_RATIO = (5, 2)  # d_ff / d_model = 5/2 (mt5-xl, mt5-xxl)
HEAD_DIM = 16  # d_kv


def rung(layers: int, vocab_size: int = ETL_VOCAB) -> dict[str, int]:
    """The preset dims of the rung with `layers` layers, by the shape rule above."""
    if isinstance(layers, bool) or not isinstance(layers, int) or layers < 1:
        raise ValueError(f"layers must be an integer >= 1, got {layers!r}")
    d_model = WIDTH_PER_LAYER * layers
    return dict(d_model=d_model, d_ff=d_model * FF_RATIO[0] // FF_RATIO[1], num_layers=layers,
                num_heads=d_model // HEAD_DIM, d_kv=HEAD_DIM, vocab_size=vocab_size)


LADDER: dict[str, dict[str, int]] = {f"ladder-{n}": rung(n) for n in (1, 2, 3, 4)}
