"""The scaling ladder: one shape rule, mT5's family, >= 30x in non-embedding parameters."""

from __future__ import annotations

import pytest
import torch

from mt5study import ladder
from mt5study.config import PRESETS as CONFIG_PRESETS
from mt5study.model import PRESETS, build, count_parameters
from mt5study.scaling.budget import non_embedding_parameters


def test_every_rung_follows_the_rule_and_is_a_preset():
    assert len(ladder.LADDER) >= 4
    for name, dims in ladder.LADDER.items():
        layers = dims["num_layers"]
        assert dims["d_model"] == 32 * layers  # half mt5-small's 512/8 and mt5-base's 768/12
        assert dims["d_ff"] * 2 == 5 * dims["d_model"]  # mt5-xl 5120/2048, mt5-xxl 10240/4096
        assert dims["num_heads"] * dims["d_kv"] == dims["d_model"] and dims["d_kv"] == 16 and dims["num_heads"] >= 2
        assert dims["vocab_size"] == 8_000  # the ETL's vocabulary (params/cpu/etl.yaml)
        assert PRESETS[name] == dims and name in CONFIG_PRESETS


def test_the_mt5_sizes_obey_the_ratios_the_rule_borrows():
    assert PRESETS["mt5-small"]["d_model"] / PRESETS["mt5-small"]["num_layers"] == 64
    assert PRESETS["mt5-base"]["d_model"] / PRESETS["mt5-base"]["num_layers"] == 64
    for big in ("mt5-xl", "mt5-xxl"):
        assert PRESETS[big]["d_ff"] / PRESETS[big]["d_model"] == 2.5


def test_span_in_non_embedding_parameters():
    counts = [non_embedding_parameters(n) for n in ladder.LADDER]
    assert counts == sorted(counts)
    assert counts[-1] / counts[0] >= 30


def test_etl_vocabulary_matches_the_etl_params():
    import yaml

    from mt5study.paths import PARAMS

    etl = yaml.safe_load((PARAMS / "cpu" / "etl.yaml").read_text())
    assert ladder.ETL_VOCAB in {v for v in _values(etl) if isinstance(v, int)}


def _values(doc):
    if isinstance(doc, dict):
        for v in doc.values():
            yield from _values(v)
    elif isinstance(doc, list):
        for v in doc:
            yield from _values(v)
    else:
        yield doc


@pytest.mark.parametrize("name", ["ladder-1", "ladder-2"])
def test_built_rung_is_mt5_family_and_counts_match(name):
    net = build(name)
    assert sum(p.numel() for p in net.parameters()) == count_parameters(name)
    assert net.config.feed_forward_proj == "gated-gelu" and net.config.is_gated_act
    assert net.lm_head.weight is not net.shared.weight  # untied output layer
    assert net.encoder.block[0].layer[0].SelfAttention.has_relative_attention_bias
    loss = net(input_ids=torch.randint(2, 8000, (2, 16)), labels=torch.randint(2, 8000, (2, 4))).loss
    assert abs(loss.item() / torch.log(torch.tensor(8000.0)).item() - 1) < 0.1  # T5X init: near ln V


def test_bad_rung():
    with pytest.raises(ValueError, match="layers"):
        ladder.rung(0)
