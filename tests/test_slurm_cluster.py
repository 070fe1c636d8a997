"""mt5study.slurm against a real Slurm cluster started by scripts/slurm/start_local_cluster.sh.

The session fixture starts (or restarts) the cluster itself; it needs root on Debian/Ubuntu
and installs the Slurm packages when missing. Jobs run the venv's Python (sys.executable).
The cluster has this machine as node of the default partition `debug`, and two more nodes,
mt5n1 and mt5n2, in partition `multi`: each a slurmd in its own network and UTS namespace
(MT5_SLURM_NETNS_NODES=2), so a job can span two "machines" with their own addresses and names.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from mt5study import config, launch, records, slurm
from mt5study.paths import PARAMS, ROOT
from mt5study.slurm_config import SlurmConfig

pytestmark = pytest.mark.slow

SCRIPTS = ROOT / "scripts" / "slurm"
NETNS_NODES = 2  # nodes mt5n1, mt5n2 of partition `multi`
GOOD = "model: {preset: tiny}\noptim: {lr: 1.0e-3}\nrun: {steps: STEPS, micro_batch: 2}\n"


def _slurm_up() -> bool:
    if not shutil.which("scontrol"):
        return False
    ping = subprocess.run(["scontrol", "ping"], capture_output=True, text=True, timeout=60)
    return "is UP" in ping.stdout


@pytest.fixture(scope="session")
def cluster():
    """A running local cluster; stopped at the end if it was not running before."""
    if os.geteuid() != 0 or not Path("/etc/debian_version").exists():
        pytest.skip("the local Slurm cluster needs root on Debian/Ubuntu")
    was_up = _slurm_up()
    t0 = time.monotonic()
    proc = subprocess.run(["bash", str(SCRIPTS / "start_local_cluster.sh")], capture_output=True, text=True, timeout=900,
                          env={**os.environ, "MT5_SLURM_NETNS_NODES": str(NETNS_NODES)})
    assert proc.returncode == 0, proc.stdout + proc.stderr
    print(f"\nlocal Slurm cluster started in {time.monotonic() - t0:.1f} s: "
          + " | ".join(proc.stdout.strip().splitlines()[-2:]))
    yield
    if not was_up:
        subprocess.run(["bash", str(SCRIPTS / "stop_local_cluster.sh")], capture_output=True, timeout=120)


@pytest.fixture
def cancel_later():
    """Collects job ids; whatever a failed test left queued or running is cancelled after it."""
    ids: list[str] = []
    yield ids.append
    for job_id in ids:
        subprocess.run(["scancel", job_id], capture_output=True, timeout=60)


def _wait_until(pred, timeout: float, what: str, interval: float = 0.5):
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def _queued(job_id: str) -> bool:
    out = subprocess.run(["squeue", "--noheader", "--jobs", job_id, "--format=%i"], capture_output=True, text=True)
    return bool(out.stdout.strip())


def _jobs(job_id: str) -> list[dict[str, str]]:
    """`scontrol -o show job ID` as one dict per job (per task for an array)."""
    out = subprocess.run(["scontrol", "-o", "show", "job", job_id], capture_output=True, text=True, check=True)
    rows = []
    for line in out.stdout.splitlines():
        rows.append(dict(kv.split("=", 1) for kv in line.split() if "=" in kv))
    return rows


def _wait_done(job_id: str, timeout: float) -> list[dict[str, str]]:
    _wait_until(lambda: not _queued(job_id), timeout, f"job {job_id} to leave the queue")
    return _jobs(job_id)


def _notebook(path: Path) -> Path:
    """A tiny study notebook: parameters cell, load the params, write a result, or fail on purpose."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    params = nbformat.v4.new_code_cell('params_path = ""\nout_dir = ""\nresume = False')
    params.metadata["tags"] = ["parameters"]
    work = nbformat.v4.new_code_cell(
        "import json, os, pathlib, sys\n"
        "from mt5study import config, slurm\n"
        "p = config.load(params_path)\n"
        "if p.run.steps > 100:\n"
        "    raise RuntimeError('deliberate failure: run.steps > 100')\n"
        "env = slurm.launch_env()\n"
        "result = {'steps': p.run.steps, 'task': os.environ.get('SLURM_ARRAY_TASK_ID'), 'python': sys.executable,\n"
        "          'hosts': list(env.hosts), 'port': env.main_port, 'job': env.job_id}\n"
        "pathlib.Path(out_dir, 'result.json').write_text(json.dumps(result))\n"
        "print('wrote steps', p.run.steps)"
    )
    nb.cells = [params, work]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nbformat.write(nb, path)
    return path


