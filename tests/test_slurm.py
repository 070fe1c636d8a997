"""mt5study.slurm without a cluster: script text, the runner's signal and requeue logic (run by
bash with a fake scontrol), launch commands, validation before submission, no-Slurm errors."""

from __future__ import annotations

import json
import os
import shlex
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from mt5study import config, slurm
from mt5study.config import ConfigError
from mt5study.launch import accelerate_command
from mt5study.slurm import LaunchEnv, SlurmError
from mt5study.slurm_config import SlurmConfig

GOOD = "model: {preset: tiny}\noptim: {lr: 1.0e-3}\nrun: {steps: 2, micro_batch: 2}\n"


def _exe(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    path.chmod(0o755)
    return path


def _sbatch_lines(script: str) -> list[str]:
    return [line[len("#SBATCH "):] for line in script.splitlines() if line.startswith("#SBATCH ")]


# --------------------------------------------------------------------------- config


def test_slurm_config_defaults_and_checks():
    cfg = SlurmConfig()
    assert (cfg.nodes, cfg.signal_seconds, cfg.requeue, cfg.kernel, cfg.time_seconds) == (1, 120, True, "python3", 3600)
    assert SlurmConfig(time="1-00:30:00").time_seconds == 86400 + 1800
    with pytest.raises(ValueError, match="quoted string"):
        SlurmConfig.model_validate({"time": 43200})  # what YAML makes of an unquoted 12:00:00
    with pytest.raises(ValueError, match="not shorter than the time limit"):
        SlurmConfig(time="00:02:00", signal_seconds=120)
    with pytest.raises(ValueError, match="mem"):
        SlurmConfig(mem="32 GB")
    with pytest.raises(ValueError, match="one sbatch option per item"):
        SlurmConfig(extra_sbatch=["--exclusive\n#SBATCH --nodes=9"])
    with pytest.raises(ValueError):
        SlurmConfig(array_throttle=0)
    with pytest.raises(ValueError, match="Extra inputs"):
        SlurmConfig.model_validate({"gpus": 8})


# --------------------------------------------------------------------------- rendering


def test_render_job_options_and_command(tmp_path):
    cfg = SlurmConfig(nodes=2, gpus_per_node=8, cpus_per_task=16, mem="64G", time="02:00:00", partition="gpu",
                      account="abc123", qos="high", signal_seconds=300, extra_sbatch=["--exclusive"], python="/opt/venv/bin/python")
    script = slurm.render_job(tmp_path / "nb.ipynb", tmp_path / "p" / "small.yaml", tmp_path / "out", cfg)
    opts = _sbatch_lines(script)
    assert opts == [
        "--job-name=mt5-small", f"--output={tmp_path}/out/slurm/logs/%x_%j.log", "--open-mode=append",
        f"--chdir={slurm.ROOT}", "--nodes=2", "--ntasks-per-node=1", "--cpus-per-task=16", "--time=02:00:00",
        "--mem=64G", "--gpus-per-node=8", "--partition=gpu", "--account=abc123", "--qos=high",
        "--signal=B:USR1@300", "--requeue", "--exclusive",
    ]
    assert "PY=/opt/venv/bin/python" in script
    assert f"PARAMS={tmp_path}/p/small.yaml" in script
    assert '-k python3 --log-output --no-progress-bar -p params_path "$PARAMS" -p out_dir "$OUT_DIR"' in script
    assert "RESUME=(-p resume True)" in script
    subprocess.run(["bash", "-n"], input=script, text=True, check=True)  # valid bash
    no_requeue = slurm.render_job(tmp_path / "nb.ipynb", tmp_path / "a.yaml", tmp_path, SlurmConfig(requeue=False))
    assert "--no-requeue" in _sbatch_lines(no_requeue) and "REQUEUE=0" in no_requeue


def test_render_array_throttle_and_log_per_task(tmp_path):
    script = slurm.render_array(tmp_path / "nb.ipynb", tmp_path / "m.txt", 5, tmp_path / "out", SlurmConfig(array_throttle=2))
    opts = _sbatch_lines(script)
    assert "--array=0-4%2" in opts
    assert f"--output={tmp_path}/out/slurm/logs/%x_%A_%a.log" in opts
    unthrottled = slurm.render_array(tmp_path / "nb.ipynb", tmp_path / "m.txt", 3, tmp_path, SlurmConfig())
    assert "--array=0-2" in _sbatch_lines(unthrottled)
    assert slurm.array_spec(1, 4) == "0-0%4"
    with pytest.raises(ConfigError):
        slurm.array_spec(0, None)
    with pytest.raises(ConfigError, match="spaces"):
        slurm.render_job(tmp_path / "nb.ipynb", tmp_path / "a.yaml", tmp_path / "my out", SlurmConfig())


def _fake_python(tmp_path: Path) -> Path:
    # Stands in for the venv's python: records the command the job would run, as JSON.
    return _exe(tmp_path / "bin" / "fakepy", f"#!/bin/bash\n{shlex.quote(sys.executable)} -c "
                "'import json,os,sys; open(os.environ[\"ARGV_FILE\"],\"w\").write(json.dumps(sys.argv[1:]))' \"$@\"\n")


def test_array_task_runs_its_line_of_the_manifest(tmp_path):
    manifest = tmp_path / "m.txt"
    params = [tmp_path / "p" / f"{n}.yaml" for n in ("a", "b", "c")]
    manifest.write_text("".join(f"{p}\n" for p in params))
    cfg = SlurmConfig(python=str(_fake_python(tmp_path)), kernel="mt5study")
    script = tmp_path / "job.sh"
    script.write_text(slurm.render_array(tmp_path / "nb.ipynb", manifest, 3, tmp_path / "out", cfg))
    argv_file = tmp_path / "argv.json"
    env = {**os.environ, "SLURM_ARRAY_TASK_ID": "1", "SLURM_JOB_ID": "11", "ARGV_FILE": str(argv_file)}
    subprocess.run(["bash", str(script)], env=env, check=True, capture_output=True, timeout=60)
    out_dir = tmp_path / "out" / "b"
    assert json.loads(argv_file.read_text()) == [
        "-m", "papermill", str(tmp_path / "nb.ipynb"), str(out_dir / "nb.ipynb"), "-k", "mt5study",
        "--log-output", "--no-progress-bar", "-p", "params_path", str(params[1]), "-p", "out_dir", str(out_dir)]
    assert out_dir.is_dir() and slurm.task_dir(tmp_path / "out", params[1]) == out_dir
    env["SLURM_ARRAY_TASK_ID"] = "3"  # past the manifest's end
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "no line 3" in proc.stderr


# --------------------------------------------------------------------------- the runner, under bash


class Runner:
    """Runs a rendered script with bash as Slurm would, scontrol replaced by a recorder."""

    def __init__(self, tmp_path: Path):
        self.tmp = tmp_path
        self.calls = tmp_path / "scontrol_calls"
        _exe(tmp_path / "bin" / "scontrol", f'#!/bin/bash\necho "$@" >> {shlex.quote(str(self.calls))}\n')
        self.out = tmp_path / "out"
        self.out.mkdir()

    def start(self, code: str, cfg: SlurmConfig | None = None, restarts: int | None = None) -> subprocess.Popen:
        prog = self.tmp / "prog.py"
        prog.write_text(textwrap.dedent(code))
        text = slurm.render_command([sys.executable, str(prog)], cfg or SlurmConfig(signal_seconds=20), job_name="t",
                                    log=self.tmp / "t.log", watch_dir=self.out)
        (self.tmp / "job.sh").write_text(text)
        env = {**os.environ, "PATH": f"{self.tmp / 'bin'}:{os.environ['PATH']}", "SLURM_JOB_ID": "77", "OUT": str(self.out)}
        env.pop("SLURM_RESTART_COUNT", None)
        if restarts is not None:
            env["SLURM_RESTART_COUNT"] = str(restarts)
        return subprocess.Popen(["bash", str(self.tmp / "job.sh")], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True)

    def run(self, code: str, **kw) -> tuple[int, str]:
        proc = self.start(code, **kw)
        log, _ = proc.communicate(timeout=60)
        return proc.returncode, log

    def requeues(self) -> list[str]:
        return self.calls.read_text().splitlines() if self.calls.exists() else []


def test_runner_passes_exit_code_and_does_not_requeue(tmp_path):
    r = Runner(tmp_path)
    rc, log = r.run("import sys; sys.exit(5)")
    assert rc == 5 and r.requeues() == []
    assert "restart_count=0" in log and "command exited with code 5" in log


def test_runner_requeues_on_exit_code_3(tmp_path):
    r = Runner(tmp_path)
    rc, log = r.run("import sys; sys.exit(3)")
    assert r.requeues() == ["requeue 77"], log
    assert rc == 0 and "requeueing job 77" in log


def test_runner_requeues_on_fresh_preempted_summary_only(tmp_path):
    r = Runner(tmp_path)
    code = """
        import json, os, pathlib, sys
        run = pathlib.Path(os.environ["OUT"]) / "run1"; run.mkdir(exist_ok=True)
        (run / "summary.json").write_text(json.dumps({"status": "preempted", "step": 4}, indent=2))
        sys.exit(1)  # papermill's code when the training cell raised
    """
    rc, log = r.run(code)
    assert r.requeues() == ["requeue 77"], log
    # A summary.json left by an earlier run (older than the job's start) is not this run's outcome.
    r2 = Runner(tmp_path / "again")
    old = r2.out / "run0" / "summary.json"
    old.parent.mkdir()
    old.write_text('{"status": "preempted"}')
    past = time.time() - 3600
    os.utime(old, (past, past))
    rc, log = r2.run("import sys; sys.exit(1)")
    assert rc == 1 and r2.requeues() == [], log


def test_runner_requeue_off_exits_3(tmp_path):
    r = Runner(tmp_path)
    rc, log = r.run("import sys; sys.exit(3)", cfg=SlurmConfig(requeue=False))
    assert rc == 3 and r.requeues() == [] and "not requeued" in log


def test_runner_adds_resume_on_restart(tmp_path):
    r = Runner(tmp_path)
    rc, log = r.run("import os, sys; print('ARGS', sys.argv[1:], os.environ.get('MT5STUDY_RESUME'))", restarts=2)
    assert rc == 0 and "restart_count=2" in log
    assert "ARGS ['--resume'] 1" in log


# A parent without a USR1 handler (like papermill or the kernel) starts, through a bash, the
# "trainer" in a new session (as jupyter_client and torch elastic do); only the trainer handles USR1 and TERM, and
# it takes a second to "checkpoint" before it exits 3.
TREE = """
import os, pathlib, subprocess, sys
out = pathlib.Path(os.environ["OUT"])
trainer = r'''
import os, pathlib, signal, sys, time
out = pathlib.Path(os.environ["OUT"])
def stop(sig, frame):
    time.sleep(1)
    (out / "trainer_got").write_text(signal.Signals(sig).name)
    sys.exit(3)
signal.signal(signal.SIGUSR1, stop)
signal.signal(signal.SIGTERM, stop)
(out / "ready").write_text(str(os.getpgid(0)))
time.sleep(20)
'''
# bash in between (it stays: two commands), like accelerate's launcher; the trainer's output
# does not hold the job's log pipe open, so the runner alone decides when the job ends.
child = subprocess.Popen(["bash", "-c", '"$0" -c "$1" >/dev/null 2>&1; exit $?', sys.executable, trainer],
                         start_new_session=True)
code = child.wait()
(out / "parent_saw").write_text(str(code))
sys.exit(PARENT_EXIT)
"""


def _wait_for(path: Path, timeout: float = 30) -> None:
    end = time.time() + timeout
    while not path.exists():
        assert time.time() < end, f"{path} did not appear"
        time.sleep(0.05)


def _signalled_run(tmp_path: Path, sig: signal.Signals, parent_exit: str) -> tuple[Runner, subprocess.Popen, str]:
    r = Runner(tmp_path)
    proc = r.start(TREE.replace("PARENT_EXIT", parent_exit))
    _wait_for(r.out / "ready")
    assert int((r.out / "ready").read_text()) != os.getpgid(proc.pid)  # really another process group
    os.kill(proc.pid, sig)  # what `scancel --signal=USR1 --batch` does
    log, _ = proc.communicate(timeout=60)
    return r, proc, log


def test_runner_forwards_usr1_to_the_whole_tree_and_requeues(tmp_path):
    r, proc, log = _signalled_run(tmp_path, signal.SIGUSR1, "code")
    assert (r.out / "trainer_got").read_text() == "SIGUSR1", log
    assert (r.out / "parent_saw").read_text() == "3", log  # the parent ignored USR1 and saw the exit
    assert "got SIGUSR1" in log and r.requeues() == ["requeue 77"], log


def test_runner_usr1_without_preempted_outcome_does_not_requeue(tmp_path):
    r, proc, log = _signalled_run(tmp_path, signal.SIGUSR1, "1")  # exit 1 and no summary.json
    assert (r.out / "trainer_got").read_text() == "SIGUSR1", log
    assert proc.returncode == 1 and r.requeues() == [], log


def test_runner_forwards_term_waits_for_the_tree_and_leaves_requeue_to_slurm(tmp_path):
    r, proc, log = _signalled_run(tmp_path, signal.SIGTERM, "code")
    # The parent dies of TERM at once; the script still waits for the trainer's checkpoint.
    assert (r.out / "trainer_got").read_text() == "SIGTERM", log
    assert not (r.out / "parent_saw").exists()
    assert "command exited with code 143" in log
    assert proc.returncode == 143 and r.requeues() == [], log


# --------------------------------------------------------------------------- launch


def test_expand_hostlist():
    assert slurm.expand_hostlist("gpu[01-03,07],login1") == ["gpu01", "gpu02", "gpu03", "gpu07", "login1"]
    assert slurm.expand_hostlist("node7") == ["node7"]
    assert slurm.expand_hostlist("r[1-2]n[8-10]") == ["r1n8", "r1n9", "r1n10", "r2n8", "r2n9", "r2n10"]
    assert slurm.expand_hostlist("frontier[00098-00099]") == ["frontier00098", "frontier00099"]


def test_launch_env_from_slurm_variables():
    env = slurm.launch_env({"SLURM_JOB_ID": "123456", "SLURM_JOB_NODELIST": "gpu[001-004]", "SLURM_NNODES": "4",
                            "SLURM_GPUS_ON_NODE": "8"})
    assert env.hosts == ("gpu001", "gpu002", "gpu003", "gpu004")
    assert (env.num_machines, env.gpus_per_node, env.num_processes) == (4, 8, 32)
    assert env.main_ip == "gpu001" and env.main_port == 20000 + 123456 % 20000
    cpu = slurm.launch_env({"SLURM_JOB_ID": "7", "SLURM_JOB_NODELIST": "vm"}, gpus_per_node=2)
    assert (cpu.num_processes, cpu.main_port) == (2, 20007)
    with pytest.raises(SlurmError, match="SLURM_JOB_ID"):
        slurm.launch_env({})
    with pytest.raises(SlurmError, match="SLURM_NNODES=3"):
        slurm.launch_env({"SLURM_JOB_ID": "1", "SLURM_JOB_NODELIST": "a,b", "SLURM_NNODES": "3"})


def test_multinode_command_composes_with_an_accelerate_command(tmp_path):
    env = LaunchEnv(job_id=123456, hosts=("gpu001", "gpu002", "gpu003", "gpu004"), gpus_per_node=8,
                    main_ip="gpu001", main_port=23456)
    inner = ["accelerate", "launch", "--num_machines", "1", "--machine_rank=0", "--use_deepspeed", "--mixed_precision",
             "bf16", "-m", "mt5study.cli", "train", "--params", "/p/x y.yaml", "--num_processes", "9"]
    argv = slurm.multinode_launch_command(inner, env, cpus_per_task=56)
    assert argv[:7] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                        "--cpus-per-task=56", "bash"]
    assert argv[7] == "-c"
    # Run the per-node shell as node 2 would, with a fake accelerate that prints what it got.
    _exe(tmp_path / "accelerate", "#!/bin/bash\nprintf '%s\\n' \"$@\"\n")
    got = subprocess.run(["bash", "-c", argv[8]], env={**os.environ, "SLURM_NODEID": "2",
                         "PATH": f"{tmp_path}:{os.environ['PATH']}"}, capture_output=True, text=True, check=True)
    assert got.stdout.splitlines() == [
        "launch", "--num_machines", "4", "--machine_rank", "2", "--num_processes", "32",
        "--main_process_ip", "gpu001", "--main_process_port", "23456", "--deepspeed_multinode_launcher", "standard",
        "--use_deepspeed", "--mixed_precision", "bf16", "-m", "mt5study.cli", "train", "--params", "/p/x y.yaml",
        "--num_processes", "9"]  # the training script's own arguments are left alone
    assert argv[8].startswith("trap '' USR1; exec ")
    with pytest.raises(ValueError, match="not an accelerate launch"):
        slurm.multinode_launch_command(["python", "-m", "mt5study.cli", "train"], env)
    plain = slurm.multinode_launch_command([sys.executable, "-m", "accelerate.commands.launch", "t.py"], env)
    assert "--num_machines 4" in plain[-1] and "--deepspeed_multinode_launcher" not in plain[-1]


