"""The sharded ETL as chained Slurm job arrays on the real local cluster: >= 4 tasks per stage,
one task killed mid-way, and a re-run that launches only the missing task.

The cluster is started only when it is down (scripts/slurm/start_local_cluster.sh, root on
Debian/Ubuntu) and never stopped here: other work may be using it.
"""

import os
import subprocess
import time
from pathlib import Path

import pytest

from mt5study.data import etl
from mt5study.data.engine import cancel_slurm, completed_ranks
from mt5study.data.shards import Layout, read_json
from mt5study.paths import ROOT

from test_etl_engine import make_params, write_corpus
from test_slurm_cluster import _slurm_up

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster():
    if not _slurm_up():
        if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
            pytest.skip("the local Slurm cluster is down and starting it needs root on Debian/Ubuntu")
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "start_local_cluster.sh")],
                              capture_output=True, text=True, timeout=900,
                              env={**os.environ, "MT5_SLURM_NETNS_NODES": "2"})
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _array_tasks(job_id: str) -> dict[int, str]:
    """Array index -> state of a job array's tasks still known to slurmctld."""
    out = subprocess.run(["squeue", "--noheader", "-r", "--format=%K %T", "--jobs", job_id],
                         capture_output=True, text=True, check=False)
    rows = [line.split() for line in out.stdout.splitlines() if line.strip()]
    return {int(k): state for k, state in rows if k.isdigit()}


def test_chained_arrays_and_rerun_of_a_killed_task(cluster, tmp_path):
    corpus = write_corpus(tmp_path / "corpus")
    # start_delay_s: each task first sleeps a random 0..12 s (datatrove's randomize_start_duration),
    # a window in which a task has started and not finished
    params = make_params(corpus, 4, **{"etl.engine.executor": "slurm", "etl.engine.start_delay_s": 12,
                                       "etl.engine.slurm.wait": False})
    out = tmp_path / "out"
    lay = Layout(out)
    jobs: dict[str, str] = {}
    try:
        etl.run(params, out)  # wait=False: submits the chain and returns
        jobs = read_json(lay.engine / "slurm_jobs.json")
        assert all(j not in ("-1", "None") for j in jobs.values())
        # the chain: each stage's array depends on the previous one
        for before, after in zip(list(jobs)[:-1], list(jobs)[1:]):
            dep = subprocess.run(["scontrol", "show", "job", jobs[after]], capture_output=True, text=True).stdout
            assert f"afterok:{jobs[before]}" in dep.replace("_*", "").replace("(unfulfilled)", "")
        clean_id = jobs["clean"]
        killed = None
        deadline = time.monotonic() + 120
        while killed is None and time.monotonic() < deadline:
            running = [k for k, st in _array_tasks(clean_id).items() if st == "RUNNING"]
            started = {int(p.stem.split("_")[-1]) for p in (lay.logs("clean") / "logs").glob("task_*.log")} \
                if (lay.logs("clean") / "logs").is_dir() else set()
            for k in running:
                if k in started and k not in completed_ranks(out, "clean"):
                    subprocess.run(["scancel", f"{clean_id}_{k}"], check=True)
                    killed = k
                    break
            time.sleep(0.3)
        assert killed is not None, "no clean task was caught running"
        for _ in range(600):  # the other tasks finish; the dependent stages can never start
            if not _array_tasks(clean_id):
                break
            time.sleep(0.5)
        assert completed_ranks(out, "clean") == {0, 1, 2, 3} - {killed}
        cancel_slurm(jobs)  # the later stages and datatrove's stats jobs: their dependency failed
        for _ in range(120):
            if not any(_array_tasks(j) for j in jobs.values()):
                break
            time.sleep(0.5)

        # re-run: the clean stage launches only the killed task, the later stages all of theirs
        rerun = make_params(corpus, 4, **{"etl.engine.executor": "slurm", "etl.engine.slurm.poll_s": 1.0})
        manifest = etl.run(rerun, out)
        jobs = read_json(lay.engine / "slurm_jobs.json")
        assert read_json(lay.logs("clean") / "ranks_to_run.json") == [killed]
        for stage in ("dedup", "encode"):  # arrays of 4 tasks (4 hash buckets, 4 shard groups)
            assert read_json(lay.logs(stage) / "ranks_to_run.json") == [0, 1, 2, 3]
        local = etl.run(make_params(corpus, 1), tmp_path / "local")
        assert manifest["content_sha256"] == local["content_sha256"] and manifest["counts"] == local["counts"]
        assert [t["shards"] for t in manifest["per_task"]] == [3, 2, 2, 2]
    finally:
        if jobs:
            cancel_slurm(jobs)

