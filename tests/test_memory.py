"""Memory arithmetic: ZeRO model states against DeepSpeed's estimator, activations against autograd."""

from __future__ import annotations

import pytest
import torch

from mt5study import memory
from mt5study.model import PRESETS, RELEASED_PARAMETERS, build, count_parameters

XXL = "mt5-xxl"
P_XXL = RELEASED_PARAMETERS[XXL]  # 12,921,057,280 parameters (released checkpoint)
V_TIMES_D = 250_112 * 4096  # mT5 vocabulary x d_model of xxl: the embedding and lm_head matrices


def states(e: dict) -> int:
    return e["parameters"] + e["gradients"] + e["optimizer_states"]


def test_inputs_to_deepspeed_match_the_architecture():
    assert count_parameters(XXL) == P_XXL
    assert memory.largest_layer_params(XXL) == V_TIMES_D
    # DeepSpeed's own counter on a real (CPU, tiny) model: shared params once, largest module.
    from deepspeed.runtime.zero.stage3 import model_to_params

    total, largest = model_to_params(build("tiny"))
    assert (total, largest) == (count_parameters("tiny"), memory.largest_layer_params("tiny"))


@pytest.mark.parametrize("n_gpus", [8, 16, 32, 64])
def test_zero3_states_agree_with_deepspeed(n_gpus):
    ds = memory.deepspeed_estimate(XXL, 3, n_gpus)
    ours = states(memory.estimate(XXL, 3, "bf16", n_gpus, 1, 1024, 256))
    # Like with like: DeepSpeed counts 4 x largest layer (gathered 16-bit params + grads) plus
    # 18 bytes/param partitioned; we count the same working set plus the ZeRO paper's 16 bytes.
    # The 2 bytes/param difference is DeepSpeed's fp32 gradient partition (the 16-bit gradient
    # is upcast before the optimizer step, stage3.py `_prepare_fp32_grad_for_sub_group`), which
    # replaces the paper's 16-bit one. After adding it back, only int rounding of the 1/n shares
    # remains: tolerance 8 bytes.
    gap = 2 * P_XXL / n_gpus
    assert abs(ds["gpu"] - (ours + gap)) <= 8
    # The gap is small next to the total: under 10 % at 8 GPUs, shrinking as 1/n.
    assert (ds["gpu"] - ours) / ds["gpu"] < 0.10


@pytest.mark.parametrize("offload", ["optimizer", "optimizer+params"])
@pytest.mark.parametrize("n_gpus", [8, 64])
def test_zero3_offload_agrees_with_deepspeed(offload, n_gpus):
    ds = memory.deepspeed_estimate(XXL, 3, n_gpus, gpus_per_node=8, offload=offload)
    ours = memory.estimate(XXL, 3, "bf16", n_gpus, 1, 1024, 256, offload=offload)
    # GPU: with offload DeepSpeed keeps the 16-bit partition (or nothing) plus the working set,
    # exactly what we count (tolerance: rounding, 8 bytes).
    assert abs(ds["gpu"] - states(ours)) <= 8
    # Host: DeepSpeed gives bytes per node with its 1.5 buffer factor; ours are per GPU rank.
    assert ds["cpu"] == pytest.approx(ours["cpu"] * 8 * 1.5, rel=1e-9)


@pytest.mark.parametrize("n_gpus", [8, 64])
def test_zero2_agrees_with_deepspeed(n_gpus):
    ds = memory.deepspeed_estimate(XXL, 2, n_gpus)
    ours = states(memory.estimate(XXL, 2, "bf16", n_gpus, 1, 1024, 256))
    # DeepSpeed ZeRO-2: 2 (replicated 16-bit params) + 18/n (2 + 4 grads, 12 optimizer); ours 2 +
    # 14/n. The 4 bytes/param/n gap is its fp32 gradient partition, kept beside the 16-bit one.
    assert abs(ds["gpu"] - (ours + 4 * P_XXL / n_gpus)) <= 8
    off = memory.estimate(XXL, 2, "bf16", n_gpus, 1, 1024, 256, offload="optimizer")
    assert states(off) == memory.deepspeed_estimate(XXL, 2, n_gpus, offload="optimizer")["gpu"]