def _params(folder: Path, name: str, steps: int) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.yaml"
    path.write_text(GOOD.replace("STEPS", str(steps)))
    return path


def test_array_runs_a_notebook_per_params_file(cluster, tmp_path, cancel_later):
    import nbformat

    nb = _notebook(tmp_path / "study.ipynb")
    files = [_params(tmp_path / "params", "small", 2), _params(tmp_path / "params", "smaller", 3)]
    out = tmp_path / "out"
    t0 = time.monotonic()
    (array_id,) = slurm.submit(nb, files, out, array=True, echo=lambda *_: None)
    cancel_later(array_id)
    tasks = _wait_done(array_id, 180)
    print(f"\narray of 2 notebook tasks: {time.monotonic() - t0:.1f} s from submit to done")
    assert sorted(t["ArrayTaskId"] for t in tasks) == ["0", "1"]
    assert {t["JobState"] for t in tasks} == {"COMPLETED"}, tasks
    for i, (path, steps) in enumerate(zip(files, (2, 3))):
        run = out / path.stem
        result = json.loads((run / "result.json").read_text())
        assert (result["steps"], result["task"], result["python"]) == (steps, str(i), sys.executable)
        task_job = next(t["JobId"] for t in tasks if t["ArrayTaskId"] == str(i))
        assert result["hosts"] == [subprocess.check_output(["hostname", "-s"], text=True).strip()]
        assert result["port"] == 20000 + int(task_job) % 20000 and result["job"] == int(task_job)
        executed = nbformat.read(run / "study.ipynb", as_version=4)
        injected = [c for c in executed.cells if "injected-parameters" in c.metadata.get("tags", [])]
        assert injected and str(path) in injected[0].source
        assert f"wrote steps {steps}" in "".join(o.get("text", "") for o in executed.cells[-1].outputs)
        log = out / "slurm" / "logs" / f"mt5-study_{array_id}_{i}.log"
        assert "restart_count=0" in log.read_text() and "command exited with code 0" in log.read_text()
    assert slurm.status(out) == []  # nothing left in the queue


def test_failing_task_keeps_its_log_and_the_other_task_completes(cluster, tmp_path, cancel_later):
    nb = _notebook(tmp_path / "study.ipynb")
    files = [_params(tmp_path / "params", "broken", 999), _params(tmp_path / "params", "fine", 2)]
    out = tmp_path / "out"
    manifest = out / "slurm" / "fail.manifest"
    (out / "slurm" / "logs").mkdir(parents=True)
    manifest.write_text("".join(f"{p}\n" for p in files))
    # Throttle 1: the node has room for both, so overlapping tasks would show a broken %N.
    script = out / "slurm" / "fail.sbatch"
    script.write_text(slurm.render_array(nb, manifest, 2, out, SlurmConfig(array_throttle=1), job_name="mt5-fail"))
    array_id = slurm.submit_script(script)
    cancel_later(array_id)
    tasks = {t["ArrayTaskId"]: t for t in _wait_done(array_id, 180)}
    assert (tasks["0"]["JobState"], tasks["0"]["ExitCode"]) == ("FAILED", "1:0"), tasks
    assert (tasks["1"]["JobState"], tasks["1"]["ExitCode"]) == ("COMPLETED", "0:0"), tasks
    assert tasks["1"]["StartTime"] >= tasks["0"]["EndTime"], "array_throttle=1 let the tasks overlap"
    failed_log = (out / "slurm" / "logs" / f"mt5-fail_{array_id}_0.log").read_text()
    assert "deliberate failure" in failed_log and "command exited with code 1" in failed_log
    assert (out / "broken" / "study.ipynb").exists()  # papermill keeps the notebook with its error
    assert json.loads((out / "fine" / "result.json").read_text())["steps"] == 2


