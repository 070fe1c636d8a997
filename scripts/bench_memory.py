"""Peak host memory per rank of a 2-rank ZeRO-3 fp32 run of mt5-base, with and without zero.Init.

Three measurements, each the real `mt5study launch` path (or its process setup) on this machine:
- baseline: RSS of ranks that have imported the trainer (torch, DeepSpeed, transformers,
  Accelerate) and initialised the process group, with no model built;
- after  (run.zero3_init=true): parameters partitioned as they are created;
- before (run.zero3_init=false): the whole fp32 model built on every rank first.
Per rank: the peak RSS up to the last training step (`peak_memory_bytes_per_rank` in
metrics.jsonl), and the peak over the whole process (VmHWM, polled here; it includes the final
gather of the weights for saving). The prediction is `mt5study.memory.estimate` for the run plus
the measured baseline; the goal is a training peak within 25 % of it.

A watchdog kills a launch (its ranks, then its launchers) whose ranks together exceed --cap-gib, or
when the machine's available memory falls under 1.5 GiB, so that
the "before" run, which needed 11.4 GiB per rank here, stops before the kernel's OOM killer acts
for the whole machine; the record then says `killed_at_cap` with the peaks reached until then.

    .venv/bin/python scripts/bench_memory.py [--only after] [--cap-gib 18] [--preset mt5-small] [--steps 5]

Five steps by default: step 1 peaks lower than the rest (AdamW creates its moments in the first
optimizer step, after that step's backward), so a steady state needs steps 2 to 5 to show
(`plateau_growth_bytes`: the largest rank's rise of its peak over the last two steps).

Writes outputs/bench/memory_<preset>_zero3.json and prints it. A run starts only when the machine
has the memory it needs available (world size x prediction x --start-factor (1.25) + 1 GiB;
mt5-base: 21.2 GiB, more than this 24 GiB machine has free beside other work's ~2 GiB; measured
peaks reach 1.21x of the prediction (mt5-base, steps 4-5), and the watchdog stops a run that
would go further: `--start-factor 1.15` ran it here).
`--preset mt5-small` measures the released mt5-small architecture the same way in about half.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from mt5study import config, launch, memory, records  # noqa: E402

PARAMS = ROOT / "params" / "cpu" / "bench_memory.yaml"
OUT = ROOT / "outputs" / "bench"
GIB = 2**30
# Available memory a run needs before it starts, beyond "after"'s: "before" reached 11.4 GiB per
# rank with mt5-base and was OOM-killed, so it is only tried on an otherwise idle machine.
BEFORE_EXTRA = GIB
MIN_AVAILABLE = 3 * GIB // 2  # stop a launch before the machine runs short, whoever uses the memory


def _status_kib(pid: int, key: str) -> int:
    """A /proc/<pid>/status memory field (VmRSS, VmHWM) in KiB, 0 if the process is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _ranks(pid: int) -> list[int]:
    """Training ranks (mt5study.cli train processes) under a launcher process.

    A process that a rank forks (a subprocess: ctypes.util.find_library runs ldconfig) carries
    the rank's command line and resident pages until it execs; counted as a rank it doubled the
    sum and stopped mt5-base runs at "ranks held 20 GiB". Only ranks whose parent is not a rank
    count.
    """
    import psutil

    found = {}
    try:
        for child in psutil.Process(pid).children(recursive=True):
            try:
                cmd, parent = child.cmdline(), child.ppid()
            except psutil.Error:
                continue
            if "mt5study.cli" in cmd and "train" in cmd:
                found[child.pid] = parent
    except psutil.Error:
        pass
    return sorted(p for p, parent in found.items() if parent not in found)


