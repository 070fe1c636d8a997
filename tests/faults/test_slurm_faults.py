"""A training job killed by the scheduler three ways on the real local Slurm cluster, requeued
after each, resumes from its last checkpoint and ends as an uninterrupted run does.

One job (`mt5study train`, tiny, one process, 12 steps, a checkpoint every 2 steps), submitted
without the warning signal (no `--signal`), goes through, in a row:
(a) `scancel` (SIGTERM, then SIGKILL after KillWait), then `scontrol requeue`;
(b) a node failure as the node's processes see it: SIGKILL of the batch step's slurmstepd and
    every process under it at once (the job is then a ghost that Slurm still counts as running,
    as until a dead node's SlurmdTimeout), then `scontrol requeuehold`;
(c) its time limit, set to 1 minute, with no warning signal (the trainer is frozen with SIGSTOP
    as soon as it runs, so that the limit comes before the end on an idle machine too), then
    requeued with the limit back to 10 minutes; it completes.
Each restart carries `--resume` (the job script adds it from SLURM_RESTART_COUNT). The metrics,
final weights and the sample ids of every committed step equal an uninterrupted run's.

Needs root on Debian/Ubuntu; the cluster is started only when it is not running, never restarted.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import psutil
import pytest

from mt5study import checkpoints, records, slurm
from mt5study.paths import PARAMS, ROOT
from mt5study.slurm_config import SlurmConfig

from .conftest import INJECT
from .runs import WAIT_S, committed_samples

STEPS = 12
ARGS = ["--set=run.one_process=true", f"--set=run.steps={STEPS}", "--set=run.checkpoint_every=2",
        "--set=run.log_every=1", "--set=run.eval_every=4"]
WAIT = 600  # s for one phase on 2 shared cores


def _slurm_up() -> bool:
    if not shutil.which("scontrol"):
        return False
    return "is UP" in subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60).stdout


@pytest.fixture(scope="module")
def cluster():
    """The local cluster: started when down (as tests/test_slurm_cluster.py does), never restarted
    while up, and left running (other sessions may be using it)."""
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        pytest.skip("the local Slurm cluster needs root on Debian/Ubuntu")
    if not _slurm_up():
        proc = subprocess.run(["bash", str(ROOT / "scripts" / "slurm" / "start_local_cluster.sh")], capture_output=True,
                              text=True, timeout=900, env={**os.environ, "MT5_SLURM_NETNS_NODES": "2"})
        assert proc.returncode == 0, proc.stdout + proc.stderr


def _wait(pred, what: str, timeout: float = WAIT):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _job(job_id: str) -> dict[str, str]:
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True).stdout
    return dict(kv.split("=", 1) for kv in out.split() if "=" in kv)


def _scontrol(*args: str) -> None:
    subprocess.run(["scontrol", *args], check=True, capture_output=True, text=True, timeout=60)


def _step_tree(job_id: str) -> list[psutil.Process]:
    """The batch step's slurmstepd and every process under it."""
    for p in psutil.process_iter(["cmdline"]):
        if " ".join(p.info["cmdline"] or []).startswith(f"slurmstepd: [{job_id}.batch]"):  # its title, split
            try:
                return [p, *p.children(recursive=True)]
            except psutil.NoSuchProcess:
                return []
    return []


def _trainer(job_id: str) -> psutil.Process | None:
    for p in _step_tree(job_id):
        try:
            if "mt5study.cli" in p.cmdline():
                return p
        except psutil.NoSuchProcess:
            continue
    return None


def _ended(job_id: str, state: str):
    return _job(job_id)["JobState"] == state and not _step_tree(job_id)


def _latest(out: Path) -> int:
    c = checkpoints.latest(out)
    return records.read_json(c / checkpoints.STATE_FILE)["step"] if c else 0


def _attempt_starts(samples: Path) -> list[int]:
    import json

    firsts: dict[int, tuple[float, int]] = {}
    for f in samples.glob("samples-*.jsonl"):
        for line in f.read_text().splitlines():
            r = json.loads(line)
            firsts[r["launcher"]] = min(firsts.get(r["launcher"], (r["time"], r["start"])), (r["time"], r["start"]))
    return [start for _, start in sorted(firsts.values())]


def _weights(out: Path) -> dict:
    from safetensors.torch import load_file

    return load_file(str(out / "model" / "model.safetensors"))


