"""mT5 model presets, construction and FLOP arithmetic.

The five `mt5-*` presets match Google's released mT5 checkpoints (google-research/multilingual-t5
README; t5x mt5 gin files): gated-GELU feed-forward, 250,112-token vocabulary, untied output
layer, relative position buckets. `tiny` and `mini` are CPU-sized members of the same family.

Every model built or loaded here has (i) the untied output layer and one input embedding shared by
encoder and decoder, whatever transformers' MT5Config says about tying (5.x forces "tied"), (ii) an
output layer that computes in float32 (`fp32_head_`, as T5X does), and, when built from scratch,
(iii) T5X's initialisation by default (`init_passes`; transformers' own with init="hf").
"""

from __future__ import annotations

import logging
import zlib
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from transformers import MT5Config, MT5ForConditionalGeneration

from mt5study.ladder import LADDER

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
    **LADDER,  # the scaling study's ladder (mt5study/ladder.py)
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
    config = MT5Config(
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
    # transformers 5 forces tie_word_embeddings=True in MT5Config.__post_init__ (configuration_mt5,
    # 5.24); set after construction it holds, and the model is then built with nothing tied
    # (encoder and decoder get their own embeddings too, re-shared by `share_embeddings`).
    config.tie_word_embeddings = False
    return config


def build(
    preset: str,
    device: str | torch.device | None = None,
    vocab_size: int | None = None,
    dropout_rate: float = 0.0,
    checkpoint: str | Path | None = None,
    init: str = "t5x",
) -> MT5ForConditionalGeneration:
    """An mT5 model of `preset`; `device="meta"` allocates nothing; `checkpoint` loads weights.

    `init` names the random initialisation (ignored when loading): "t5x" (T5X's scheme, see
    `init_passes`) or "hf" (transformers' `_init_weights`, whose std-1.0 output layer starts mT5
    far above ln(vocab)).
    """
    if init not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {init!r}; choose one of {INIT_SCHEMES}")
    config = config_for(preset, vocab_size, dropout_rate)
    if checkpoint is not None:
        return load_checkpoint(checkpoint, expect=config, dropout_rate=dropout_rate)
    with torch.device(device) if device is not None else _nullcontext():
        model = MT5ForConditionalGeneration(config)
    share_embeddings(model)
    init_weights_(model, init)
    fp32_head_(model)
    _check_untied(model)
    return model


# The encoder's and decoder's own embeddings are absent from a saved mT5 (they are `shared`): with
# nothing tied, transformers 5 reports them missing (and fills them, to be dropped by
# share_embeddings). That report, when it lists nothing else, is noise.
_EMBED_KEYS = {"encoder.embed_tokens.weight", "decoder.embed_tokens.weight"}


class _DropEmbedReport(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if "LOAD REPORT" not in msg:
            return True
        rows = [line.split("|")[0].strip() for line in msg.splitlines() if "|" in line and "MISSING" in line]
        others = [line for line in msg.splitlines() if "|" in line and "MISSING" not in line
                  and not line.startswith(("Key", "-"))]
        return not rows or bool(set(rows) - _EMBED_KEYS) or bool(others)


def load_checkpoint(
    source: str | Path, expect: MT5Config | None = None, dropout_rate: float | None = None
) -> MT5ForConditionalGeneration:
    """Load released or saved mT5 weights from a local folder or hub name, checking the shape.

    Loaded with nothing tied (config.tie_word_embeddings=False): transformers 5 would otherwise
    build the model tied and untie lm_head only if it can see that the file's lm_head.weight and
    shared.weight differ, which it cannot under ZeRO-3's zero.Init (the partitions are empty), so
    a released checkpoint would lose its output layer there. The encoder and decoder are then
    pointed at `shared`.
    """
    from transformers import MT5Config

    local = Path(source)
    if not local.exists() and (str(source).startswith((".", "/")) or local.suffix):
        raise FileNotFoundError(f"checkpoint {source}: no such folder")
    kwargs: dict[str, Any] = {}
    if dropout_rate is not None:
        kwargs["dropout_rate"] = dropout_rate
    hf_logger = logging.getLogger("transformers.modeling_utils")
    quiet = _DropEmbedReport()
    hf_logger.addFilter(quiet)
    try:
        config = MT5Config.from_pretrained(str(source), **kwargs)
        config.tie_word_embeddings = False  # after construction: 5.x's __post_init__ forces True
        model, info = MT5ForConditionalGeneration.from_pretrained(str(source), config=config, output_loading_info=True)
    except OSError as e:
        raise FileNotFoundError(f"checkpoint {source}: cannot load mT5 weights: {e}") from e
    finally:
        hf_logger.removeFilter(quiet)
    if expect is not None:
        keys = ("d_model", "d_ff", "num_layers", "num_heads", "d_kv", "vocab_size")
        got = {k: getattr(model.config, k) for k in keys}
        want = {k: getattr(expect, k) for k in keys}
        if got != want:
            raise ValueError(f"checkpoint {source}: architecture {got} does not match the preset {want}")
    missing = set(info["missing_keys"])
    if "lm_head.weight" in missing:
        raise ValueError(f"checkpoint {source}: no separate output layer (lm_head.weight); mT5's is untied")
    if "shared.weight" in missing:  # a file that names the embedding only by the encoder's key
        if "encoder.embed_tokens.weight" in missing:
            raise ValueError(f"checkpoint {source}: no input embedding (shared.weight)")
        model.shared = model.encoder.embed_tokens
    if missing - _EMBED_KEYS - {"shared.weight"}:
        raise ValueError(f"checkpoint {source}: weights missing: {sorted(missing - _EMBED_KEYS - {'shared.weight'})}")
    share_embeddings(model)
    fp32_head_(model)
    _check_untied(model)
    return model


def share_embeddings(model: MT5ForConditionalGeneration) -> None:
    """Encoder and decoder read the one `shared` embedding; lm_head stays apart (released mT5).

    Also records that state where transformers looks for it: config.tie_word_embeddings=False so
    that a later `tie_weights()` ties nothing, and (5.x) the tied-key map that save_pretrained and
    from_pretrained use, so the saved file holds shared.weight and lm_head.weight once each.
    """
    model.encoder.embed_tokens = model.shared
    model.decoder.embed_tokens = model.shared
    model.config.tie_word_embeddings = False
    if hasattr(model, "all_tied_weights_keys"):  # transformers >= 5
        model.all_tied_weights_keys = {
            "encoder.embed_tokens.weight": "shared.weight",
            "decoder.embed_tokens.weight": "shared.weight",
        }


# Random initialisation ------------------------------------------------------------------------
INIT_SCHEMES = ("t5x", "hf")
_TRUNC = 0.87962566103423978  # std of a unit normal truncated at +-2 (JAX's variance_scaling)


def _t5x_rule(role: str, c: MT5Config) -> tuple[str, float]:
    """(distribution, scale) T5X draws a weight of `role` with (t5x/examples/t5/layers.py, network.py).

    Dense kernels are variance_scaling(1.0, 'fan_in', ...): variance 1/fan_in, 'normal' for the
    attention projections (MultiHeadDotProductAttention.kernel_init), 'truncated_normal' for the
    MLP (MlpBlock.kernel_init) and the untied logits layer (DenseGeneral's default, `logits_dense`);
    the query kernel is further divided by sqrt(head_dim), T5's folded 1/sqrt(d_k). The token
    embedding is normal(stddev=1.0) (Transformer.setup); relative position biases are
    variance_scaling(1.0, 'fan_avg', 'uniform') over (heads, buckets); layer-norm scales are ones.
    For 'uniform' the scale is the half-width, otherwise the std of the drawn values.
    """
    d, inner = c.d_model, c.num_heads * c.d_kv
    rules = {
        "shared": ("normal", 1.0),
        "lm_head": ("truncated_normal", d**-0.5),
        "q": ("normal", (d * c.d_kv) ** -0.5),
        "k": ("normal", d**-0.5),
        "v": ("normal", d**-0.5),
        "o": ("normal", inner**-0.5),
        "wi_0": ("truncated_normal", d**-0.5),
        "wi_1": ("truncated_normal", d**-0.5),
        "wi": ("truncated_normal", d**-0.5),
        "wo": ("truncated_normal", c.d_ff**-0.5),
        "relative_attention_bias": ("uniform", (3.0 / ((c.num_heads + c.relative_attention_num_buckets) / 2)) ** 0.5),
        "layer_norm": ("ones", 1.0),
    }
    return rules[role]


def _hf_rule(role: str, c: MT5Config) -> tuple[str, float]:
    """transformers' MT5PreTrainedModel._init_weights (std-1.0 untied head), as (distribution, std)."""
    d, inner, f = c.d_model, c.num_heads * c.d_kv, c.initializer_factor
    rules = {
        "shared": 1.0, "lm_head": 1.0, "q": (d * c.d_kv) ** -0.5, "k": d**-0.5, "v": d**-0.5, "o": inner**-0.5,
        "wi_0": d**-0.5, "wi_1": d**-0.5, "wi": d**-0.5, "wo": c.d_ff**-0.5, "relative_attention_bias": d**-0.5,
    }
    return ("ones", f) if role == "layer_norm" else ("normal", f * rules[role])


def _role(name: str, module: torch.nn.Module) -> str | None:
    """The weight role of a module from its qualified name, None if it has no parameters of its own."""
    if not any(True for _ in module.parameters(recurse=False)):
        return None
    last = name.rsplit(".", 1)[-1]
    if type(module).__name__.endswith("LayerNorm"):
        return "layer_norm"
    if last in ("shared", "embed_tokens"):
        return "shared"
    if last in ("lm_head", "q", "k", "v", "o", "wi", "wi_0", "wi_1", "wo", "relative_attention_bias"):
        return last
    raise ValueError(f"no initialisation rule for module {name!r} ({type(module).__name__})")


def _draw(shape: torch.Size, dist: str, scale: float, generator: torch.Generator) -> torch.Tensor:
    out = torch.empty(shape, dtype=torch.float32)  # drawn on the CPU in fp32: same values on any device
    if dist == "normal":
        return out.normal_(0.0, scale, generator=generator)
    if dist == "truncated_normal":  # JAX: truncated_normal(-2, 2) * sqrt(variance) / _TRUNC
        # Unit normals with those beyond +-2 drawn again until none is (4.6 % of them, then
        # 4.6 % of those, ...): the same law as torch's trunc_normal_, ~10x faster on CPU.
        flat = out.view(-1).normal_(0.0, 1.0, generator=generator)
        redo = (flat.abs() > 2.0).nonzero().squeeze(1)
        while redo.numel():
            fresh = torch.randn(redo.numel(), generator=generator)
            flat[redo] = fresh
            redo = redo[fresh.abs() > 2.0]
        return out.mul_(scale / _TRUNC)
    if dist == "uniform":
        return out.uniform_(-scale, scale, generator=generator)
    return out.fill_(scale)  # "ones" (times transformers' initializer_factor)


def init_passes(model: MT5ForConditionalGeneration, scheme: str | None) -> list[Callable[[torch.nn.Module], None]]:
    """Per-module init functions to run after construction (none for "hf": transformers' own).

    Each writes only its module's own parameters (recurse=False), so a caller may gather one
    module at a time under ZeRO-3 (mt5study.partition). Values come from a CPU generator seeded by
    a base seed and the module's qualified name: visiting a module twice, in any order, or on
    another device gives the same weights. The base seed is drawn from torch's global RNG at the
    first call, so the same seed and construction give the same model.
    """
    if scheme in (None, "hf"):
        return []
    if scheme not in INIT_SCHEMES:
        raise ValueError(f"unknown init scheme {scheme!r}; choose one of {INIT_SCHEMES}")
    names = {id(m): n for n, m in model.named_modules()}  # the shared embedding once, as "shared"
    config = model.config
    base: list[int] = []

    def t5x(module: torch.nn.Module) -> None:
        role = _role(names.get(id(module), ""), module)
        if role is None:
            return
        if not base:
            base.append(int(torch.randint(0, 2**62, (1,)).item()))
        g = torch.Generator().manual_seed(base[0] ^ zlib.crc32(names[id(module)].encode()))
        dist, scale = _t5x_rule(role, config)
        with torch.no_grad():
            for p in module.parameters(recurse=False):  # Linear/Embedding/LayerNorm: one weight
                if p.device.type != "meta":
                    p.copy_(_draw(p.shape, dist, scale, g))

    return [t5x]


def init_weights_(model: MT5ForConditionalGeneration, scheme: str) -> None:
    """Apply `init_passes(model, scheme)` to every module of a whole (not partitioned) model."""
    for init in init_passes(model, scheme):
        for module in model.modules():
            init(module)


def init_rule(role: str, config: MT5Config, scheme: str) -> tuple[str, float]:
    """(distribution, scale) of one weight role under a scheme (tests and docs read it)."""
    return (_t5x_rule if scheme == "t5x" else _hf_rule)(role, config)


# Output layer in float32 -------------------------------------------------------------------------
class Float32Linear(torch.nn.Linear):
    """nn.Linear computing in float32 whatever its weight's dtype (T5X's logits layer: float32 "for
    stability"). The weight keeps the engine's dtype (bf16/fp16 under DeepSpeed) and is upcast per
    call, inside forward, so under ZeRO-3 it is the gathered weight that is upcast."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(device_type=x.device.type, enabled=False):
            return torch.nn.functional.linear(x.float(), self.weight.float())


def fp32_head_(model: MT5ForConditionalGeneration) -> None:
    """Make lm_head compute logits in float32 (in place: same parameter, same state-dict key).

    The class is swapped rather than the module replaced so that no new parameter is created
    (inside zero.Init a new one would be partitioned afresh) and hooks stay attached.
    """
    head = model.lm_head
    if type(head) is torch.nn.Linear and head.bias is None:
        head.__class__ = Float32Linear
    elif not isinstance(head, Float32Linear):
        raise TypeError(f"lm_head is {type(head).__name__}, expected a bias-free nn.Linear")


def _check_untied(model: MT5ForConditionalGeneration) -> None:
    if model.lm_head.weight is model.shared.weight:
        raise RuntimeError("mT5's output layer must be untied from the input embedding")
    if model.encoder.embed_tokens.weight is not model.shared.weight or model.decoder.embed_tokens.weight is not model.shared.weight:
        raise RuntimeError("mT5's encoder and decoder must share the input embedding")


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