# A stand-in for the trainer's contract: one "optimizer step" every 0.2 s, each appended to
# steps.txt; on USR1/TERM it finishes the step, checkpoints, writes summary.json "preempted"
# and exits 3; with --resume (or MT5STUDY_RESUME=1) it continues after the checkpoint.
TRAINER = r"""
import json, os, pathlib, signal, sys, time
out, total = pathlib.Path(sys.argv[1]), int(sys.argv[2])
resume = "--resume" in sys.argv or os.environ.get("MT5STUDY_RESUME") == "1"
stop = []
signal.signal(signal.SIGUSR1, lambda s, f: stop.append(s))
signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
ckpt = out / "checkpoint.json"
start = json.loads(ckpt.read_text())["step"] if resume and ckpt.exists() else 0
with open(out / "starts.jsonl", "a") as f:
    f.write(json.dumps({"restart": os.environ.get("SLURM_RESTART_COUNT", "0"), "resume": resume, "from": start}) + "\n")
def save(name, data):
    tmp = out / (name + ".tmp"); tmp.write_text(json.dumps(data)); os.replace(tmp, out / name)
for step in range(start + 1, total + 1):
    time.sleep(0.2)
    with open(out / "steps.txt", "a") as f:
        f.write(f"{step}\n")
    if stop:
        save("checkpoint.json", {"step": step})
        save("summary.json", {"status": "preempted", "step": step})
        sys.exit(3)
save("summary.json", {"status": "completed", "step": total})
"""


def _steps(out: Path) -> list[int]:
    path = out / "steps.txt"
    return [int(x) for x in path.read_text().split()] if path.exists() else []


def _preempt_and_finish(tmp_path: Path, via_srun: bool, cancel_later) -> None:
    out = tmp_path / "run"
    out.mkdir()
    trainer = tmp_path / "trainer.py"
    trainer.write_text(TRAINER)
    total = 50
    argv = [sys.executable, str(trainer), str(out), str(total)]
    if via_srun:  # as a multi-node job does: the batch shell's USR1 must cross srun to the step
        argv = slurm.srun_command(argv, 1)
    log = tmp_path / "job.log"
    cfg = SlurmConfig(time="00:10:00", signal_seconds=60)
    script = tmp_path / "job.sbatch"
    script.write_text(slurm.render_command(argv, cfg, job_name="mt5-requeue", log=log, watch_dir=out,
                                           resume_args=() if via_srun else ("--resume",)))
    t0 = time.monotonic()
    job_id = slurm.submit_script(script)
    cancel_later(job_id)
    _wait_until(lambda: len(_steps(out)) >= 5, 120, "the trainer's first steps")
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    summary = out / "summary.json"
    _wait_until(lambda: summary.exists() and json.loads(summary.read_text())["status"] == "completed",
                180, f"the requeued job to finish (log: {log.read_text() if log.exists() else 'none'})")
    (job,) = _wait_done(job_id, 60)
    text = log.read_text()
    starts = [json.loads(line) for line in (out / "starts.jsonl").read_text().splitlines()]
    print(f"\nrequeue{' via srun' if via_srun else ''}: {time.monotonic() - t0:.1f} s, starts {starts}, "
          f"Restarts={job['Restarts']}")
    assert _steps(out) == list(range(1, total + 1)), "a step was lost or repeated"
    assert len(starts) == 2 and starts[0] == {"restart": "0", "resume": False, "from": 0}, starts
    assert starts[1]["restart"] == "1" and starts[1]["resume"] is True and 5 <= starts[1]["from"] < total, starts
    assert int(job["Restarts"]) >= 1 and job["JobState"] == "COMPLETED", job
    assert "got SIGUSR1" in text and f"requeueing job {job_id}" in text and "restart_count=1" in text, text


def test_usr1_checkpoints_requeues_and_resumes_without_losing_steps(cluster, tmp_path, cancel_later):
    _preempt_and_finish(tmp_path, via_srun=False, cancel_later=cancel_later)


def test_usr1_reaches_a_trainer_behind_srun(cluster, tmp_path, cancel_later):
    _preempt_and_finish(tmp_path, via_srun=True, cancel_later=cancel_later)


