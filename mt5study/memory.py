"""Bytes per GPU of mT5 training under DeepSpeed ZeRO: model states, activations, fit tables.

Model states follow the ZeRO paper (Rajbhandari et al. 2020, sec. 3 and 5): mixed-precision Adam
keeps 2 bytes of 16-bit parameters, 2 bytes of 16-bit gradients and 12 bytes of fp32 master
weights, momentum and variance per parameter (16 bytes in all); pure fp32 keeps 4 + 4 + 8, and
under ZeRO >= 1 4 + 4 + 12 (DeepSpeed keeps its fp32 master copy in fp32 too). ZeRO-1
partitions the optimizer states over the data-parallel GPUs, ZeRO-2 also the gradients, ZeRO-3
also the parameters. ZeRO-3 still materialises one module's full parameters (all-gather) and full
gradients (before reduce-scatter) at a time; that working set is counted as the largest module,
the convention of DeepSpeed's own estimator (`deepspeed.runtime.zero.stage3`). Offload follows
ZeRO-Offload (Ren et al. 2021): the optimizer states and the fp32 gradient partition that the CPU
Adam step reads move to host memory, and with "optimizer+params" (ZeRO-3 only) the 16-bit
parameter partition too. The gradient reduce bucket is counted (`buffers`, as configured by
`reduce_bucket_elements`). ZeRO-3's prefetch is sized from the model by `launch.deepspeed_config`
(stage3_max_live_parameters = the largest module, bucket 0.9 d_model^2), so weights gathered
ahead of use stay within about one largest module more. Not modelled: that prefetch, other
communication buckets (allgather_bucket_size), the optimizer's per-sub-group temporaries, the CUDA
context and allocator fragmentation; `fits_table` leaves headroom for them. The second full
gradient of the shared input embedding, alive at the end of backward, is counted
(`embedding_second_grad_bytes`): with it the total is the steady state, from step 2 on, not step 1
(AdamW creates its moments in the first optimizer step, after that step's backward; from step 2
on they are held during backward). Measured on CPU (host RSS per rank, 2 ranks, fp32, ZeRO-3,
scripts/bench_memory.py, 5 steps, cores and memory shared with other work): mt5-small peaks
4.25 / 4.35 GiB in step 1, then 5.11 / 5.15, 5.16 / 5.21, 5.19 / 5.27, 5.20 / 5.28 GiB by steps 2-5
(+0.02 GiB in the last step: glibc's heap), 1.10-1.13x of this estimate + the runtime baseline
(4.28 + 0.40 GiB; 1.26x without the term); mt5-base (estimate 7.65 GiB +
baseline 0.39 GiB = 8.05) peaks 7.68 / 7.73 GiB in step 1, then 9.49 / 9.18, 9.64 / 9.33,
9.73 / 9.40, 9.75 / 9.52 GiB by steps 2-5 (ratio 0.96, 1.18, 1.20, 1.21, 1.21; +0.02 GiB on the
larger rank in the last step). The rest is host allocator retention that the model leaves out.

Activations are counted tensor by tensor for the Hugging Face MT5 implementation (in the spirit of
Korthikanti et al. 2022, "Reducing Activation Recomputation", sec. 4.1, adapted from GPT to T5's
encoder-decoder, RMS norm, gated GELU, relative position bias and an untied 250k-token head).
They are estimates: see `activation_breakdown` for what is counted and where it is known to be
loose. Nothing here allocates a model; all sizes are in bytes, 1 GiB = 2**30 bytes.
"""

from __future__ import annotations

import itertools
from collections.abc import Iterable

from mt5study.model import PRESETS, count_parameters