def watched_launch(overrides: dict, out: Path, cap_bytes: int, log: Path) -> dict:
    """Launch the run, poll per-rank peaks, kill the launch group above `cap_bytes` in total."""
    params = config.load(PARAMS, overrides)
    sets = [f"--set={k}={json.dumps(v) if not isinstance(v, str) else v}" for k, v in overrides.items()]
    cmd = launch.accelerate_command(params, PARAMS, out, extra_args=[*sets, "--overwrite"])
    env = launch.launch_env(params.run.processes_per_node)
    t0 = time.perf_counter()
    hwm: dict[int, int] = {}
    killed = ""
    with open(log, "w", encoding="utf-8") as f:
        proc = subprocess.Popen(cmd, env=env, stdout=f, stderr=subprocess.STDOUT, start_new_session=True)
        while proc.poll() is None:
            pids = _ranks(proc.pid)
            for pid in pids:
                hwm[pid] = max(hwm.get(pid, 0), _status_kib(pid, "VmHWM") * 1024)
            total, free = sum(_status_kib(pid, "VmRSS") * 1024 for pid in pids), available_bytes()
            if total > cap_bytes or free < MIN_AVAILABLE:  # other work shares the machine
                killed = (f"ranks held {total / GIB:.2f} GiB (cap {cap_bytes / GIB:.2f})" if total > cap_bytes else
                          f"machine's available memory {free / GIB:.2f} GiB < {MIN_AVAILABLE / GIB:.1f} GiB "
                          f"(ranks held {total / GIB:.2f} GiB)")
                for pid in pids:  # torchrun starts each rank in its own session: kill them by id
                    os.kill(pid, signal.SIGKILL)
                os.killpg(proc.pid, signal.SIGKILL)  # then the launchers this script started
                proc.wait()
                break
            time.sleep(0.2)
    rows = records.read_metrics(out / "metrics.jsonl") if (out / "metrics.jsonl").exists() else []
    summary = records.read_json(out / "summary.json") if (out / "summary.json").exists() else {}
    last = rows[-1] if rows else {}
    return {
        "zero3_init": params.run.zero3_init,
        "status": "killed_at_cap" if killed else summary.get("status", f"exit {proc.returncode}"),
        "killed_because": killed or None,
        "steps_completed": last.get("step", 0),
        "losses": [r["loss"] for r in rows],
        "train_peak_bytes_per_rank": last.get("peak_memory_bytes_per_rank"),
        # peak RSS per rank up to each logged step (ru_maxrss at the step's metric line)
        "peak_bytes_per_rank_by_step": {r["step"]: r["peak_memory_bytes_per_rank"] for r in rows},
        "process_peak_bytes_per_rank": [hwm[p] for p in sorted(hwm)],  # VmHWM, whole process
        "plateau_growth_bytes": _plateau_growth(rows),
        "wall_seconds": time.perf_counter() - t0,
        "log": str(log),
    }


def _plateau_growth(rows: list[dict]) -> int | None:
    """The largest rank's rise of its peak RSS over the last two logged steps (None under 3 steps).

    The per-step figures are the peak up to that step (ru_maxrss), so a steady state shows as 0."""
    if len(rows) < 3:
        return None
    return max(b - a for a, b in zip(rows[-2]["peak_memory_bytes_per_rank"], rows[-1]["peak_memory_bytes_per_rank"]))


BASELINE = """
import json, resource, sys
import mt5study.train  # the trainer's imports: torch, transformers, DeepSpeed (via launch), ...
from mt5study import config, launch, train
params = config.load(sys.argv[1])
acc = train._accelerator(launch.deepspeed_config(params), zero3_init=True)  # process group, no model
acc.wait_for_everyone()
from pathlib import Path  # one file per rank: two ranks printing at once interleave their lines
Path(sys.argv[2], f"baseline_rank{acc.process_index}.json").write_text(json.dumps(
    {"rank": acc.process_index, "rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024}))
"""


def baseline() -> list[int]:
    """Peak RSS of each of 2 ranks after imports and process-group setup (no model)."""
    script = OUT / "baseline_probe.py"
    script.write_text(BASELINE)
    cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
           "--master_port", str(launch.free_port()), str(script), str(PARAMS), str(OUT)]
    for old in OUT.glob("baseline_rank*.json"):
        old.unlink()
    r = subprocess.run(cmd, capture_output=True, text=True, env=launch.launch_env(2), timeout=600)
    script.unlink()
    found = [json.loads(f.read_text()) for f in sorted(OUT.glob("baseline_rank*.json"))]
    if r.returncode != 0 or len(found) != 2:
        raise RuntimeError(f"baseline probe failed:\n{r.stderr[-3000:]}")
    return [d["rss_bytes"] for d in sorted(found, key=lambda d: d["rank"])]


def available_bytes() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no MemAvailable in /proc/meminfo")