def test_multinode_train_command_wraps_the_projects_accelerate_command(tmp_path):
    doc = config.read_yaml(_params(tmp_path, "big"))
    doc["run"].update(nodes=4, processes_per_node=8, global_batch=64)
    params = config.validate(doc, "big.yaml")
    alloc = {"SLURM_JOB_ID": "1234", "SLURM_JOB_NODELIST": "gpu[001-004]", "SLURM_NNODES": "4",
             "SLURM_GPUS_ON_NODE": "8", "SLURM_CPUS_PER_TASK": "64"}
    argv = slurm.multinode_train_command(params, "/p/big.yaml", "/o/big", resume=True, environ=alloc)
    assert argv[:6] == ["srun", "--nodes=4", "--ntasks=4", "--ntasks-per-node=1", "--kill-on-bad-exit=1",
                        "--cpus-per-task=64"]
    inner = shlex.split(argv[-1].removeprefix("trap '' USR1; exec "))
    assert inner[1:3] == ["-m", "accelerate.commands.launch"]

    def flag(name: str) -> list[str]:
        return [inner[i + 1] for i, a in enumerate(inner) if a == name]

    assert flag("--num_machines") == ["4"] and flag("--num_processes") == ["32"]
    assert flag("--machine_rank") == ["$SLURM_NODEID"] and '--machine_rank "$SLURM_NODEID"' in argv[-1]
    assert flag("--main_process_ip") == ["gpu001"] and flag("--main_process_port") == [str(20000 + 1234 % 20000)]
    assert flag("--deepspeed_multinode_launcher") == ["standard"]
    assert inner[-8:] == ["-m", "mt5study.cli", "train", "--params", "/p/big.yaml", "--out", "/o/big", "--resume"]
    with pytest.raises(SlurmError, match=r"big.yaml: run.processes_per_node=8 but the allocation has 4 GPU\(s\) per node"):
        slurm.multinode_train_command(params, "/p/big.yaml", "/o", environ={**alloc, "SLURM_GPUS_ON_NODE": "4"})
    with pytest.raises(SlurmError, match="asks for 32 processes but the allocation has 4 nodes x 4"):
        small = LaunchEnv(job_id=1, hosts=("a", "b", "c", "d"), gpus_per_node=4, main_ip="a", main_port=20001)
        slurm.multinode_launch_command(accelerate_command(params, "/p/big.yaml", "/o", num_machines=4,
                                                                main_ip="a", main_port=1), small)
    with pytest.raises(SlurmError, match=r"big.yaml: run.nodes=4 but the job has 2 nodes: .*SLURM_JOB_NODELIST=gpu\[1-2\]"):
        slurm.multinode_train_command(params, "/p/big.yaml", "/o", environ={**alloc, "SLURM_JOB_NODELIST": "gpu[1-2]",
                                                                               "SLURM_NNODES": "2"})