@pytest.mark.parametrize("precision", ["bf16", "fp16", "fp32"])
@pytest.mark.parametrize("n_gpus", [1, 2, 8, 64])
def test_stage3_is_stage0_over_n_gpus(precision, n_gpus):
    s0 = memory.estimate(XXL, 0, precision, n_gpus, 1, 1024, 256)
    s3 = memory.estimate(XXL, 3, precision, n_gpus, 1, 1024, 256)
    assert states(s0) == 16 * P_XXL  # 2+2+12 or 4+4+8 bytes per parameter, replicated
    compute_bytes = 4 if precision == "fp32" else 2
    working = 2 * compute_bytes * V_TIMES_D  # the gathered embedding: params + grads
    # fp32 under ZeRO: DeepSpeed's fp32 master partition beside the fp32 parameters (4 + 4 + 12)
    per_param = 20 if precision == "fp32" else 16
    assert states(s3) - working == pytest.approx(per_param * P_XXL / n_gpus, abs=4)


@pytest.mark.parametrize("stage", [1, 2, 3])
def test_fp32_zero_counts_deepspeeds_master_copy(stage):
    # 12 bytes per parameter of optimizer states at every ZeRO stage and precision; ZeRO-0 (no
    # DeepSpeed ZeRO optimizer: torch's AdamW on the model's own fp32 weights) keeps 8.
    n = 4
    f32 = memory.estimate(XXL, stage, "fp32", n, 1, 1024, 256)
    assert f32["optimizer_states"] == memory.estimate(XXL, stage, "bf16", n, 1, 1024, 256)["optimizer_states"]
    assert f32["optimizer_states"] == pytest.approx(12 * P_XXL / n, abs=1)
    assert memory.estimate(XXL, 0, "fp32", n, 1, 1024, 256)["optimizer_states"] == 8 * P_XXL


def test_stages_partition_in_order():
    n = 16
    s = {k: memory.estimate(XXL, k, "bf16", n, 1, 1024, 256) for k in range(4)}
    assert s[1]["optimizer_states"] == pytest.approx(12 * P_XXL / n, abs=1)
    assert s[1]["gradients"] == 2 * P_XXL and s[1]["parameters"] == 2 * P_XXL
    assert s[2]["gradients"] == pytest.approx(2 * P_XXL / n, abs=1)
    assert s[2]["parameters"] == 2 * P_XXL
    assert states(s[0]) > states(s[1]) > states(s[2]) > states(s[3])


def test_precision_ratios():
    f32 = memory.estimate(XXL, 0, "fp32", 1, 1, 1024, 256)
    b16 = memory.estimate(XXL, 0, "bf16", 1, 1, 1024, 256)
    assert memory.estimate(XXL, 0, "fp16", 1, 1, 1024, 256) == b16
    assert f32["parameters"] == 2 * b16["parameters"] == 4 * P_XXL
    assert f32["gradients"] == 2 * b16["gradients"]
    assert f32["optimizer_states"] * 3 == b16["optimizer_states"] * 2  # 8 vs 12 bytes/param
    # 16-bit activations keep fp32 softmax outputs, norm inputs and loss terms: less than half.
    assert 1.0 < f32["activations"] / b16["activations"] < 2.0


def test_offload_moves_states_to_host():
    n = 8
    plain = memory.estimate(XXL, 3, "bf16", n, 1, 1024, 256)
    assert "cpu" not in plain
    opt = memory.estimate(XXL, 3, "bf16", n, 1, 1024, 256, offload="optimizer")
    assert opt["optimizer_states"] == 0
    assert opt["parameters"] == plain["parameters"]
    assert opt["cpu"] == pytest.approx((12 + 4) * P_XXL / n, abs=1)  # optimizer + fp32 grads
    both = memory.estimate(XXL, 3, "bf16", n, 1, 1024, 256, offload="optimizer+params")
    assert both["parameters"] == 2 * V_TIMES_D  # only the gathered working set stays
    assert both["cpu"] == pytest.approx((12 + 4 + 2) * P_XXL / n, abs=1)
    assert memory.estimate(XXL, 1, "bf16", n, 1, 1024, 256, offload="optimizer")["optimizer_states"] == 0