GIB = 2**30  # bytes
PRECISIONS = {"fp32": 4, "bf16": 2, "fp16": 2}  # bytes per element of the compute dtype
OFFLOADS = (None, "optimizer", "optimizer+params")
FP32 = 4  # bytes
# Per-parameter bytes of (parameters, gradients, optimizer states) for Adam (ZeRO paper, sec. 3):
# mixed precision: 16-bit params and grads, fp32 master copy + momentum + variance;
# fp32: params and grads in fp32, momentum + variance.
STATE_BYTES = {"fp32": (4, 4, 8), "bf16": (2, 2, 12), "fp16": (2, 2, 12)}
# Under ZeRO >= 1 DeepSpeed keeps a separate fp32 master partition in fp32 training too, so its
# optimizer states are 12 bytes per parameter (master + momentum + variance) in every precision:
# ZeRO-1/2 clone it unconditionally (deepspeed/runtime/zero/stage_1_and_2.py, DeepSpeed 0.19:
# `weights_partition = ...detach().clone().to(..., dtype=self.master_weights_and_grads_dtype)`);
# ZeRO-3's `_create_fp32_partitions` (stage3.py) would reuse an fp32 partition only when
# `tensor.device == self.device`, but self.device is a string ('cpu', 'cuda:0') and a
# torch.device never equals a string in torch 2.13, so it takes `converted.clone().detach()`.
# Measured with mt5-base on 2 CPU ranks: +1.08 GiB per rank in `_create_fp32_partitions`.
ZERO_FP32_OPTIMIZER_BYTES = 12
# Elements saved per d_ff-wide position by the gated feed-forward: wi_0 output (GELU input), three
# intermediates of transformers' `NewGELUActivation` (written out in Python ops: the tanh output,
# 0.5*x and 1+tanh are saved by autograd), the GELU output, wi_1 output, and their product (the
# input of wo). A fused GELU (`gelu_pytorch_tanh`) would save 4 instead of 7.
FFN_SAVED = 7


def _check(preset: str, precision: str | None = None, zero_stage: int | None = None,
           n_gpus: int | None = None, offload: str | None = None) -> None:
    if preset not in PRESETS:
        raise ValueError(f"unknown model preset {preset!r}; choose one of {sorted(PRESETS)}")
    if precision is not None and precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {sorted(PRECISIONS)}")
    if zero_stage is not None and (isinstance(zero_stage, bool) or zero_stage not in (0, 1, 2, 3)):
        raise ValueError(f"zero_stage must be 0, 1, 2 or 3, got {zero_stage!r}")
    if n_gpus is not None and (isinstance(n_gpus, bool) or not isinstance(n_gpus, int) or n_gpus < 1):
        raise ValueError(f"n_gpus must be an integer >= 1, got {n_gpus!r}")
    if offload not in OFFLOADS:
        raise ValueError(f"unknown offload {offload!r}; choose one of {OFFLOADS}")
    if offload is not None and zero_stage == 0:
        raise ValueError(f"offload={offload!r} needs zero_stage >= 1, got zero_stage=0")
    if offload == "optimizer+params" and zero_stage != 3:
        raise ValueError(f"offload={offload!r} needs zero_stage 3, got zero_stage={zero_stage!r}")


def _positive(**values: int) -> None:
    for name, v in values.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ValueError(f"{name} must be an integer >= 1, got {v!r}")


def largest_layer_params(preset: str) -> int:
    """Parameters of the largest single module (own parameters only, as DeepSpeed counts them)."""
    _check(preset)
    p = PRESETS[preset]
    d, f, a, v = p["d_model"], p["d_ff"], p["num_heads"] * p["d_kv"], p["vocab_size"]
    # Modules with their own weights: the shared embedding and the untied lm_head (v x d), the
    # feed-forward linears (d x f), the attention projections (d x a), norms (d), position
    # buckets (32 x heads). The vocabulary matrix wins for every preset.
    return max(v * d, d * f, d * a)