def test_real_trainer_is_preempted_requeued_and_resumes_exactly(cluster, tmp_path, cancel_later):
    """The project's own `mt5study launch` (2 CPU ranks, ZeRO-3) under the job script."""
    out = tmp_path / "run"
    steps = 40
    argv = [sys.executable, "-m", "mt5study.cli", "launch", "--params", str(PARAMS / "cpu" / "tiny.yaml"),
            "--out", str(out), "--set", f"run.steps={steps}", "--set", "run.log_every=1", "--set", "run.eval_every=0"]
    log = tmp_path / "train.log"
    script = tmp_path / "train.sbatch"
    script.write_text(slurm.render_command(argv, SlurmConfig(cpus_per_task=min(2, os.cpu_count() or 1), time="00:10:00"), job_name="mt5-train",
                                           log=log, watch_dir=out))
    t0 = time.monotonic()
    job_id = slurm.submit_script(script)
    cancel_later(job_id)
    _wait_until(lambda: len(records.read_metrics(out / "metrics.jsonl")) >= 3, 420, "the first logged steps")  # s; 210 s seen on 2 busy cores
    subprocess.run(["scancel", "--signal=USR1", "--batch", job_id], check=True)
    summary = out / "summary.json"
    _wait_until(lambda: summary.exists() and records.read_json(summary)["status"] == "completed", 600,
                "the requeued run to complete")
    (job,) = _wait_done(job_id, 60)
    text = log.read_text()
    print(f"\nreal trainer preempted and resumed under Slurm: {time.monotonic() - t0:.1f} s, Restarts={job['Restarts']}")
    assert [row["step"] for row in records.read_metrics(out / "metrics.jsonl")] == list(range(1, steps + 1))
    assert int(job["Restarts"]) == 1 and job["JobState"] == "COMPLETED", job
    assert "command exited with code 3" in text and "restart_count=1" in text, text
    assert text.count("--resume") == 1, text  # only the rerun's command line carries it


def test_smoke_study_as_a_job_array_then_its_notebook(cluster, tmp_path, cancel_later):
    """The precision smoke study: one array task per trial through the real sbatch, then notebook 02."""
    import nbformat
    import pandas as pd

    from mt5study.studies.cluster import submit_study

    import yaml

    from mt5study import config as cfgmod
    from mt5study.studies.config import validate_trials

    # One seed of the CI smoke study: the array plumbing is what is under test here; the seeds
    # themselves are covered by the runner's tests (two seeds would double the array's wall time).
    study = yaml.safe_load((PARAMS / "cpu" / "precision_smoke.yaml").read_text())
    study["study"]["seeds"] = [0]
    study_path = tmp_path / "precision_smoke_one_seed.yaml"
    study_path.write_text(yaml.safe_dump(study))
    _, planned = validate_trials(cfgmod.load(study_path), str(study_path))
    n = len(planned)
    assert n == 6  # 3 precisions x 2 ZeRO stages x 1 seed

    out = tmp_path / "precision_smoke"
    t0 = time.monotonic()
    ids = submit_study(study_path, "02_precision_study.ipynb", out)
    for i in ids:
        cancel_later(i)
    assert len(ids) == 2
    _wait_done(ids[0], timeout=1200)  # n trials, 2 at a time, bf16 emulated on CPU
    tasks = _jobs(ids[0])
    assert len(tasks) == n and {t["JobState"] for t in tasks} == {"COMPLETED"}
    assert {t["ArrayTaskThrottle"] for t in tasks} == {"2"}
    _wait_done(ids[1], timeout=300)
    print(f"\nstudy array + notebook wall time: {time.monotonic() - t0:.0f} s")
    trials = sorted(p.name for p in (out / "grid" / "trials").iterdir())
    assert trials == sorted(name for name, _ in planned)
    statuses = {t: records.read_json(out / "grid" / "trials" / t / "summary.json")["status"] for t in trials}
    # fp16 runs on CPU only through torch AMP without ZeRO; DeepSpeed's fp16 on CPU is refused
    for t, status in statuses.items():
        assert status == ("unsupported" if "fp16" in t and "zero_stage=3" in t else "completed"), (t, status)
    table = pd.read_parquet(out / "grid" / "results.parquet")
    assert len(table) == n and set(table.trial) == set(trials)
    nb = nbformat.read(out / "02_precision_study.ipynb", as_version=4)
    errors = [o for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []) if o.output_type == "error"]
    assert not errors
    logs = list((out / "slurm" / "logs").glob("*.log"))
    assert len(logs) == n + 1  # one per array task, one for the notebook job