@pytest.mark.parametrize("preset", sorted(PRESETS))
@pytest.mark.parametrize("precision", ["fp32", "bf16", "fp16"])
def test_every_preset_and_precision(preset, precision):
    e1 = memory.estimate(preset, 3, precision, 4, 1, 128, 32)
    e4 = memory.estimate(preset, 3, precision, 4, 4, 128, 32)
    assert set(e1) == {"parameters", "gradients", "optimizer_states", "activations", "buffers",
                       "embedding_second_grad", "total"}
    assert e1["total"] == sum(v for k, v in e1.items() if k != "total")
    # Linear in micro-batch, apart from the fp32 copy of a 16-bit lm_head weight (one per step).
    fixed = memory.activation_breakdown(preset, precision, 1, 128, 32)["head_weight"]
    v_d = PRESETS[preset]["vocab_size"] * PRESETS[preset]["d_model"]
    assert fixed == (0 if precision == "fp32" else 4 * v_d)  # bytes: vocab x d_model x fp32
    assert e4["activations"] - fixed == 4 * (e1["activations"] - fixed)
    assert states(e4) == states(e1)  # model states do not depend on it
    ck = memory.estimate(preset, 3, precision, 4, 4, 128, 32, activation_checkpointing=True)
    assert ck["activations"] < e4["activations"]


def test_checkpointing_saves_most_activations_at_mt5_scale():
    full = memory.activation_breakdown(XXL, "bf16", 1, 1024, 256)
    ck = memory.activation_breakdown(XXL, "bf16", 1, 1024, 256, activation_checkpointing=True)
    # The fp32 copy of the bf16 lm_head weight that Float32Linear saves (250,112 x 4,096 x 4 bytes
    # = 3.8 GiB) sits outside the blocks: checkpointing leaves it as it is.
    assert ck["head_weight"] == full["head_weight"] == 4 * V_TIMES_D
    # The blocks: 48 kept as one d_model vector per token, plus one recomputed in backward.
    blocks = {k: e["encoder"] + e["decoder"] + e["recompute"] for k, e in (("full", full), ("ck", ck))}
    assert blocks["ck"] < blocks["full"] / 10
    assert sum(ck.values()) < sum(full.values()) / 3  # head, loss and position bias included


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(preset="mt5-huge"), "mt5-huge"),
        (dict(precision="fp8"), "fp8"),
        (dict(zero_stage=4), "4"),
        (dict(n_gpus=0), "0"),
        (dict(micro_batch=0), "micro_batch"),
        (dict(offload="nvme"), "nvme"),
        (dict(zero_stage=0, offload="optimizer"), "zero_stage"),
        (dict(zero_stage=2, offload="optimizer+params"), "optimizer\\+params"),
    ],
)
def test_bad_input_raises_naming_the_value(kwargs, match):
    args = dict(preset="mini", zero_stage=3, precision="bf16", n_gpus=2, micro_batch=1,
                input_length=64, target_length=16)
    args.update(kwargs)
    with pytest.raises(ValueError, match=match):
        memory.estimate(**args)


def test_deepspeed_estimate_bad_input():
    with pytest.raises(ValueError, match="zero_stage"):
        memory.deepspeed_estimate(XXL, 1, 8)
    with pytest.raises(ValueError, match="12"):
        memory.deepspeed_estimate(XXL, 3, 12, gpus_per_node=8)


def test_fits_table():
    df = memory.fits_table(micro_batches=(1, 4), n_gpus=(1, 8, 64))
    assert {"fits_40gib", "fits_80gib", "total_gib", "offload"} <= set(df.columns)
    # 13B x 16 bytes = 193 GiB of model states: replicated training never fits one GPU.
    assert not df[(df.zero_stage == 0)].fits_80gib.any()
    # Model states 16/64 bytes/param + embedding working set + checkpointed activations: fits 40.
    row = df[(df.precision == "bf16") & (df.zero_stage == 3) & (df.offload == "none")
             & (df.n_gpus == 64) & (df.micro_batch == 1) & df.activation_checkpointing]
    assert len(row) == 1 and row.fits_40gib.item()
    # Anything that fits on n GPUs still fits on more (same other settings).
    keys = ["precision", "zero_stage", "offload", "micro_batch", "activation_checkpointing"]
    for _, group in df.sort_values("n_gpus").groupby(keys):
        if group.zero_stage.iloc[0] > 0:
            assert list(group.total_gib) == sorted(group.total_gib, reverse=True)


