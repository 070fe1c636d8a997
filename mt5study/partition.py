"""Building the model under ZeRO-3 without a whole copy per rank (DeepSpeed's `zero.Init`).

Inside `deepspeed.zero.Init` every submodule's parameters are cut into per-rank partitions as soon
as its constructor returns, so a rank never holds more than one module in full. transformers then
runs its weight initialisation on the empty local tensors, which draws nothing. `replay_init`
therefore draws the initial weights again, module by module in transformers' order (children
before parents), each module's parameters gathered in full with rank 0 as the writer: rank 0's
random stream advances exactly as in the non-partitioned construction, so both paths start from
the same weights for the same seed (tests/test_zero_init.py). Loading a checkpoint goes through
transformers' `from_pretrained`, which partitions and loads shard by shard when Accelerate's
`zero3_init_flag` has registered the ZeRO-3 config (`HfDeepSpeedConfig`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from mt5study import model as model_lib
from mt5study.config import TrainParams


def build(params: TrainParams, vocab_size: int, ds_config: dict[str, Any], partitioned: bool) -> torch.nn.Module:
    """The run's model: partitioned as it is created when `partitioned`, else whole on this rank.

    The partitioned path follows `model.build` step by step (construct, transformers' init,
    shared embeddings, the scheme's init passes, float32 head); tests/test_zero_init.py checks
    that both give the same weights.
    """
    m = params.model
    scheme = m.init
    if not partitioned:
        return model_lib.build(m.preset, vocab_size=vocab_size, dropout_rate=m.dropout_rate,
                               checkpoint=m.checkpoint, init=scheme)
    if m.checkpoint is not None:
        if not zero3_registered():
            raise RuntimeError("ZeRO-3 checkpoint loading needs the HfDeepSpeedConfig that Accelerate "
                               "registers with zero3_init_flag=True")
        # from_pretrained: zero.Init, then each shard's tensors copied into the partitions
        return model_lib.build(m.preset, vocab_size=vocab_size, dropout_rate=m.dropout_rate, checkpoint=m.checkpoint)
    import deepspeed
    from transformers import MT5ForConditionalGeneration

    with deepspeed.zero.Init(config_dict_or_path=ds_config):
        net = MT5ForConditionalGeneration(model_lib.config_for(m.preset, vocab_size, m.dropout_rate))
    # transformers' post_init ran on empty partitions: draw it again (it advances the random
    # stream that the scheme's base seed is then drawn from, as in the whole-model path).
    replay_init(net, [net._init_weights])
    model_lib.share_embeddings(net)
    replay_init(net, model_lib.init_passes(net, scheme), children=False)  # own weights only
    model_lib.fp32_head_(net)
    release_freed_memory()
    return net


def release_freed_memory() -> bool:
    """Hand the heap memory that the construction freed back to the OS (glibc's malloc_trim).

    Construction allocates each module whole, partitions it and frees it; the replay gathers every
    module in full and frees it again. glibc keeps freed blocks below its mmap threshold (which
    grows to 32 MiB once a large block is freed) in its heaps, so RSS stays up to ~1 GiB per rank
    above the live tensors for mt5-base (measured on CPU). Returns whether the call was made.
    """
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
    except OSError:
        libc = None
    if libc is None or not hasattr(libc, "malloc_trim"):  # not glibc: nothing to do
        return False
    libc.malloc_trim(0)
    return True


def zero3_registered() -> bool:
    """Whether transformers sees a ZeRO-3 config (from_pretrained will partition as it loads)."""
    from transformers.integrations import is_deepspeed_zero3_enabled

    return bool(is_deepspeed_zero3_enabled())


def replay_init(net: torch.nn.Module, passes: list[Callable[[torch.nn.Module], None]], children: bool = True) -> None:
    """Run each per-module init pass over `net` (post-order), every module's weights gathered in full.

    With `children`, the weights of the module's direct children are gathered with it
    (transformers' MT5 init writes q, k, v, o from the attention module, shared and lm_head from
    the top); passes that write only a module's own weights pass False. Rank 0 writes; on leaving
    the gather its values are partitioned out to every rank.
    """
    import deepspeed

    for init in passes:
        with torch.no_grad():
            for module in _post_order(net):
                params = list(module.parameters(recurse=False))
                for child in module.children() if children else ():
                    params += list(child.parameters(recurse=False))
                with deepspeed.zero.GatheredParameters(params, modifier_rank=0):
                    init(module)


def is_partitioned(p: torch.nn.Parameter) -> bool:
    """True for a ZeRO-3 parameter whose local tensor is only this rank's share (or nothing)."""
    return hasattr(p, "ds_numel") and p.data.numel() < p.ds_numel


def _post_order(module: torch.nn.Module) -> Iterator[torch.nn.Module]:
    for child in module.children():
        yield from _post_order(child)
    yield module