def model_state_bytes(preset: str, zero_stage: int, precision: str, n_gpus: int,
                      offload: str | None = None) -> dict[str, int]:
    """Bytes per GPU of parameters, gradients and optimizer states, plus host bytes (`cpu`)."""
    for name, v in (("zero_stage", zero_stage), ("precision", precision), ("n_gpus", n_gpus)):
        if v is None:  # _check lets None through (optional there); here each is needed
            raise ValueError(f"{name} is required, got None")
    _check(preset, precision, zero_stage, n_gpus, offload)
    n_params = count_parameters(preset)
    b_param, b_grad, b_opt = STATE_BYTES[precision]
    if zero_stage >= 1:
        b_opt = ZERO_FP32_OPTIMIZER_BYTES  # DeepSpeed's own fp32 master copy (see above)
    # A quantity partitioned over the data-parallel group costs 1/n_gpus of its size per GPU.
    share = {True: 1.0 / n_gpus, False: 1.0}
    params = b_param * n_params * share[zero_stage >= 3]
    grads = b_grad * n_params * share[zero_stage >= 2]
    opt = b_opt * n_params * share[zero_stage >= 1]
    cpu = 0.0
    if offload is not None:
        # ZeRO-Offload: optimizer states and an fp32 copy of this rank's gradient partition live
        # on the host; the GPU keeps only gradient buckets in flight (not modelled).
        cpu += opt + FP32 * n_params * share[zero_stage >= 1]
        opt, grads = 0.0, 0.0
    if offload == "optimizer+params":
        cpu += params
        params = 0.0
    if zero_stage == 3:
        # Working set: one module's parameters gathered in full and its full gradient before the
        # reduce-scatter, in the compute dtype (DeepSpeed's estimator: 4 bytes x largest layer).
        work = largest_layer_params(preset)
        params += b_param * work
        grads += b_grad * work
    return {"parameters": round(params), "gradients": round(grads),
            "optimizer_states": round(opt), "cpu": round(cpu)}


def reduce_bucket_elements(preset: str) -> int:
    """Elements of ZeRO's gradient reduce bucket as mt5study configures it (launch.deepspeed_config).

    Accelerate's "auto" sizes it d_model**2; the floor of 2**22 elements keeps the small presets
    at one or two reductions per step over gloo. DeepSpeed's own default (5e8 elements) would
    allocate a 1.86 GiB fp32 buffer per rank up front (measured with mt5-base on CPU).
    """
    return max(PRESETS[preset]["d_model"] ** 2, 2**22)


