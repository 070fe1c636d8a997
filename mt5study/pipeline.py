"""The default study end to end: notebooks executed by papermill, in order, into outputs/.

A pipeline params file (top-level key `pipeline:`) lists steps; each step is a notebook run with
its params file (papermill injects `params_path`, `out_dir` and `overrides`) or a training launch.
The executed notebooks land in `outputs/notebooks/`, the run folders under `outputs/<name>/`.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mt5study import records
from mt5study.config import Section
from mt5study.paths import NOTEBOOKS, OUTPUTS, ROOT

KERNEL = "mt5study"  # registered by scripts/setup.sh (ipykernel install --sys-prefix)


class Step(Section):
    name: str = Field(pattern=r"^[A-Za-z0-9_.-]+$")
    """Step name; also the output folder outputs/<name>."""
    kind: Literal["notebook", "train", "site"] = "notebook"
    """notebook: papermill; train: a training launch; site: the executed notebooks as HTML."""
    notebook: str | None = None
    """Notebook under notebooks/ (kind=notebook)."""
    params: str | None = None
    """Params file, relative to the repository root (injected as `params_path`)."""
    overrides: dict[str, Any] = {}
    parameters: dict[str, Any] = {}
    """Further notebook parameters, e.g. the folders a report reads."""

    @model_validator(mode="after")
    def _notebook_named(self) -> "Step":
        if self.kind == "notebook" and not self.notebook:
            raise ValueError(f"step {self.name!r}: kind=notebook needs `notebook`")
        if self.kind == "train" and not self.params:
            raise ValueError(f"step {self.name!r}: kind=train needs `params`")
        return self


class Pipeline(Section):
    steps: list[Step] = Field(min_length=1)
    kernel: str = KERNEL


class PipelineParams(Section):
    pipeline: Pipeline


def resolve(path: str | Path) -> Path:
    """A path from params, relative to the repository root unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


def run_step(step: Step, kernel: str = KERNEL, outputs: Path = OUTPUTS) -> dict[str, Any]:
    """Run one step; returns what it did and how long it took."""
    from mt5study import config

    params_path = resolve(step.params) if step.params else None
    if params_path:
        config.load(params_path, step.overrides or None)  # refuse bad params before starting
    out_dir = outputs / step.name
    t0 = time.perf_counter()
    if step.kind == "site":
        from mt5study import site

        site.build(sorted((outputs / "notebooks").glob("*.ipynb")), out_dir)
        result = {"status": "completed", "index": str(out_dir / "index.html")}
        try:
            reports = site.check(out_dir)
        except Exception as e:  # noqa: BLE001 (no Chromium here: the site stands, unchecked)
            result["check"] = f"not checked: {type(e).__name__}: {e}"[:300]
        else:
            records.write_json_atomic(out_dir / "check.json", reports)
            bad = [r["page"] for r in reports if not r["ok"]]
            result["check"] = f"{len(reports)} pages, {len(bad)} with problems" + (f": {bad}" if bad else "")
            if bad:
                result["status"] = "failed"
    elif step.kind == "train":
        from mt5study.studies.runner import run_trial  # reuses a finished run, resumes a preempted one

        summary = run_trial(out_dir, params_path, dict(step.overrides))
        result = {"status": summary.get("status")}
        if summary.get("status") != "completed":
            raise RuntimeError(f"step {step.name}: training ended {summary.get('status')}: "
                               f"{summary.get('error') or summary.get('reason') or ''} (see {out_dir})")
    else:
        import papermill

        executed = outputs / "notebooks" / Path(step.notebook).name
        executed.parent.mkdir(parents=True, exist_ok=True)
        papermill.execute_notebook(
            str(NOTEBOOKS / step.notebook), str(executed),
            parameters={**({"params_path": str(params_path), "overrides": dict(step.overrides)} if params_path else {}),
                        "out_dir": str(out_dir), **{k: _resolved(v) for k, v in step.parameters.items()}},
            kernel_name=kernel, cwd=str(NOTEBOOKS), progress_bar=False,
        )
        result = {"status": "completed", "notebook": str(executed)}
    return {"step": step.name, **result, "seconds": time.perf_counter() - t0}


def _resolved(value: Any) -> Any:
    """Relative 'outputs/...' paths in step parameters become absolute (papermill runs elsewhere)."""
    if isinstance(value, str) and value.startswith("outputs/"):
        return str(OUTPUTS / value[len("outputs/"):])
    return value


def run(params: PipelineParams, only: list[str] | None = None, outputs: Path = OUTPUTS) -> list[dict[str, Any]]:
    """Run the pipeline's steps in order (or the named ones) and record their timings."""
    steps = [s for s in params.pipeline.steps if not only or s.name in only]
    unknown = set(only or []) - {s.name for s in params.pipeline.steps}
    if unknown:
        raise ValueError(f"no pipeline step named {sorted(unknown)}")
    done = []
    for step in steps:
        print(f"[mt5study study] {step.name} ...", flush=True)
        done.append(run_step(step, params.pipeline.kernel, outputs))
        print(f"[mt5study study] {step.name}: {done[-1]['status']} in {done[-1]['seconds']:.0f} s", flush=True)
        records.write_json_atomic(outputs / "pipeline.json", {"steps": done, "env": records.environment()})
    return done
