"""The sharded ETL on datatrove executors: the same five stages (mt5study.data.stages) run as
processes on this machine (`engine.executor: local`) or as chained Slurm job arrays (`slurm`).

Why datatrove: it is the pipeline library behind FineWeb, with a light core, and gives what
this needs without a home-made scheduler: one pipeline definition for a local executor and for
Slurm job arrays, `depends=` chaining of stages (afterok dependencies on Slurm), and a
completions folder per stage, so a re-run launches only the tasks that did not finish.

Locally every task runs in its own process (datatrove's executor with local_tasks=1 for that
rank), so a task that fails (say ShardReadError) does not stop the others; the stage then
raises naming every failed task, and a re-run redoes only those. The output folder holds the
run's state: a resume checks the inputs against the plan (InputsChangedError) and the params
against those it started with.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from multiprocessing import get_context
from pathlib import Path
from typing import Any

from mt5study.data.config import ETLConfig, ETLParams
from mt5study.data.output import SPLITS, ETLError, is_complete
from mt5study.data.plan import load_or_write_plan
from mt5study.data.shards import Layout, read_json, split_hash, verify_shards, write_json
from mt5study.data.near_dedup import NEAR_STAGE_CLASSES, NEAR_STAGES
from mt5study.data.stages import STAGES, check_totals, merged_counts
from mt5study.data.stages import STAGE_CLASSES as _BASE_STAGE_CLASSES

STAGE_CLASSES = {**_BASE_STAGE_CLASSES, **NEAR_STAGE_CLASSES}


def active_stages(cfg: ETLConfig) -> tuple[str, ...]:
    """The stages a run has: the five, with the MinHash ones after the exact dedup where
    engine.near_dedup.enabled."""
    if not cfg.engine.near_dedup.enabled:
        return STAGES
    at = STAGES.index("dedup") + 1
    return STAGES[:at] + NEAR_STAGES + STAGES[at:]

FORMAT = "mt5study-etl-sharded/1"


def run_sharded(params: ETLParams, out: str | Path, overwrite: bool = False) -> dict[str, Any]:
    """Run (or resume) the sharded ETL into `out`; returns the manifest (OUT/manifest.json)."""
    from mt5study.config import to_dict

    cfg, out = params.etl, Path(out).resolve()
    lay = Layout(out)
    if out.exists():
        if is_complete(out) and not overwrite:
            raise ETLError(f"{out} already holds a completed ETL output (manifest.json); pass overwrite=True "
                           "(CLI: --overwrite) to replace it")
        if not (is_complete(out) or lay.engine.is_dir()) and any(out.iterdir()):
            raise ETLError(f"{out} exists and is not an empty folder or an ETL output; refusing to write there")
        if overwrite:  # a completed output or an unfinished run: start again
            shutil.rmtree(out)
    started = lay.engine / "params.json"
    if started.exists():
        old = read_json(started)
        if _without_run_knobs(old) != _without_run_knobs(to_dict(params)):
            raise ETLError(f"{out} holds an unfinished run made with other params ({started}); "
                           "pass overwrite=True to start again")
    else:
        write_json(started, to_dict(params))
    load_or_write_plan(cfg, lay.engine)
    t0 = time.perf_counter()
    if cfg.engine.executor == "slurm":
        jobs = run_slurm(cfg, out)
        if not cfg.engine.slurm.wait:  # submitted only: the merge stage writes the manifest later
            return {"format": FORMAT, "status": "submitted", "slurm_jobs": jobs}
    else:
        run_local(cfg, out)
    manifest = read_json(out / "manifest.json")
    timings = read_json(lay.engine / "timings.json") if (lay.engine / "timings.json").exists() else {}
    timings["wall_time_s"] = round(time.perf_counter() - t0, 2)
    write_json(lay.engine / "timings.json", timings)
    return manifest


def _without_run_knobs(params: dict[str, Any]) -> dict[str, Any]:
    """Params that decide the output: not how many tasks, workers or which executor run it."""
    p = json.loads(json.dumps(params))
    eng = p["etl"]["engine"]
    for key in ("executor", "tasks", "workers", "slurm", "start_delay_s"):
        eng.pop(key, None)
    p["etl"].pop("num_proc", None)
    return p


# ----------------------------------------------------------------------------- local


def _run_rank(stage: str, cfg: ETLConfig, out: str, rank: int, tasks: int) -> None:
    """One task of one stage through datatrove's local executor (skips it if completed)."""
    from datatrove.executor import LocalPipelineExecutor

    step = STAGE_CLASSES[stage](cfg, out)
    LocalPipelineExecutor([step], tasks=tasks, workers=1, local_tasks=1, local_rank_offset=rank,
                          logging_dir=str(Layout(out).logs(stage)), skip_completed=True).run()


