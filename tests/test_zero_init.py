"""ZeRO-3 construction: parameters partitioned as they are created, with the same initial weights as
the whole-model path (mt5study.partition). Two CPU processes under torchrun, gloo."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest

from mt5study import launch

pytestmark = pytest.mark.slow

PROBE = textwrap.dedent('''
    import json, sys
    import deepspeed, torch
    from accelerate.utils import set_seed
    from mt5study import config, launch, model as model_lib, partition

    deepspeed.init_distributed(dist_backend="gloo")
    params = config.load(sys.argv[1], {"run.zero_stage": 3})
    ds = launch.deepspeed_config(params)
    set_seed(params.run.seed)  # as train._build does before construction
    net = partition.build(params, 512, ds, partitioned=True)
    rank = torch.distributed.get_rank()
    named = list(net.named_parameters())
    result = {
        "all_partitioned": all(partition.is_partitioned(p) for _, p in named),
        "local_numel": sum(p.data.numel() for _, p in named),
        "shard_numel": sum(p.ds_tensor.numel() for _, p in named),
        "full_numel": sum(p.ds_numel for _, p in named),
    }
    gathered = {}
    for name, p in named:
        with deepspeed.zero.GatheredParameters([p]):
            gathered[name] = p.data.clone()
    shards = [None, None]
    torch.distributed.all_gather_object(shards, result)
    if rank == 0:
        set_seed(params.run.seed)
        ref = dict(model_lib.build(params.model.preset, vocab_size=512,
                                   init=params.model.init).named_parameters())
        out = {"ranks": shards, "names_equal": sorted(ref) == sorted(gathered),
               "max_abs_diff": max((gathered[n] - ref[n]).abs().max().item() for n in ref),
               "head_std": gathered["lm_head.weight"].std().item()}
        json.dump(out, open(sys.argv[2], "w"))
''')


@pytest.fixture(scope="module")
def probe(tmp_path_factory, tiny_params):
    tmp = tmp_path_factory.mktemp("zero_init")
    script, out = tmp / "probe.py", tmp / "probe.json"
    script.write_text(PROBE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(launch.free_port()), str(script), str(tiny_params), str(out)]
    r = subprocess.run(cmd, capture_output=True, text=True, env=launch.launch_env(2), timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(out.read_text())


def test_parameters_are_partitioned_at_construction(probe):
    for rank in probe["ranks"]:
        assert rank["all_partitioned"]
        assert rank["local_numel"] == 0  # nothing but this rank's shard is held
        # each rank keeps about half (partitions are padded to a multiple of the world size)
        assert rank["full_numel"] / 2 <= rank["shard_numel"] <= rank["full_numel"] / 2 + 2 * 64


def test_partitioned_construction_gives_the_whole_model_weights(probe):
    assert probe["names_equal"]
    assert probe["max_abs_diff"] == 0.0  # the same draws, not merely close ones
    assert probe["head_std"] > 0  # the replayed init wrote real values