def activation_breakdown(preset: str, precision: str, micro_batch: int, input_length: int,
                         target_length: int, activation_checkpointing: bool = False) -> dict[str, int]:
    """Activation bytes per GPU by part (encoder, decoder, head, ...) for one micro-batch.

    Follows transformers 5's MT5 (SDPA attention, non-reentrant block checkpointing) with
    mt5study's float32 output layer (`model.Float32Linear`). Counted per example, then times
    micro_batch, except `head_weight`; p = bytes of the compute dtype. Per layer:
    - RMS norm: its input, normalised output and output (the input of the next linear), 3p per
      d_model element; in 16-bit, MT5LayerNorm also keeps an fp32 copy of its input (+4).
    - self-attention: the learned position bias is SDPA's attn_mask and needs a gradient, which
      sends SDPA to its math path. On CPU that path computes 16-bit inputs in fp32 and keeps Q, K,
      V (3 x heads*d_kv, fp32) and the softmax probabilities (heads x L_q x L_k, fp32), plus the
      attention output (input of o, p).
    - cross-attention (decoder): its position bias is zeros that need no gradient, so SDPA's fused
      kernel keeps Q, its output (p), K and V of the encoder output (each decoder layer has its own
      projections) and the log-sum-exp (heads x L_t, fp32). Under checkpointing transformers makes
      those zeros require a gradient: the math path again (fp32 Q, K, V, probabilities).
    - gated feed-forward: FFN_SAVED tensors d_ff wide per position.
    The residual stream is the norm's input, so residual adds add nothing. Once per stack: the
    relative position bias, heads x L_q x L_k, counted per example: with padding, SDPA's mask is
    `torch.where(mask, bias, -inf)`, batch x heads x L_q x L_k (without padding it is shared by
    the batch and this over-counts). Head: the fp32 logits and the fp32 log-probabilities kept by
    the loss, L_t x vocab x 8 bytes, and in 16-bit the fp32 copy of the head's input; as
    `head_weight` (per micro-batch, not per example), the fp32 copy of a 16-bit lm_head weight
    that `Float32Linear` saves for backward (vocab x d_model x 4; 3.8 GiB for mt5-xxl); as
    `loss_backward`, the fp32 gradient of the log-probabilities, which backward creates first,
    while everything above is still held: that moment is the activation peak.
    With activation checkpointing only each block's input (d_model per position) is kept, plus one
    block recomputed in backward; the head and norms outside the blocks are not checkpointed.
    (The loss gradient and a block's recompute are not alive at the same moment; adding both
    errs on the safe side.) Checked against the tensors autograd saves for `tiny` and `mini` on
    CPU (tests/test_memory.py); at mT5 sizes it has not been measured on a GPU.

    Known to be loose: allocator fragmentation and short-lived temporaries inside an op are not
    counted; no dropout (mT5 pretrains without; dropout adds a 1-byte mask per element); on a GPU,
    SDPA's memory-efficient kernel keeps no L x L probabilities but keeps the bias per layer,
    and computes 16-bit inputs in 16-bit, so this CPU-shaped count is high there.
    """
    _check(preset, precision)
    _positive(micro_batch=micro_batch, input_length=input_length, target_length=target_length)
    if not isinstance(activation_checkpointing, bool):  # "no" is truthy: it would count as checkpointed
        raise ValueError(f"activation_checkpointing must be True or False, got {activation_checkpointing!r}")
    cfg = PRESETS[preset]
    d, f, n, h = cfg["d_model"], cfg["d_ff"], cfg["num_layers"], cfg["num_heads"]
    a, v = h * cfg["d_kv"], cfg["vocab_size"]
    li, lt = input_length, target_length
    p = PRECISIONS[precision]
    mixed = p < FP32
    norm_b = 3 * p + (FP32 if mixed else 0)  # bytes per d_model element of one RMS norm

    def self_attention(length: int) -> int:  # SDPA math path: fp32 Q, K, V and probabilities
        return length * d * norm_b + 3 * a * length * FP32 + h * length * length * FP32 + a * length * p

    def cross_attention(math_path: bool) -> int:
        if math_path:
            kept = 2 * a * li * FP32 + a * lt * FP32 + h * lt * li * FP32
        else:  # fused kernel: Q, output, K, V in the compute dtype, fp32 log-sum-exp
            kept = 2 * a * li * p + 2 * a * lt * p + h * lt * FP32
        return lt * d * norm_b + kept + a * lt * p  # + the input of o

    def ffn(length: int) -> int:
        return length * d * norm_b + FFN_SAVED * f * length * p

    enc_layer = self_attention(li) + ffn(li)
    dec_layer = self_attention(lt) + cross_attention(activation_checkpointing) + ffn(lt)
    position_bias = h * (li * li + lt * lt + lt * li) * p  # one per stack, see above
    final_norms = (li + lt) * d * norm_b
    # fp32 logits and log-probs; in 16-bit the head upcasts its input (L_t x d_model x 4).
    head = lt * v * 2 * FP32 + (lt * d * FP32 if mixed else 0)
    head_weight = v * d * FP32 if mixed else 0  # Float32Linear's fp32 copy of the weight
    loss_backward = lt * v * FP32  # fp32 gradient of the log-probs, first thing backward makes
    if activation_checkpointing:
        encoder, decoder = n * li * d * p, n * lt * d * p  # each block's input only
        recompute = max(enc_layer, dec_layer)  # backward recomputes one block at a time
    else:
        encoder, decoder, recompute = n * enc_layer, n * dec_layer, 0
    parts = {"encoder": encoder, "decoder": decoder, "recompute": recompute,
             "position_bias": position_bias, "final_norms": final_norms, "head": head,
             "loss_backward": loss_backward}
    out = {k: int(val) * micro_batch for k, val in parts.items()}
    out["head_weight"] = head_weight
    return out


def activation_bytes(preset: str, precision: str, micro_batch: int, input_length: int,
                     target_length: int, activation_checkpointing: bool = False) -> int:
    """Activation bytes per GPU for one micro-batch (the sum of `activation_breakdown`)."""
    return sum(activation_breakdown(preset, precision, micro_batch, input_length, target_length,
                                    activation_checkpointing).values())