def _run_rank_safely(stage: str, cfg: ETLConfig, out: str, rank: int, tasks: int) -> str | None:
    """None, or the task's error as 'ErrorName: message' (the task is then not completed)."""
    try:
        _quiet_datatrove()
        _run_rank(stage, cfg, out, rank, tasks)
        return None
    except Exception as e:  # noqa: BLE001 (reported per task; the stage raises after all tasks)
        return f"{type(e).__name__}: {e}"


def _quiet_datatrove() -> None:
    """datatrove logs through loguru to stderr; keep warnings and errors only on the console
    (every task's full log stays in its logging folder)."""
    from loguru import logger

    logger.remove()
    logger.add(sys.stderr, level="WARNING")


def completed_ranks(out: str | Path, stage: str) -> set[int]:
    """Tasks of a stage that datatrove marked completed."""
    folder = Layout(out).logs(stage) / "completions"
    return {int(p.name) for p in folder.iterdir()} if folder.is_dir() else set()


def task_seconds(out: str | Path, stage: str) -> dict[int, float]:
    """Seconds each completed task of a stage spent in its step (datatrove's stats/<rank>.json)."""
    folder = Layout(out).logs(stage) / "stats"
    if not folder.is_dir():
        return {}
    return {int(p.stem): float(read_json(p)[0]["time_stats"].get("total", 0.0)) for p in sorted(folder.glob("*.json"))}


def run_local(cfg: ETLConfig, out: Path, stages: tuple[str, ...] | None = None) -> dict[str, float]:
    """Stages in order on this machine (all of the run's by default), engine.workers tasks at a
    time; seconds per stage."""
    stages = active_stages(cfg) if stages is None else stages
    timings: dict[str, float] = {}
    lay = Layout(out)
    pool = None
    try:
        for stage in stages:
            t0 = time.perf_counter()
            tasks = STAGE_CLASSES[stage].tasks(cfg)
            todo = [r for r in range(tasks) if r not in completed_ranks(out, stage)]
            workers = min(cfg.engine.workers, len(todo))
            if workers > 1:
                if pool is None:  # spawn, not fork: the parent may hold threads (tokenizers, torch)
                    pool = ProcessPoolExecutor(cfg.engine.workers, mp_context=get_context("spawn"))
                futures = {r: pool.submit(_run_rank_safely, stage, cfg, str(out), r, tasks) for r in todo}
                errors = {r: f.result() for r, f in futures.items()}
            else:
                errors = {r: _run_rank_safely(stage, cfg, str(out), r, tasks) for r in todo}
            failed = {r: e for r, e in errors.items() if e}
            timings[stage] = round(time.perf_counter() - t0, 3)
            if failed:
                raise ETLError(f"stage {stage}: {len(failed)} of {tasks} tasks failed (the others completed; "
                               "a re-run redoes only these): "
                               + "; ".join(f"task {r}: {e}" for r, e in sorted(failed.items())))
    finally:
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)
        old = read_json(lay.engine / "timings.json") if (lay.engine / "timings.json").exists() else {}
        write_json(lay.engine / "timings.json", {**old, **{f"{k}_s": v for k, v in timings.items()}})
    return timings


# ----------------------------------------------------------------------------- slurm