def test_slurm_train_launches_through_srun_on_the_allocation(cluster, tmp_path, cancel_later):
    """`mt5study slurm train` inside a job: srun + accelerate launch built from the allocation
    (machine rank from SLURM_NODEID, rendezvous on the first host) - one node here, the same
    command spans N nodes on a cluster."""
    out = tmp_path / "run"
    argv = [sys.executable, "-m", "mt5study.cli", "slurm", "train", "--params", str(PARAMS / "cpu" / "tiny.yaml"),
            "--out", str(out)]
    log = tmp_path / "srun.log"
    script = tmp_path / "srun.sbatch"
    script.write_text(slurm.render_command(argv, SlurmConfig(cpus_per_task=min(2, os.cpu_count() or 1), time="00:10:00"),
                                           job_name="mt5-srun", log=log, watch_dir=out))
    job_id = slurm.submit_script(script)
    cancel_later(job_id)
    (job,) = _wait_done(job_id, 300)
    text = log.read_text()
    assert job["JobState"] == "COMPLETED", text[-3000:]
    assert "srun --nodes=1" in text and '--machine_rank "$SLURM_NODEID"' in text
    summary = records.read_json(out / "summary.json")
    assert summary["status"] == "completed" and summary["world_size"] == 2
    env = records.read_json(out / "env.json")
    assert env["slurm"]["SLURM_JOB_ID"] == job_id


def test_two_nodes_train_like_one(cluster, tmp_path, cancel_later):
    """`mt5study slurm train` in a 2-node job of partition `multi`: srun starts one accelerate
    launcher on mt5n1 and one on mt5n2, machine ranks from SLURM_NODEID, rendezvous on mt5n1;
    the loss curve equals the 1-node x 2-process run's."""
    doc = config.read_yaml(PARAMS / "cpu" / "tiny.yaml")
    doc["run"].update(nodes=2, processes_per_node=1)
    doc["slurm"] = {"nodes": 2, "cpus_per_task": 1, "partition": "multi", "time": "00:10:00"}
    params = tmp_path / "tiny_2nodes.yaml"
    params.write_text(json.dumps(doc))  # JSON is YAML
    out, log = tmp_path / "two_nodes", tmp_path / "two_nodes.log"
    argv = ["bash", "-c", 'srun --ntasks-per-node=1 hostname -s | sort | tr "\\n" " "; echo; exec "$@"', "job",
            sys.executable, "-m", "mt5study.cli", "slurm", "train", "--params", str(params), "--out", str(out)]
    script = tmp_path / "two_nodes.sbatch"
    script.write_text(slurm.render_command(argv, config.load(params).slurm, job_name="mt5-2nodes", log=log, watch_dir=out))
    t0 = time.monotonic()
    job_id = slurm.submit_script(script)
    cancel_later(job_id)
    (job,) = _wait_done(job_id, 600)
    text = log.read_text()
    print(f"\n2-node Slurm job {job_id}: {time.monotonic() - t0:.0f} s on {job['NodeList']}")
    assert job["JobState"] == "COMPLETED" and job["NodeList"] == "mt5n[1-2]", text[-3000:]
    assert "mt5n1 mt5n2" in text  # one task on each node, each with its own hostname
    assert "srun --nodes=2 --ntasks=2 --ntasks-per-node=1" in text and "--main_process_ip mt5n1" in text
    summary = records.read_json(out / "summary.json")
    env = records.read_json(out / "env.json")
    assert summary["status"] == "completed" and summary["world_size"] == 2
    assert env["slurm"]["SLURM_JOB_NODELIST"] == "mt5n[1-2]" and env["hardware"]["host"] == "mt5n1"
    one = launch.run(PARAMS / "cpu" / "tiny.yaml", tmp_path / "one_node")  # 1 node x 2 processes, here
    a = [r["loss"] for r in records.read_metrics(tmp_path / "one_node" / "metrics.jsonl")]
    b = [r["loss"] for r in records.read_metrics(out / "metrics.jsonl")]
    diff = max(abs(x - y) for x, y in zip(a, b))
    print(f"1 node x 2 vs 2 Slurm nodes x 1: {len(b)} steps, max |loss diff| = {diff:.3g}")
    assert len(a) == len(b) == doc["run"]["steps"] and one["world_size"] == 2
    assert diff <= 1e-6, (a, b)