# --------------------------------------------------------------------------- submission


@pytest.fixture
def fake_slurm(tmp_path, monkeypatch):
    """A PATH whose sbatch/squeue only record their calls; sbatch hands out ids 1001, 1002, ..."""
    bin_dir = tmp_path / "fakebin"
    calls = tmp_path / "calls"
    _exe(bin_dir / "sbatch", f"#!/bin/bash\necho \"sbatch $*\" >> {calls}\n"
         f"n=$(grep -c '^sbatch' {calls}); echo \"$((1000 + n));local\"\n")
    _exe(bin_dir / "squeue", f"#!/bin/bash\necho \"squeue $*\" >> {calls}\n")
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    return calls


def _params(tmp_path: Path, name: str, text: str = GOOD) -> Path:
    path = tmp_path / "params" / f"{name}.yaml"
    path.parent.mkdir(exist_ok=True)
    path.write_text(text)
    return path


def _notebook(tmp_path: Path) -> Path:
    nb = tmp_path / "study.ipynb"
    nb.write_text("{}")
    return nb


def test_invalid_params_refused_before_anything_is_submitted(tmp_path, fake_slurm):
    good = _params(tmp_path, "good")
    bad = _params(tmp_path, "bad", GOOD.replace("steps: 2", "steps: -1"))
    for array in (False, True):
        with pytest.raises(ConfigError) as err:
            slurm.submit(_notebook(tmp_path), [good, bad], tmp_path / "out", array=array)
        assert "bad.yaml" in str(err.value) and "run.steps" in str(err.value) and "nothing was submitted" in str(err.value)
    assert not fake_slurm.exists() and not (tmp_path / "out").exists()