def test_job_killed_three_ways_resumes_exactly(cluster, tmp_path, ledger):
    tiny = str(PARAMS / "cpu" / "tiny.yaml")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(INJECT), *filter(None, [os.environ.get("PYTHONPATH")])]),
               PYTHONUNBUFFERED="1")
    # The uninterrupted run, outside Slurm, meanwhile (the job waits for its allocation anyway).
    ref, ref_samples = tmp_path / "reference", tmp_path / "reference_samples"
    ref_samples.mkdir()
    with open(tmp_path / "reference.log", "w") as f:
        reference = subprocess.Popen([sys.executable, "-m", "mt5study.cli", "train", "--params", tiny, "--out", str(ref), *ARGS],
                                     env=dict(env, MT5STUDY_FAULT_SAMPLES=str(ref_samples)), stdout=f, stderr=subprocess.STDOUT)

    out, samples, log = tmp_path / "run", tmp_path / "samples", tmp_path / "job.log"
    samples.mkdir()
    argv = [sys.executable, "-m", "mt5study.cli", "train", "--params", tiny, "--out", str(out), *ARGS]
    script = slurm.render_command(argv, SlurmConfig(cpus_per_task=min(2, os.cpu_count() or 1), time="00:10:00", signal_seconds=60),
                                  job_name="mt5-faults", log=log, watch_dir=out)
    script = "\n".join(line for line in script.splitlines() if not line.startswith("#SBATCH --signal")) + "\n"
    (tmp_path / "train.sbatch").write_text(script)
    job_id = subprocess.run(["sbatch", "--parsable", str(tmp_path / "train.sbatch")], capture_output=True, text=True,
                            check=True, env=dict(env, MT5STUDY_FAULT_SAMPLES=str(samples))).stdout.strip().split(";")[0]
    kills = []  # the newest checkpoint's step when each attempt had ended
    try:
        with ledger.fault("Slurm job scancel'ed, then requeued"):
            _wait(lambda: _latest(out) >= 2, "the first checkpoint")
            subprocess.run(["scancel", job_id], check=True)
            _wait(lambda: _ended(job_id, "CANCELLED"), "the cancelled job's processes to end", 120)
            kills.append(_latest(out))
            _scontrol("requeue", job_id)

        with ledger.fault("Slurm job's node lost (slurmstepd and its processes killed -9), then requeued"):
            _wait(lambda: _latest(out) > kills[-1], "a checkpoint of the requeued run")
            assert not (out / "summary.json").exists(), "the run finished before the node failure"
            tree = _step_tree(job_id)
            for p in tree:
                p.send_signal(signal.SIGKILL)
            psutil.wait_procs(tree, timeout=60)
            kills.append(_latest(out))
            # Slurm still counts the job as running (a ghost, as until a dead node times out)
            _scontrol("requeuehold", job_id)
            _scontrol("update", f"JobId={job_id}", "TimeLimit=1")
            _scontrol("release", job_id)

        with ledger.fault("Slurm job killed by its time limit without a warning signal, then requeued"):
            frozen = _wait(lambda: int(_job(job_id)["Restarts"]) == 2 and _trainer(job_id), "the second restart")
            frozen.send_signal(signal.SIGSTOP)  # at start-up or in a step: the limit comes first
            _wait(lambda: _ended(job_id, "TIMEOUT"), "the time limit", 240)
            kills.append(_latest(out))
            assert not (out / "summary.json").exists() or records.read_json(out / "summary.json")["status"] != "completed"
            _scontrol("requeuehold", job_id)
            _scontrol("update", f"JobId={job_id}", "TimeLimit=10")
            _scontrol("release", job_id)
            _wait(lambda: _ended(job_id, "COMPLETED"), "the last restart to complete")
    finally:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)  # only this test's job
        try:
            reference.wait(timeout=WAIT_S)
        finally:
            reference.kill()

    text = log.read_text(errors="replace")
    assert int(_job(job_id)["Restarts"]) == 3 and text.count("--resume") == 3, text[-3000:]
    assert records.read_json(out / "summary.json")["status"] == "completed"
    assert reference.returncode == 0, (tmp_path / "reference.log").read_text()[-3000:]
    # Every restart that trained started at the newest checkpoint when its predecessor ended (the
    # frozen one may have trained nothing: then the next starts where it would have).
    starts = _attempt_starts(samples)
    assert starts[0] == 0 and starts[-1] == kills[-1] and starts == sorted(set(starts)), (starts, kills)
    assert set(starts) <= {0, *kills} and kills[0] >= 2 and kills == sorted(kills), (starts, kills)
    rows = records.read_metrics(out / "metrics.jsonl")
    steps = [r["step"] for r in rows]
    ledger.lost("metrics rows after 3 Slurm kills (steps missing or repeated)",
                len(set(range(1, STEPS + 1)) ^ set(steps)) + len(steps) - len(set(steps)))
    assert steps == list(range(1, STEPS + 1))
    assert [(r["step"], r["loss"]) for r in rows] == [(r["step"], r["loss"]) for r in records.read_metrics(ref / "metrics.jsonl")]
    a, b = _weights(out), _weights(ref)
    assert a.keys() == b.keys() and all(a[k].equal(b[k]) for k in a)
    got, want = committed_samples(samples, STEPS), committed_samples(ref_samples, STEPS)
    got_all, want_all = Counter(i for v in got.values() for i in v), Counter(i for v in want.values() for i in v)
    ledger.lost("samples skipped or seen twice across 3 Slurm kills", sum(((want_all - got_all) + (got_all - want_all)).values()))
    assert got == want