def embedding_second_grad_bytes(preset: str, precision: str) -> int:
    """Bytes of the second full gradient of mT5's shared input embedding, alive at the end of backward.

    The encoder and the decoder read the one `shared` embedding (vocab x d_model, the largest
    module). Backward computes a dense gradient for each use, decoder first, and autograd keeps
    the first in the leaf's input buffer until the encoder's arrives and sums them: two full
    vocab x d_model gradients at once, where the working set of `model_state_bytes` counts one.
    Under ZeRO-3 the gathered weight stays too: DeepSpeed releases a module's weights after its
    backward through a hook on its inputs' gradients, and token ids have none, so `shared` stays
    gathered from the decoder's embedding backward to the optimizer step (counted in the working
    set). Measured on CPU (host RSS per rank, 2 ranks, ZeRO-3, fp32, scripts/bench_memory.py with
    a sampler per module phase): mt5-small rises 0.98 GiB over the steady state while the encoder
    blocks run backward (gathered weight + decoder-use gradient, 2 x 0.48 GiB) and 1.46 GiB at the
    encoder's embedding backward (+ its gradient): 3 x vocab x d_model x 4 bytes, every step from
    step 2 on. Step 1 peaks lower only because AdamW creates its moments in the first optimizer
    step, after that backward; from step 2 on they are held during backward too.
    """
    _check(preset, precision)
    cfg = PRESETS[preset]
    return cfg["vocab_size"] * cfg["d_model"] * STATE_BYTES[precision][1]


def estimate(preset: str, zero_stage: int, precision: str, n_gpus: int, micro_batch: int,
             input_length: int, target_length: int, offload: str | None = None,
             activation_checkpointing: bool = False) -> dict[str, int]:
    """Bytes per GPU: parameters, gradients, optimizer_states, activations, buffers,
    embedding_second_grad, total (+ cpu if offload).

    The total is the steady-state peak, from step 2 on: the end of backward, with the optimizer's
    moments, the gathered shared embedding and both of its gradients alive (see
    `embedding_second_grad_bytes`); step 1 peaks lower (no moments yet during its backward)."""
    _check(preset, precision, zero_stage, n_gpus, offload)
    out = model_state_bytes(preset, zero_stage, precision, n_gpus, offload)
    cpu = out.pop("cpu")
    out["activations"] = activation_bytes(preset, precision, micro_batch, input_length,
                                          target_length, activation_checkpointing)
    # ZeRO >= 1 with contiguous gradients allocates its reduce bucket once, in the gradient dtype.
    out["buffers"] = reduce_bucket_elements(preset) * STATE_BYTES[precision][1] if zero_stage >= 1 else 0
    out["embedding_second_grad"] = embedding_second_grad_bytes(preset, precision)
    out["total"] = sum(out.values())
    if offload is not None:
        out["cpu"] = cpu  # host bytes per GPU rank (times GPUs per node for a node's need)
    return out