def slurm_executors(cfg: ETLConfig, out: Path) -> list[Any]:
    """One SlurmPipelineExecutor per stage, each an array of the stage's tasks, chained with
    depends= (afterok): the last one launches the whole chain."""
    from datatrove.executor import SlurmPipelineExecutor

    s = cfg.engine.slurm
    venv = Path(s.venv) if s.venv else Path(sys.prefix)
    executors: list[Any] = []
    for stage in active_stages(cfg):
        executors.append(SlurmPipelineExecutor(
            [STAGE_CLASSES[stage](cfg, str(out))], tasks=STAGE_CLASSES[stage].tasks(cfg), time=s.time,
            partition=s.partition, cpus_per_task=s.cpus_per_task, mem_per_cpu_gb=s.mem_per_cpu_gb,
            job_name=f"mt5etl-{stage}", logging_dir=str(Layout(out).logs(stage)),
            depends=executors[-1] if executors else None, env_command=f"source {venv}/bin/activate",
            slurm_logs_folder=str(Layout(out).engine / "slurm_logs" / stage), qos="", mail_type="NONE",
            requeue=False, randomize_start_duration=cfg.engine.start_delay_s,
        ))
    return executors


def submit_slurm(cfg: ETLConfig, out: Path) -> dict[str, str]:
    """Submit the chained stages (only tasks not completed); job id per stage ('-1': nothing to run)."""
    executors = slurm_executors(cfg, out)
    _quiet_datatrove()
    executors[-1].run()
    jobs = {stage: str(ex.job_id) for stage, ex in zip(active_stages(cfg), executors)}
    write_json(Layout(out).engine / "slurm_jobs.json", jobs)
    return jobs


def cancel_slurm(jobs: dict[str, str]) -> list[str]:
    """Cancel a run's stage arrays and the jobs waiting on them (datatrove's merge_stats job of
    each stage); returns the ids cancelled."""
    ids = {j for j in jobs.values() if j not in ("-1", "None")}
    q = subprocess.run(["squeue", "--noheader", "--format=%i %E"], capture_output=True, text=True, check=False)
    for line in q.stdout.splitlines():
        job, _, dep = line.partition(" ")
        if any(f":{j}_" in dep or dep.endswith(f":{j}") or f":{j}(" in dep for j in ids):
            ids.add(job.split("_")[0])
    if ids:
        subprocess.run(["scancel", *sorted(ids)], capture_output=True, check=False)
    return sorted(ids)


def _in_queue(job_ids: list[str]) -> bool:
    ids = [j for j in job_ids if j not in ("-1", "None")]
    if not ids:
        return False
    q = subprocess.run(["squeue", "--noheader", "--format=%i", "--jobs", ",".join(ids)],
                       capture_output=True, text=True, check=False)
    return bool(q.stdout.strip())


def run_slurm(cfg: ETLConfig, out: Path) -> dict[str, str]:
    """Submit, then (engine.slurm.wait) wait until the chain has left the queue or a stage can
    never start; tasks not completed are then an error naming them, the waiting jobs cancelled."""
    jobs = submit_slurm(cfg, out)
    if not cfg.engine.slurm.wait:
        return jobs
    while _in_queue(list(jobs.values())) and not _never_satisfied(list(jobs.values())):
        time.sleep(cfg.engine.slurm.poll_s)
    if not is_complete(out):
        missing = {st: sorted(set(range(STAGE_CLASSES[st].tasks(cfg))) - completed_ranks(out, st))
                   for st in active_stages(cfg)}
        missing = {k: v for k, v in missing.items() if v}
        left = cancel_slurm(jobs)  # what waits on a failed stage would never start
        raise ETLError(f"Slurm jobs {jobs} ended without a manifest; tasks not completed: {missing} "
                       f"(logs in {Layout(out).engine / 'slurm_logs'}; cancelled {left}); a re-run launches "
                       "only the tasks not completed")
    return jobs


def _never_satisfied(job_ids: list[str]) -> bool:
    """A stage of the chain waits on one that failed (a task failed or was cancelled)."""
    ids = [j for j in job_ids if j not in ("-1", "None")]
    q = subprocess.run(["squeue", "--noheader", "--format=%r", "--jobs", ",".join(ids)],
                       capture_output=True, text=True, check=False)
    return "DependencyNeverSatisfied" in q.stdout


# ----------------------------------------------------------------------------- manifest