def main() -> None:
    global MIN_AVAILABLE
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", choices=["after", "before"], help="run one of the two (default both)")
    ap.add_argument("--preset", default=None, help="another model.preset than the params file's (mt5-base)")
    ap.add_argument("--steps", type=int, default=5,
                    help="training steps (default 5: step 1 peaks lower; steps 2-5 show the steady state)")
    ap.add_argument("--cap-gib", type=float, default=None,
                    help="kill a launch whose ranks together hold more (default: available memory - 2 GiB)")
    ap.add_argument("--min-available-gib", type=float, default=MIN_AVAILABLE / GIB,
                    help="stop a launch when the machine's available memory falls below this (default 1.5)")
    ap.add_argument("--start-factor", type=float, default=1.25,
                    help="start a run only with world size x prediction x this + 1 GiB available (default 1.25)")
    a = ap.parse_args()
    if not 1.0 <= a.start_factor <= 2.0:
        raise SystemExit(f"--start-factor must be in [1, 2], got {a.start_factor}")
    MIN_AVAILABLE = int(a.min_available_gib * GIB)
    OUT.mkdir(parents=True, exist_ok=True)
    if a.steps < 2:
        raise SystemExit(f"--steps must be >= 2 (step 1 is not the steady state), got {a.steps}")
    preset = {"model.preset": a.preset} if a.preset else {}
    preset["run.steps"] = a.steps
    params = config.load(PARAMS, preset)
    run, d = params.run, params.data
    est = memory.estimate(params.model.preset, run.zero_stage, run.precision, run.world_size, run.micro_batch,
                          d.input_length, d.target_length)
    base = baseline()
    # memory.estimate counts DeepSpeed's fp32 master partition (optimizer_states), its reduce
    # bucket (buffers) and the shared embedding's two gradients at the end of backward (the
    # steady state from step 2 on); the baseline adds the interpreter, libraries and process group.
    predicted = est["total"] + max(base)
    result = {
        "machine": f"{os.cpu_count()} CPUs, {os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / GIB:.1f} GiB "
                   "(cores and memory shared with other work during the run)",
        "params": str(PARAMS.relative_to(ROOT)), "preset": params.model.preset, "world_size": run.world_size,
        "estimate_bytes": est, "baseline_bytes_per_rank": base,
        "predicted_bytes_per_rank": predicted, "runs": {},
    }
    path = OUT / f"memory_{params.model.preset}_zero3.json"
    need_after = run.world_size * predicted * a.start_factor + GIB
    if path.exists():  # keep the records of runs not made now (skipped, or not asked for)
        result["runs"] = records.read_json(path).get("runs", {})
    for name in ([a.only] if a.only else ["after", "before"]):
        need = need_after + (BEFORE_EXTRA if name == "before" else 0)
        if available_bytes() < need:  # other work holds the memory: measure later, never squeeze it
            print(f"{name}: skipped, {available_bytes() / GIB:.1f} GiB available < {need / GIB:.0f} GiB needed")
            continue
        cap = int(a.cap_gib * GIB) if a.cap_gib else available_bytes() - 2 * GIB
        out = OUT / f"memory_run_{params.model.preset}_{name}"
        rec = watched_launch({**preset, "run.zero3_init": name == "after"}, out, cap,
                             OUT / f"memory_{params.model.preset}_{name}.log")
        rec["cap_bytes"] = cap
        peaks = rec["train_peak_bytes_per_rank"] or rec["process_peak_bytes_per_rank"]
        if peaks:
            rec["ratio_to_prediction"] = max(peaks) / predicted
            # only a run that completed its steps is checked: a stopped one never reached its peak
            rec["within_25_percent"] = (abs(max(peaks) / predicted - 1) <= 0.25
                                        if rec["status"] == "completed" else None)
        result["runs"][name] = rec
        records.write_json_atomic(path, result)
    print(json.dumps(result, indent=2))
    print(f"\npredicted per rank: estimate {est['total'] / GIB:.2f} GiB + baseline {max(base) / GIB:.2f} GiB "
          f"= {predicted / GIB:.2f} GiB")
    for name, rec in result["runs"].items():
        for step, peaks in rec.get("peak_bytes_per_rank_by_step", {}).items():
            print(f"{name:6s} step {step}: peak per rank {[round(x / GIB, 2) for x in peaks]} GiB, "
                  f"ratio {max(peaks) / predicted:.3f} of predicted {predicted / GIB:.2f} GiB")
        if rec.get("plateau_growth_bytes") is not None:
            print(f"{name:6s} peak growth over the last two steps: {rec['plateau_growth_bytes'] / GIB:.3f} GiB")
        tp = rec["train_peak_bytes_per_rank"] or []
        pp = rec["process_peak_bytes_per_rank"]
        print(f"{name:6s} zero3_init={rec['zero3_init']}: {rec['status']}, steps {rec['steps_completed']}; "
              f"training peak per rank {[round(x / GIB, 2) for x in tp]} GiB, process peak "
              f"{[round(x / GIB, 2) for x in pp]} GiB, ratio {rec.get('ratio_to_prediction', float('nan')):.2f}")
    print(f"written {path}")


if __name__ == "__main__":
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))
    main()