def deepspeed_estimate(preset: str, zero_stage: int, n_gpus: int, gpus_per_node: int | None = None,
                       offload: str | None = None, zero_init: bool = True,
                       additional_buffer_factor: float = 1.5) -> dict[str, int]:
    """DeepSpeed's own ZeRO-2/3 model-state estimate: bytes per GPU (`gpu`) and host bytes (`cpu`).

    `cpu` is DeepSpeed's host figure as it computes it: per node for ZeRO-3, and for ZeRO-2 a
    whole-job figure (its `max(4 x total GPUs, 16)` bytes per parameter), both times its buffer
    factor.

    Calls `estimate_zero3_model_states_mem_needs` / `estimate_zero2_model_states_mem_needs`, the
    functions that the printing `..._all_cold` helpers call, with parameter counts from the
    architecture, so no model is allocated. DeepSpeed assumes 16-bit training. Both count the
    same ZeRO-3 working set as `model_state_bytes` (4 bytes x largest layer), but DeepSpeed adds
    an fp32 gradient partition (the 16-bit gradient is upcast before the optimizer step):
    ZeRO-3, 18/n bytes per parameter where `model_state_bytes` counts 16/n (2 params + 4 fp32
    grads + 12 optimizer); ZeRO-2, 2 + 18/n where it counts 2 + 14/n (the fp32 gradients beside
    the 16-bit ones). With offload both agree exactly on the GPU.
    """
    _check(preset, None, zero_stage, n_gpus, offload)
    if zero_stage not in (2, 3):
        raise ValueError(f"DeepSpeed has estimators for zero_stage 2 and 3 only, got {zero_stage}")
    per_node = gpus_per_node if gpus_per_node is not None else min(n_gpus, 8)
    if per_node < 1 or n_gpus % per_node:
        raise ValueError(f"n_gpus={n_gpus} is not a whole number of nodes of {per_node} GPUs")
    total, largest = count_parameters(preset), largest_layer_params(preset)
    nodes = n_gpus // per_node
    if zero_stage == 3:
        from deepspeed.runtime.zero.stage3 import estimate_zero3_model_states_mem_needs

        cpu, gpu, _ = estimate_zero3_model_states_mem_needs(
            total_params=total, largest_layer_params=largest, num_gpus_per_node=per_node,
            num_nodes=nodes, cpu_offload=offload is not None,
            cpu_offload_params=offload == "optimizer+params", zero_init=zero_init,
            additional_buffer_factor=additional_buffer_factor)
    else:
        from deepspeed.runtime.zero.stage_1_and_2 import estimate_zero2_model_states_mem_needs

        cpu, gpu = estimate_zero2_model_states_mem_needs(
            total_params=total, num_gpus_per_node=per_node, num_nodes=nodes,
            cpu_offload=offload is not None, additional_buffer_factor=additional_buffer_factor)
    return {"gpu": int(gpu), "cpu": int(cpu), "total_params": total, "largest_layer_params": largest}


def fits_table(preset: str = "mt5-xxl", gpu_gib: Iterable[float] = (40, 80),
               n_gpus: Iterable[int] = (1, 2, 4, 8, 16, 32, 64),
               precisions: Iterable[str] = ("bf16", "fp16", "fp32"),
               zero_stages: Iterable[int] = (0, 1, 2, 3), offloads: Iterable[str | None] = OFFLOADS,
               micro_batches: Iterable[int] = (1, 2, 4, 8, 16, 32),
               activation_checkpointing: Iterable[bool] = (False, True),
               input_length: int = 1024, target_length: int = 256, usable_fraction: float = 0.9):
    """A pandas DataFrame, one row per setting, with GiB per GPU and a `fits_<N>gib` column per size.

    A setting fits when its total is at most `usable_fraction` of the GPU: the rest is left for
    the CUDA context, NCCL and allocator fragmentation, none of which is modelled.
    """
    import pandas as pd

    if not 0 < usable_fraction <= 1:
        raise ValueError(f"usable_fraction must be in (0, 1], got {usable_fraction!r}")
    sizes = list(gpu_gib)
    for g in sizes:
        if isinstance(g, bool) or not isinstance(g, (int, float)) or not 0 < g < float("inf"):
            raise ValueError(f"gpu_gib must hold GPU memory sizes in GiB > 0, got {g!r}")
    rows = []
    for prec, stage, off, n, mb, ckpt in itertools.product(
            precisions, zero_stages, offloads, n_gpus, micro_batches, activation_checkpointing):
        if (off is not None and stage == 0) or (off == "optimizer+params" and stage != 3):
            continue  # combinations DeepSpeed does not offer
        est = estimate(preset, stage, prec, n, mb, input_length, target_length, off, ckpt)
        row = {"preset": preset, "precision": prec, "zero_stage": stage, "offload": off or "none",
               "n_gpus": n, "micro_batch": mb, "activation_checkpointing": ckpt}
        row.update({f"{k}_gib": est[k] / GIB for k in
                    ("parameters", "gradients", "optimizer_states", "activations", "total")})
        row["cpu_gib"] = est.get("cpu", 0) / GIB
        row.update({f"fits_{g:g}gib": est["total"] <= usable_fraction * g * GIB for g in sizes})
        rows.append(row)
    return pd.DataFrame(rows)
