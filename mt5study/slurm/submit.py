"""Submitting notebooks: one job per params file, or one array over many, all validated first.

    OUT/<params stem>/<notebook>.ipynb      executed notebook; the notebook's out_dir is OUT/<params stem>
    OUT/slurm/<job>_<time>.sbatch           the job script (and .manifest: one params path a line)
    OUT/slurm/logs/<job>_<id>.log           one log per job, <job>_<array id>_<task>.log per task
    OUT/slurm/submissions.jsonl             one line per submitted job: id, script, params
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any, Sequence

from mt5study import config
from mt5study.config import ConfigError
from mt5study.paths import OUTPUTS
from mt5study.records import write_text_atomic
from mt5study.slurm.client import SlurmError, check_slurm, record_submission, submit_script
from mt5study.slurm.render import render_array, render_job
from mt5study.slurm_config import SlurmConfig


def slurm_section(params: Any) -> SlurmConfig:
    """The params' `slurm:` section, or the defaults when it has none."""
    return getattr(params, "slurm", None) or SlurmConfig()


def check_node_count(params: Any, source: str | Path) -> None:
    """A training params file asks Slurm for as many nodes as its run spans (slurm.nodes = run.nodes)."""
    run = getattr(params, "run", None)
    if run is None or not hasattr(params, "slurm"):
        return  # not a training params file
    nodes = slurm_section(params).nodes
    if nodes != run.nodes:
        given = "" if params.slurm is not None else " (no slurm section: the default)"
        raise ConfigError(f"{source}: slurm.nodes={nodes}{given} but run.nodes={run.nodes}: the job would "
                          f"allocate {nodes} node(s) for a run that spans {run.nodes}")


def load_resources(params_files: Sequence[str | Path]) -> list[SlurmConfig]:
    """Validate every params file (all of them, then raise once) and return their slurm sections."""
    errors, found = [], []
    for path in params_files:
        try:
            params = config.load(path)
            check_node_count(params, path)
            found.append(slurm_section(params))
        except ConfigError as e:
            errors.append(str(e))
    if errors:
        raise ConfigError("\n".join(errors) + ("\n" if len(errors) > 1 else "; ") + "nothing was submitted")
    return found


def submit(notebook: str | Path, params_files: Sequence[str | Path], out: str | Path | None = None, *,
           array: bool = False, dry_run: bool = False, echo: Any = print) -> list[str]:
    """Validate all params, write job script(s) under OUT/slurm and sbatch them; returns job ids."""
    notebook = Path(notebook).resolve()
    if not notebook.is_file():
        raise ConfigError(f"{notebook}: notebook not found")
    if not params_files:
        raise ConfigError("no params files given")
    params = [Path(p).resolve() for p in params_files]
    cfgs = load_resources(params)
    stems = [p.stem for p in params]
    if len(set(stems)) != len(stems):
        raise ConfigError(f"params files share a name, so their out_dirs would collide: {sorted(map(str, params))}")
    if array and any(c != cfgs[0] for c in cfgs[1:]):
        raise ConfigError(f"one array asks for one set of resources, but the slurm sections of {[str(p) for p in params]} differ")
    out = Path(out).resolve() if out else (OUTPUTS / notebook.stem).resolve()
    stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
    plan: list[tuple[Path, str, list[Path]]] = []  # (script path, script text, params it runs)
    manifest = None
    if array:
        name = f"mt5-{notebook.stem}"
        manifest = out / "slurm" / f"{name}_{stamp}.manifest"
        plan.append((out / "slurm" / f"{name}_{stamp}.sbatch",
                     render_array(notebook, manifest, len(params), out, cfgs[0], job_name=name), params))
    else:
        for path, cfg in zip(params, cfgs):
            plan.append((out / "slurm" / f"mt5-{path.stem}_{stamp}.sbatch", render_job(notebook, path, out, cfg), [path]))
    if dry_run:
        for script, text, _ in plan:
            echo(f"# ---- {script} (not written: dry run)\n{text}")
        if manifest is not None:
            echo(f"# ---- {manifest}\n" + "".join(f"{p}\n" for p in params))
        return []
    check_slurm()
    (out / "slurm" / "logs").mkdir(parents=True, exist_ok=True)  # Slurm does not create log folders
    if manifest is not None:
        write_text_atomic(manifest, "".join(f"{p}\n" for p in params))
    ids: list[str] = []
    for script, text, runs in plan:
        write_text_atomic(script, text)
        try:
            job_id = submit_script(script)
        except SlurmError as e:
            raise SlurmError(f"{e}\nsubmitted before the failure: {ids or 'none'}") from None
        ids.append(job_id)
        record_submission(out, {"job_id": job_id, "script": str(script), "notebook": str(notebook), "array": array,
                      "params": [str(p) for p in runs], "time": datetime.now().isoformat(timespec="seconds")})
        echo(f"submitted job {job_id}: {script}")
    return ids