def write_manifest(cfg: ETLConfig, out: Path) -> dict[str, Any]:
    """Verify every shard against its recorded hash, merge the counts, write manifest.json last."""
    from mt5study import records
    from mt5study.config import to_dict
    from mt5study.data.corruption import span_corruption_lengths
    from mt5study.data.sampling import natural_shares
    from mt5study.data.tokenizer import EOS_ID, PAD_ID, tokenizer_hash, vocab_and_sentinels
    from mt5study.data.output import LABEL_PAD

    lay = Layout(out)
    plan = read_json(lay.engine / "plan.json")
    encoded = verify_shards(lay, plan)
    langs, tasks = merged_counts(cfg, lay, plan, encoded)
    check_totals(langs, tasks)
    tok = read_json(lay.engine / "tokenizer.json")
    probs = tok["probabilities"]
    kept = [lang for lang in langs if lang in probs]
    unit = "docs" if cfg.sampling.size_unit == "documents" else "chars"
    sizes = {lang: langs[lang]["kept"][unit] for lang in kept}
    vocab_size, sentinels = vocab_and_sentinels(lay.tokenizer)
    raw_len, targets_len = span_corruption_lengths(cfg.corruption.inputs_length, cfg.corruption.noise_density,
                                                   cfg.corruption.mean_noise_span_length)
    shard_list = [{"id": s["id"], "lang": s["lang"], "task": k % cfg.engine.tasks,
                   **{split: encoded[s["id"]]["files"][split] for split in SPLITS}}
                  for k, s in enumerate(plan["shards"])]
    content = {split: split_hash([(s["id"], s[split]["sha256"]) for s in shard_list]) for split in SPLITS}
    from mt5study.data.etl import etl_inputs

    params = {"etl": to_dict_etl(cfg)}
    manifest = {
        "format": FORMAT,
        "params": params,
        "source": {**etl_inputs_source(cfg), "bad_records": {k: v["bad_records"] for k, v in langs.items()}},
        "languages": kept,
        "dropped_languages": {lang: "no documents left after cleaning" for lang in langs if lang not in kept},
        "size_unit": cfg.sampling.size_unit,
        "sizes": sizes,
        "natural_shares": natural_shares(sizes),
        "probabilities": probs,
        "split_probabilities": {s: {lang: probs[lang] for lang in kept if langs[lang]["examples"][s] > 0}
                                for s in SPLITS},
        "alpha": cfg.sampling.alpha,
        "cap": cfg.sampling.cap,
        "seed": cfg.seed,
        "mix_block": cfg.engine.mix_block,
        "counts": langs,
        "per_task": tasks,
        "shards": shard_list,
        "engine": {"executor": cfg.engine.executor, "tasks": cfg.engine.tasks, "dedup_buckets": cfg.engine.dedup_buckets,
                   "files_per_shard": cfg.engine.files_per_shard, "datatrove": _version("datatrove"),
                   **({"near_dedup": cfg.engine.near_dedup.model_dump()} if cfg.engine.near_dedup.enabled else {})},
        "inputs_length": cfg.corruption.inputs_length,
        "targets_length": targets_len,
        "raw_tokens_length": raw_len,
        "noise_density": cfg.corruption.noise_density,
        "mean_noise_span_length": cfg.corruption.mean_noise_span_length,
        "pad_id": PAD_ID,
        "label_pad_id": LABEL_PAD,
        "eos_id": EOS_ID,
        "vocab_size": vocab_size,
        "tokenizer": {**tok["record"], "sha256": tokenizer_hash(lay.tokenizer),
                      "sentinel_ids": [sentinels[0], sentinels[-1]], "extra_ids": len(sentinels)},
        "num_examples": {s: sum(r["examples"][s] for r in langs.values()) for s in SPLITS},
        "content_sha256": content,
        "environment": records.environment(),
        "inputs": etl_inputs(ETLParams(etl=cfg)),
    }
    write_json(out / "manifest.json", manifest)  # last: its presence marks completion
    return manifest


def to_dict_etl(cfg: ETLConfig) -> dict[str, Any]:
    return cfg.model_dump(mode="json")


def etl_inputs_source(cfg: ETLConfig) -> dict[str, Any]:
    from mt5study.data.sources import make_source

    return make_source(cfg.source).describe()


def _version(pkg: str) -> str | None:
    from importlib import metadata

    try:
        return metadata.version(pkg)
    except metadata.PackageNotFoundError:
        return None
