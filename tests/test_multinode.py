"""Two nodes on this machine: machine ranks on loopback under accelerate's standard multi-node
launcher (`mt5study launch` with run.nodes: 2), and the refusals of an allocation that does not
match the params. The same run under the local Slurm with two node entries is in
tests/test_slurm_cluster.py."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mt5study import config, launch, records
from mt5study.paths import PARAMS

TINY = PARAMS / "cpu" / "tiny.yaml"
TWO_NODES = {"run.nodes": 2, "run.processes_per_node": 1}  # world size 2, as tiny.yaml's 1 x 2
# What each rank of a probe launch reports: torchrun's own variables, then a gloo all_reduce.
PROBE = """
import json, os, sys
import torch, torch.distributed as dist
dist.init_process_group("gloo")
t = torch.tensor([float(dist.get_rank())]); dist.all_reduce(t)
keys = ("RANK", "LOCAL_RANK", "GROUP_RANK", "WORLD_SIZE", "LOCAL_WORLD_SIZE", "MASTER_ADDR", "OMP_NUM_THREADS")
row = {k: os.environ.get(k) for k in keys}; row["sum_of_ranks"] = t.item()
open(os.path.join(sys.argv[1], f"rank{dist.get_rank()}.json"), "w").write(json.dumps(row))
dist.destroy_process_group()
"""


def _losses(out: Path) -> list[float]:
    return [row["loss"] for row in records.read_metrics(out / "metrics.jsonl")]


def test_two_nodes_here_run_every_machine_rank_on_loopback(tmp_path):
    params = config.load(TINY, TWO_NODES)
    cmd = launch.accelerate_command(params, TINY, tmp_path / "run")
    threads = os.environ.get("OMP_NUM_THREADS") or str(max(1, (os.cpu_count() or 1) // 2))
    assert cmd[1:8] == ["-m", "mt5study.launch", "machines", "2", "--omp-threads", threads, "--"]
    per_machine = cmd[8:]

    def flag(name: str) -> str:
        return per_machine[per_machine.index(name) + 1]

    assert (flag("--num_machines"), flag("--num_processes"), flag("--machine_rank")) == ("2", "2", launch.MACHINE_RANK_SLOT)
    assert flag("--main_process_ip") == "127.0.0.1" and flag("--deepspeed_multinode_launcher") == "standard"
    # The real launchers, a probe in place of the trainer: two machines of one rank each meet.
    probe = tmp_path / "probe.py"
    probe.write_text(PROBE)
    at = per_machine.index("mt5study.cli") - 1  # the launcher's options end at "-m mt5study.cli train ..."
    argv = per_machine[:at] + [str(probe), str(tmp_path)]  # the same launchers (DeepSpeed's env), a probe
    rc = launch.run_machines(2, argv, env=launch.launch_env(1), omp_threads=int(threads))
    rows = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert rc == 0
    assert [(r["RANK"], r["GROUP_RANK"], r["LOCAL_RANK"], r["WORLD_SIZE"], r["LOCAL_WORLD_SIZE"]) for r in rows] == [
        ("0", "0", "0", "2", "1"), ("1", "1", "0", "2", "1")]
    assert {r["MASTER_ADDR"] for r in rows} == {"127.0.0.1"} and {r["sum_of_ranks"] for r in rows} == {1.0}
    assert {r["OMP_NUM_THREADS"] for r in rows} == {threads}


def test_a_failed_machine_stops_the_others(tmp_path):
    # Machine 1 fails at once; machine 0 would wait for it (a rendezvous) far longer than this test.
    script = "import sys, time; r = int(sys.argv[1]); sys.exit(7) if r else time.sleep(120)"
    t0 = time.monotonic()
    rc = launch.run_machines(2, [sys.executable, "-c", script, launch.MACHINE_RANK_SLOT])
    assert rc == 7 and time.monotonic() - t0 < 60
    with pytest.raises(ValueError, match="MACHINE_RANK"):
        launch.run_machines(2, [sys.executable, "-c", "pass"])


def test_machines_command_line(tmp_path):
    # What local_machines_command runs: `python -m mt5study.launch machines N --omp-threads K -- CMD`.
    write = "import os, sys; open(sys.argv[1] + sys.argv[2], 'w').write(os.environ['OMP_NUM_THREADS'])"
    cmd = [sys.executable, "-m", "mt5study.launch", "machines", "3", "--omp-threads", "5", "--",
           sys.executable, "-c", write, str(tmp_path / "m"), launch.MACHINE_RANK_SLOT]
    assert subprocess.run(cmd, timeout=120).returncode == 0
    assert {p.name: p.read_text() for p in tmp_path.glob("m*")} == {"m0": "5", "m1": "5", "m2": "5"}


def test_launch_dry_run_prints_the_machines_command(tmp_path):
    proc = subprocess.run([sys.executable, "-m", "mt5study.cli", "launch", "--params", str(TINY), "--out",
                           str(tmp_path / "run"), "--set", "run.nodes=2", "--set", "run.processes_per_node=1",
                           "--dry-run"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "-m mt5study.launch machines 2 --omp-threads " in proc.stdout and "--machine_rank @MACHINE_RANK@" in proc.stdout
    assert not (tmp_path / "run").exists()
    # Inside a real 2-node allocation the machine ranks belong on their nodes: refused, nothing written.
    env = {**os.environ, "SLURM_JOB_ID": "77", "SLURM_NNODES": "2", "SLURM_JOB_NODELIST": "gpu[1-2]"}
    proc = subprocess.run([sys.executable, "-m", "mt5study.cli", "launch", "--params", str(TINY), "--out",
                           str(tmp_path / "run"), "--set", "run.nodes=2", "--set", "run.processes_per_node=1"],
                          env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "2-node Slurm allocation (SLURM_JOB_NODELIST=gpu[1-2])" in proc.stderr, proc.stderr
    assert "mt5study slurm train" in proc.stderr and not (tmp_path / "run").exists()


@pytest.mark.slow
def test_two_nodes_give_the_one_node_loss_curve(tmp_path):
    """tiny.yaml (ZeRO-3, fp32): 1 node x 2 processes, then 2 nodes x 1 process, same world size."""
    one = launch.run(TINY, tmp_path / "one_node")
    two = launch.run(TINY, tmp_path / "two_nodes", overrides=TWO_NODES)
    assert one["status"] == two["status"] == "completed" and one["world_size"] == two["world_size"] == 2
    a, b = _losses(tmp_path / "one_node"), _losses(tmp_path / "two_nodes")
    diff = max(abs(x - y) for x, y in zip(a, b))
    print(f"\n1x2 vs 2x1 loss curves over {len(a)} steps: max |diff| = {diff:.3g}")
    assert len(a) == len(b) == config.load(TINY).run.steps
    # Same ranks, same data per rank, same gloo reductions: equal to float32 rounding (measured 0.0).
    assert diff <= 1e-6, (a, b)
    assert abs(one["final_eval_loss"] - two["final_eval_loss"]) <= 1e-6


def _two_node_params(tmp_path: Path, slurm_nodes: int = 2) -> Path:
    doc = config.read_yaml(TINY)
    doc["run"].update(nodes=2, processes_per_node=1)
    doc["slurm"] = {"nodes": slurm_nodes, "cpus_per_task": 1, "partition": "multi", "time": "00:10:00"}
    path = tmp_path / "tiny_2nodes.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


@pytest.mark.parametrize("nodelist, nnodes, message", [
    ("mt5n[1-3]", "3", r"run.nodes=2 but the job has 3 nodes: the job's node list SLURM_JOB_NODELIST=mt5n\[1-3\]"),
    ("mt5n1", "1", r"run.nodes=2 but the job has 1 nodes: the job's node list SLURM_JOB_NODELIST=mt5n1"),
    ("mt5n[1-2]", "3", r"SLURM_NNODES=3 but SLURM_JOB_NODELIST=mt5n\[1-2\] names 2 hosts"),
    ("mt5n1,mt5n1", "2", r"SLURM_JOB_NODELIST=mt5n1,mt5n1 names a host twice"),
])
def test_slurm_train_refuses_a_node_list_that_does_not_match(tmp_path, nodelist, nnodes, message):
    """`mt5study slurm train` in an allocation of the wrong size: exit 2, one message, nothing written."""
    import re

    params = _two_node_params(tmp_path)
    out = tmp_path / "run"
    out.mkdir()
    (out / "notes.txt").write_text("kept")  # a run folder that exists already stays as it is
    before = sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir())
    env = {**os.environ, "SLURM_JOB_ID": "4242", "SLURM_JOB_NODELIST": nodelist, "SLURM_NNODES": nnodes,
           "SLURM_CPUS_PER_TASK": "1"}
    proc = subprocess.run([sys.executable, "-m", "mt5study.cli", "slurm", "train", "--params", str(params),
                           "--out", str(out)], env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert re.search(message, proc.stderr), proc.stderr
    assert proc.stderr.startswith("mt5study slurm train: ") and "srun" not in proc.stdout
    assert sorted((p.name, p.stat().st_mtime_ns) for p in out.iterdir()) == before


def test_slurm_section_and_run_disagree(tmp_path):
    """slurm.nodes (what the job asks for) against the allocation and against run.nodes."""
    from mt5study import slurm

    params = config.load(_two_node_params(tmp_path, slurm_nodes=3))
    with pytest.raises(config.ConfigError, match=r"slurm.nodes=3 but run.nodes=2"):
        slurm.check_node_count(params, "p.yaml")
    alloc = {"SLURM_JOB_ID": "9", "SLURM_JOB_NODELIST": "mt5n[1-2]", "SLURM_NNODES": "2"}
    with pytest.raises(slurm.SlurmError, match=r"p.yaml: slurm.nodes=3 but the job has 2 nodes"):
        slurm.multinode_train_command(params, "p.yaml", tmp_path / "run", environ=alloc)
    ok = config.load(_two_node_params(tmp_path))
    argv = slurm.multinode_train_command(ok, "p.yaml", tmp_path / "run", environ=alloc)
    assert argv[:2] == ["srun", "--nodes=2"] and "--main_process_ip mt5n1" in argv[-1]
    assert not (tmp_path / "run").exists()