# --- activations against what autograd actually keeps ---------------------------------------


def measure_activations(preset, precision, batch, input_length, target_length, checkpointing):
    """Bytes autograd holds at the end of forward, plus the largest block recompute in backward.

    Every tensor saved for backward passes through a saved_tensors_hooks pack hook; storages are
    deduplicated (views and tensors saved by several ops count once) and parameters excluded. The
    logits are held too. With checkpointing, a block's recomputation in backward saves its
    tensors again: the largest such set is added (one block is recomputed at a time). The loss is
    computed from fp32 logits, as the estimate assumes.
    """
    torch.manual_seed(0)
    model = build(preset)
    if precision == "bf16":
        model = model.to(torch.bfloat16)
    model.train()
    if checkpointing:
        # Reentrant, unlike transformers 5's default: torch's non-reentrant checkpoint packs the
        # recomputed tensors with its own saved_tensors_hooks, which hide them from `pack`. Both
        # variants keep the same tensors (a block's tensor arguments in forward, its own saved
        # tensors while recomputed; torch checks that the count matches the forward's).
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": True})
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    vocab = PRESETS[preset]["vocab_size"]
    x = torch.randint(2, vocab, (batch, input_length))
    y = torch.randint(2, vocab, (batch, target_length))
    state = {"phase": "forward", "block": None}
    forward, recompute = {}, {}
    # The hook sits on each block's first sub-layer: transformers 5 checkpoints a block's forward,
    # not its __call__, so a hook on the block itself does not fire in the recompute.
    for i, block in enumerate(list(model.encoder.block) + list(model.decoder.block)):
        block.layer[0].register_forward_pre_hook(lambda mod, args, i=i: state.__setitem__("block", i))

    def pack(t):
        s = t.untyped_storage()
        if s.data_ptr() not in params:
            into = forward if state["phase"] == "forward" else recompute.setdefault(state["block"], {})
            into[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        logits = model(input_ids=x, attention_mask=torch.ones_like(x),
                       decoder_input_ids=model._shift_right(y), use_cache=False).logits
        loss = torch.nn.functional.cross_entropy(logits.float().view(-1, vocab), y.view(-1))
        state["phase"] = "backward"
        loss.backward()
    held = sum(forward.values()) + logits.untyped_storage().nbytes()
    return held + max((sum(r.values()) for r in recompute.values()), default=0)


@pytest.mark.parametrize("checkpointing", [False, True])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("preset, batch, li, lt", [("tiny", 4, 64, 16), ("mini", 2, 48, 24)])
def test_activation_estimate_matches_autograd(preset, batch, li, lt, precision, checkpointing):
    measured = measure_activations(preset, precision, batch, li, lt, checkpointing)
    parts = memory.activation_breakdown(preset, precision, batch, li, lt, checkpointing)
    # Like with like: the measurement sees saved tensors, not the fp32 loss gradient that backward
    # creates first (`loss_backward`), so that part is left out here. Tolerance 0.8x-1.25x,
    # tighter than a rough "within 3x" because the count follows the transformers MT5 code tensor
    # by tensor; what remains is the position bias alive during forward (counted, not saved) and
    # small saved tensors left out (rsqrt per position, int64 indices, masks).
    saved = sum(parts.values()) - parts["loss_backward"]
    assert 0.8 <= saved / measured <= 1.25, (saved, measured)
    # The whole estimate, transient included, against the held bytes: within a loose 0.3x-3x.
    assert 0.3 <= sum(parts.values()) / measured <= 3.0


def test_zero3_gathered_weights_are_bounded_by_the_model_as_the_estimate_counts():
    """launch.deepspeed_config sizes ZeRO-3's prefetch from the model: at most one largest module
    (memory.largest_layer_params, the estimate's working set) is gathered ahead of use."""
    from mt5study import config, launch
    from mt5study.paths import PARAMS

    params = config.load(PARAMS / "cpu" / "bench_memory.yaml")  # mt5-base, ZeRO-3
    zero = launch.deepspeed_config(params)["zero_optimization"]
    d = PRESETS["mt5-base"]["d_model"]
    assert zero["stage3_max_live_parameters"] == memory.largest_layer_params("mt5-base") == 250_112 * d
    assert zero["stage3_prefetch_bucket_size"] == int(0.9 * d * d)
    assert zero["stage3_param_persistence_threshold"] == 10 * d
    assert zero["stage3_max_reuse_distance"] == 0
    assert "stage3_max_live_parameters" not in launch.deepspeed_config(
        config.load(PARAMS / "cpu" / "bench_memory.yaml", {"run.zero_stage": 2}))["zero_optimization"]


# --- the shared embedding's two gradients (the steady-state term of the ZeRO-3 estimate) ------


def live_embedding_grads_at_second_use(preset: str) -> int:
    """How many full vocab x d_model gradients are alive when backward makes the second one.

    The encoder and the decoder both read `shared`; backward computes a dense gradient for each
    use. Every tensor of that shape that backward creates is tracked (weakly, by storage) through
    a TorchDispatchMode; lm_head's weight, of the same shape, is frozen so that only the
    embedding's gradients count.
    """
    import weakref

    from torch.utils._python_dispatch import TorchDispatchMode

    torch.manual_seed(0)
    model = build(preset)
    model.lm_head.weight.requires_grad_(False)
    v, d = PRESETS[preset]["vocab_size"], PRESETS[preset]["d_model"]
    x, y = torch.randint(2, v, (2, 16)), torch.randint(2, v, (2, 8))
    loss = model(input_ids=x, labels=y).loss
    weights = {p.untyped_storage().data_ptr() for p in model.parameters()}
    live: set[int] = set()
    at_creation: list[int] = []  # live count right after each embedding backward

    class Track(TorchDispatchMode):
        def __torch_dispatch__(self, func, types, args=(), kwargs=None):
            out = func(*args, **(kwargs or {}))
            if isinstance(out, torch.Tensor) and tuple(out.shape) == (v, d):
                key = out.untyped_storage().data_ptr()
                if key not in weights and key not in live:
                    live.add(key)
                    weakref.finalize(out, live.discard, key)
                if func is torch.ops.aten.embedding_dense_backward.default:
                    at_creation.append(len(live))
            return out

    with Track():
        loss.backward()
    assert len(at_creation) == 2, at_creation  # one gradient per use: encoder and decoder
    return at_creation[-1]


def test_shared_embedding_keeps_two_full_gradients_as_the_estimate_counts():
    """The estimate's ZeRO-3 gradient working set (one largest module) plus `embedding_second_grad`
    is exactly the full embedding gradients that autograd holds at once in backward."""
    live = live_embedding_grads_at_second_use("tiny")
    assert live == 2
    p = PRESETS["tiny"]
    assert memory.largest_layer_params("tiny") == p["vocab_size"] * p["d_model"]
    est = memory.estimate("tiny", 3, "fp32", 2, 1, 16, 8)
    zero3_grads = est["gradients"] - 4 * count_parameters("tiny") // 2  # the working set
    assert zero3_grads + est["embedding_second_grad"] == live * p["vocab_size"] * p["d_model"] * 4
    # in bf16 the gradients are 2 bytes; every stage counts the second gradient
    for stage in (0, 1, 2, 3):
        assert memory.estimate(XXL, stage, "bf16", 8, 1, 1024, 256)["embedding_second_grad"] == 2 * V_TIMES_D


def test_estimate_total_covers_the_steady_state_term():
    e = memory.estimate("mt5-base", 3, "fp32", 2, 1, 32, 8)
    assert e["total"] == sum(v for k, v in e.items() if k != "total")
    assert e["embedding_second_grad"] == 250_112 * 768 * 4