def test_submit_jobs_and_array(tmp_path, fake_slurm):
    nb, a, b = _notebook(tmp_path), _params(tmp_path, "a"), _params(tmp_path, "b")
    ids = slurm.submit(nb, [a, b], tmp_path / "out", echo=lambda *_: None)
    assert ids == ["1001", "1002"]
    scripts = sorted((tmp_path / "out" / "slurm").glob("*.sbatch"))
    assert [s.name.split("_")[0] for s in scripts] == ["mt5-a", "mt5-b"]
    assert (tmp_path / "out" / "slurm" / "logs").is_dir()
    ids = slurm.submit(nb, [a, b], tmp_path / "out", array=True, echo=lambda *_: None)
    assert ids == ["1003"]
    manifest = next((tmp_path / "out" / "slurm").glob("*.manifest"))
    assert manifest.read_text().splitlines() == [str(a), str(b)]
    rows = [json.loads(line) for line in (tmp_path / "out" / "slurm" / "submissions.jsonl").read_text().splitlines()]
    assert [r["job_id"] for r in rows] == ["1001", "1002", "1003"] and rows[2]["params"] == [str(a), str(b)]
    calls = fake_slurm.read_text().splitlines()
    assert [c.split()[0] for c in calls] == ["squeue", "sbatch", "sbatch", "squeue", "sbatch"]


