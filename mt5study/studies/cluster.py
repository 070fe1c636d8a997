"""A study on Slurm: one array task per grid trial, then the study's notebook renders the results.

    mt5study slurm submit-study --params params/cpu/precision.yaml --notebook 02_precision_study.ipynb

writes under OUT (default outputs/<study name>):
    slurm/<study>_trials_<time>.sbatch     the array: task i trains trial i (`mt5study trial`)
    slurm/<study>_notebook_<time>.sbatch   papermill of the notebook, after the array (afterany);
                                            it reuses the trials' folders and builds the tables
    <notebook>.ipynb                        the executed notebook
Every trial is validated before anything is submitted. A failed task leaves its log and a
`failed` summary; the other tasks go on (the notebook job runs after all of them, `afterany`).
Array tasks are preemption-safe like every mt5study job (USR1 -> checkpoint -> requeue ->
`mt5study trial` resumes the preempted run).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from mt5study import config
from mt5study.paths import NOTEBOOKS, ROOT
from mt5study.records import write_text_atomic
from mt5study.slurm.client import check_slurm, record_submission, submit_script
from mt5study.slurm.render import array_spec, job_script, python_for, quote, render_command
from mt5study.slurm.submit import slurm_section
from mt5study.slurm_config import SlurmConfig
from mt5study.studies.config import StudyParams, validate_trials
from mt5study.studies.runner import study_dir


def render_trials_array(study_path: Path, n_trials: int, out: Path, cfg: SlurmConfig, name: str) -> str:
    """The sbatch array script: task i runs `mt5study trial --index i`."""
    body = [
        f"OUT_DIR={quote(out / 'grid' / 'trials')}",  # where a preempted summary.json shows up
        'CMD=("$PY" -m mt5study.cli trial --params ' + quote(study_path) + ' --out ' + quote(out)
        + ' --index "${SLURM_ARRAY_TASK_ID:-0}")',
        "RESUME=()",  # `mt5study trial` resumes a preempted trial by itself
    ]
    return job_script(cfg, what=f"{n_trials} trials of study {name}", job_name=f"mt5-{name}-trials",
                      log=out / "slurm" / "logs" / "%x_%A_%a.log", workdir=ROOT, python=python_for(cfg),
                      body=body, array=array_spec(n_trials, cfg.array_throttle))


def submit_study(study_path: str | Path, notebook: str | None = None, out: str | Path | None = None,
                 dry_run: bool = False, echo: Any = print) -> list[str]:
    """Validate the study, sbatch the trials array and (if given) the notebook after it."""
    study_path = Path(study_path).resolve()
    params = config.load(study_path)
    if not isinstance(params, StudyParams):
        raise config.ConfigError(f"{study_path}: not a study params file (no top-level `study:`)")
    _, trials = validate_trials(params, str(study_path))
    cfg = slurm_section(params)
    out = study_dir(params, out).resolve()
    name, stamp = params.study.name, datetime.now().strftime("%Y%m%d-%H%M%S")
    scripts = [(out / "slurm" / f"{name}_trials_{stamp}.sbatch", render_trials_array(study_path, len(trials), out, cfg, name))]
    if notebook:
        nb = (NOTEBOOKS / notebook) if not Path(notebook).is_absolute() else Path(notebook)
        if not nb.is_file():
            raise config.ConfigError(f"{nb}: notebook not found")
        argv = [python_for(cfg), "-m", "papermill", str(nb), str(out / nb.name), "-k", cfg.kernel,
                "--log-output", "--no-progress-bar", "-p", "params_path", str(study_path), "-p", "out_dir", str(out)]
        scripts.append((out / "slurm" / f"{name}_notebook_{stamp}.sbatch",
                        render_command(argv, cfg, job_name=f"mt5-{name}-notebook", resume_args=(),
                                             log=out / "slurm" / "logs" / "%x_%j.log", watch_dir=out)))
    if dry_run:
        for path, text in scripts:
            echo(f"# ---- {path} (not written: dry run)\n{text}")
        return []
    check_slurm()
    (out / "slurm" / "logs").mkdir(parents=True, exist_ok=True)
    ids: list[str] = []
    for path, text in scripts:
        write_text_atomic(path, text)
        job_id = submit_script(path, after=ids[0] if ids else None)
        ids.append(job_id)
        record_submission(out, {"job_id": job_id, "script": str(path), "study": str(study_path),
                            "trials": len(trials), "time": datetime.now().isoformat(timespec="seconds")})
        echo(f"submitted job {job_id}: {path}")
    return ids


def run_one_trial(study_path: str | Path, index: int, out: str | Path | None = None) -> dict[str, Any]:
    """Train trial `index` of the study's grid (what one array task runs)."""
    from mt5study.studies.runner import run_trial

    params = config.load(study_path)
    base_path, trials = validate_trials(params, str(study_path))
    if not 0 <= index < len(trials):
        raise config.ConfigError(f"{study_path}: trial index {index} out of range (the grid has {len(trials)})")
    name, ov = trials[index]
    return run_trial(study_dir(params, out) / "grid" / "trials" / name, base_path, ov)