def test_submit_refuses_colliding_names_and_mixed_resources(tmp_path, fake_slurm, monkeypatch):
    nb = _notebook(tmp_path)
    a = _params(tmp_path, "a")
    other = tmp_path / "elsewhere" / "a.yaml"
    other.parent.mkdir()
    other.write_text(GOOD)
    with pytest.raises(ConfigError, match="share a name"):
        slurm.submit(nb, [a, other], tmp_path / "out")
    _with_slurm_section(monkeypatch)
    b = _params(tmp_path, "b", GOOD + "slurm: {time: \"00:30:00\"}\n")
    with pytest.raises(ConfigError, match="differ"):
        slurm.submit(nb, [a, b], tmp_path / "out", array=True)
    assert not fake_slurm.exists()


def _with_slurm_section(monkeypatch) -> None:
    # What the lead's schema change does: TrainParams gains `slurm: SlurmConfig | None = None`.
    class WithSlurm(config.TrainParams):
        slurm: SlurmConfig | None = None

    monkeypatch.setattr(config, "TrainParams", WithSlurm)


def test_params_slurm_section_drives_the_script(tmp_path, monkeypatch, capsys):
    _with_slurm_section(monkeypatch)
    four_nodes = GOOD.replace("micro_batch: 2}", "micro_batch: 2, nodes: 4, processes_per_node: 8}")
    p = _params(tmp_path, "big", four_nodes + 'slurm: {nodes: 4, gpus_per_node: 8, time: "12:00:00", array_throttle: 3}\n')
    assert slurm.main(["submit", "--notebook", str(_notebook(tmp_path)), "--params", str(p), "--array", "--dry-run"]) == 0
    opts = _sbatch_lines(capsys.readouterr().out)
    assert {"--nodes=4", "--gpus-per-node=8", "--time=12:00:00", "--array=0-0%3"} <= set(opts)
    unquoted = _params(tmp_path, "unquoted", GOOD + "slurm: {time: 12:00:00}\n")
    with pytest.raises(ConfigError, match=r"unquoted.yaml: slurm.time: .*quoted string"):
        slurm.load_resources([unquoted])
    # A job of slurm.nodes for a run of another size is refused before anything is written.
    mismatch = _params(tmp_path, "mismatch", GOOD + "slurm: {nodes: 2}\n")
    with pytest.raises(ConfigError, match=r"mismatch.yaml: slurm.nodes=2 but run.nodes=1"):
        slurm.load_resources([mismatch])
    assert slurm.main(["submit", "--notebook", str(_notebook(tmp_path)), "--params", str(mismatch),
                       "--out", str(tmp_path / "never")]) == 2
    assert "slurm.nodes=2 but run.nodes=1" in capsys.readouterr().err and not (tmp_path / "never").exists()


def test_no_slurm_gives_a_clear_error(tmp_path, monkeypatch, capsys):
    nb, a = _notebook(tmp_path), _params(tmp_path, "a")
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))  # no sbatch anywhere
    with pytest.raises(SlurmError, match="sbatch not found on PATH"):
        slurm.submit(nb, [a], tmp_path / "out")
    assert slurm.main(["submit", "--notebook", str(nb), "--params", str(a)]) == 2
    assert "sbatch not found" in capsys.readouterr().err
    # sbatch installed but slurmctld down: squeue's own message is passed on.
    bin_dir = tmp_path / "down"
    _exe(bin_dir / "sbatch", "#!/bin/bash\nexit 1\n")
    _exe(bin_dir / "squeue", "#!/bin/bash\necho 'slurm_load_jobs error: Unable to contact slurm controller (connect failure)' >&2\nexit 1\n")
    monkeypatch.setenv("PATH", str(bin_dir))
    with pytest.raises(SlurmError, match="contacting slurmctld.*Unable to contact slurm controller"):
        slurm.submit(nb, [a], tmp_path / "out")
    assert not list((tmp_path / "out").glob("slurm/*.sbatch"))


def test_dry_run_needs_no_slurm(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("PATH", str(tmp_path / "empty"))
    a, b = _params(tmp_path, "a"), _params(tmp_path, "b")
    assert slurm.main(["submit", "--notebook", str(_notebook(tmp_path)), "--params", str(a), str(b), "--array",
                       "--dry-run", "--out", str(tmp_path / "out")]) == 0
    out = capsys.readouterr().out
    assert "#SBATCH --array=0-1" in out and f"{a}\n{b}\n" in out
    assert not (tmp_path / "out").exists()


def test_add_cli_registers_slurm_commands():
    import argparse

    parser = argparse.ArgumentParser(prog="mt5study")
    slurm.add_cli(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["slurm", "submit", "--notebook", "n.ipynb", "--params", "a.yaml", "b.yaml", "--array"])
    assert (args.command, args.slurm_command, args.params, args.array) == ("slurm", "submit", ["a.yaml", "b.yaml"], True)
    assert callable(args.func)
