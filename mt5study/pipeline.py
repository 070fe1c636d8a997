"""The default study end to end: notebooks executed by papermill, in order, into outputs/.

A pipeline params file (top-level key `pipeline:`) lists steps; each step is a notebook run with
its params file (papermill injects `params_path`, `out_dir` and `overrides`) or a training launch.
The executed notebooks land in `outputs/notebooks/`, the run folders under `outputs/<name>/`.

Every step reuses finished work only when its params, data, checkpoint and code all match
(records.run_inputs): each run folder's reuse.json says what the last check did and why, and
pipeline.json lists, per step, the folders trained (with the reasons) and reused. `keep_stale`
keeps non-matching results on purpose; every page that shows them then says so.
"""

from __future__ import annotations

import re
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from mt5study import records
from mt5study.config import Section
from mt5study.paths import NOTEBOOKS, OUTPUTS, ROOT

KERNEL = "mt5study"  # registered by scripts/setup.sh (ipykernel install --sys-prefix)


class StepFailed(RuntimeError):
    """A notebook step raised: names the step, the error and the executed notebook."""


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
    keep_stale: bool = False
    """Keep finished results whose params, data or code changed (marked stale on every page)."""
    allow_mixed: bool = False
    """Let the report compare runs computed from different data or code (it refuses otherwise)."""


    @model_validator(mode="after")
    def _reads_earlier_steps(self) -> "Pipeline":
        """A step's parameter naming another step's folder ('outputs/<step>') must come after that
        step, so a rerun of the pipeline recomputes what it reads before it reads it."""
        order = {s.name: i for i, s in enumerate(self.steps)}
        for i, step in enumerate(self.steps):
            for key, value in step.parameters.items():
                if isinstance(value, str) and value.startswith("outputs/"):
                    named = value[len("outputs/"):].split("/")[0]
                    if named in order and order[named] >= i:
                        raise ValueError(f"step {step.name!r}: parameters.{key} reads {value}, written by the later "
                                         f"step {named!r}: put {named!r} before {step.name!r}")
        return self


class PipelineParams(Section):
    pipeline: Pipeline


def resolve(path: str | Path) -> Path:
    """A path from params, relative to the repository root unless absolute."""
    p = Path(path)
    return p if p.is_absolute() else ROOT / p


class ProgressEcho:
    """Where papermill writes a notebook's stdout: the library's progress lines ("[batch_lr] trial
    3/27 …", "[scaling] size 2/4 …", "[qa] fine-tuning from …") go on to the console as the
    kernel prints them, so a 15-minute step is not silent; tables and other output stay in the
    executed notebook only."""

    LINE = re.compile(r"^\[[\w.@=-]+\] ")

    def __init__(self, out=None, prefix: str = "[mt5study study]   "):
        self.out, self.prefix, self._partial = out, prefix, ""

    def write(self, text: str) -> int:
        lines = (self._partial + text).split("\n")
        self._partial = lines.pop()
        for line in lines:
            if self.LINE.match(line):
                print(self.prefix + line, file=self.out or sys.stdout, flush=True)
        return len(text)

    def flush(self) -> None:
        pass


def run_step(step: Step, kernel: str = KERNEL, outputs: Path = OUTPUTS, keep_stale: bool = False,
             allow_mixed: bool = False, sources: dict[str, list[Path]] | None = None) -> dict[str, Any]:
    """Run one step; returns what it did, how long it took, and what it trained or reused."""
    from mt5study import config

    params_path = resolve(step.params) if step.params else None
    overrides = {k: _resolved(v, outputs) for k, v in step.overrides.items()}
    if params_path:
        config.load(params_path, overrides or None)  # refuse bad params before starting
    out_dir = outputs / step.name
    started = datetime.now(timezone.utc).isoformat(timespec="seconds")  # reuse.json times are compared to it
    t0 = time.perf_counter()
    if step.kind == "site":
        from mt5study import site

        site.build(sorted((outputs / "notebooks").glob("*.ipynb")), out_dir, sources=sources)
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
        from mt5study.studies.runner import run_trial  # reuses a matching finished run, resumes a preempted one

        summary = run_trial(out_dir, params_path, overrides, keep_stale=keep_stale)
        result = {"status": summary.get("status")}
        if summary.get("status") != "completed":
            raise RuntimeError(f"step {step.name}: training ended {summary.get('status')}: "
                               f"{summary.get('error') or summary.get('reason') or ''} (see {out_dir})")
    else:
        import papermill

        executed = outputs / "notebooks" / Path(step.notebook).name
        executed.parent.mkdir(parents=True, exist_ok=True)
        offered = {**({"params_path": str(params_path), "overrides": overrides} if params_path else {}),
                   "out_dir": str(out_dir), "keep_stale": keep_stale, "allow_mixed": allow_mixed,
                   **{k: _resolved(v, outputs) for k, v in step.parameters.items()}}
        declared = papermill.inspect_notebook(str(NOTEBOOKS / step.notebook))  # pass only what it takes
        try:
            papermill.execute_notebook(
                str(NOTEBOOKS / step.notebook), str(executed),
                parameters={k: v for k, v in offered.items() if k in declared or k in step.parameters},
                kernel_name=kernel, cwd=str(NOTEBOOKS), progress_bar=False, stdout_file=ProgressEcho(),
            )
        except papermill.PapermillExecutionError as e:  # e.g. the report's refusal to mix data or code
            raise StepFailed(f"step {step.name}: {e.ename}: {e.evalue} (see {executed})") from None
        result = {"status": "completed", "notebook": str(executed)}
    return {"step": step.name, **result, "seconds": time.perf_counter() - t0,
            **decisions(step_folders(step, outputs), since=started)}


def step_folders(step: Step, outputs: Path = OUTPUTS) -> list[Path]:
    """The folders whose numbers a step's page shows: its own, and the folders its parameters name."""
    named = [Path(v) for v in (_resolved(x, outputs) for x in step.parameters.values())
             if isinstance(v, str) and Path(v).is_absolute() and Path(v).is_dir()]
    return [outputs / step.name, *named]


def decisions(folders: list[Path], since: str) -> dict[str, Any]:
    """What the reuse checks decided under `folders` since `since` (ISO time): folders trained or
    built (with the reasons) and reused, from their reuse.json records."""
    trained, reused, stale = [], 0, []
    for folder in folders:
        for run in records.run_folders(folder) if folder.is_dir() else []:
            try:
                entry = records.read_json(run / records.REUSE_FILE)
            except (OSError, ValueError):
                continue
            if entry.get("time_utc", "") < since:
                continue
            if entry.get("action") in ("trained", "built"):
                trained.append({"folder": str(run), "reasons": entry.get("reasons", [])})
            elif entry.get("action") == "kept stale":
                stale.append({"folder": str(run), "reasons": entry.get("reasons", [])})
            else:
                reused += 1
    return {"trained": trained, "reused": reused, "kept_stale": stale}


def _resolved(value: Any, outputs: Path = OUTPUTS) -> Any:
    """Relative 'outputs/...' paths in step parameters and overrides become absolute paths under
    the pipeline's outputs folder (papermill runs elsewhere; a smoke study writes elsewhere)."""
    if isinstance(value, str) and value.startswith("outputs/"):
        return str(outputs / value[len("outputs/"):])
    return value


def run(params: PipelineParams, only: list[str] | None = None, outputs: Path = OUTPUTS,
        keep_stale: bool | None = None) -> list[dict[str, Any]]:
    """Run the pipeline's steps in order (or the named ones) and record their timings and what
    each trained or reused (pipeline.json); keep_stale overrides the params' pipeline.keep_stale."""
    pl = params.pipeline
    keep = pl.keep_stale if keep_stale is None else keep_stale
    steps = [s for s in pl.steps if not only or s.name in only]
    unknown = set(only or []) - {s.name for s in pl.steps}
    if unknown:
        raise ValueError(f"no pipeline step named {sorted(unknown)}")
    outputs = Path(outputs)
    sources = {Path(s.notebook).name: step_folders(s, outputs) for s in pl.steps if s.kind == "notebook"}
    done = []
    if keep:
        print("[mt5study study] keep_stale: finished results are kept even where params, data or code changed "
              "(marked STALE on every page)", flush=True)
    for step in steps:
        print(f"[mt5study study] {step.name} ...", flush=True)
        done.append(run_step(step, pl.kernel, outputs, keep, pl.allow_mixed, sources))
        d = done[-1]
        print(f"[mt5study study] {step.name}: {d['status']} in {d['seconds']:.0f} s; trained {len(d['trained'])}, "
              f"reused {d['reused']}" + (f", KEPT STALE {len(d['kept_stale'])}" if d["kept_stale"] else ""), flush=True)
        for t in d["trained"]:
            print(f"[mt5study study]   trained {Path(t['folder']).relative_to(outputs) if Path(t['folder']).is_relative_to(outputs) else t['folder']}: "
                  f"{'; '.join(t['reasons'])}", flush=True)
        records.write_json_atomic(outputs / "pipeline.json", {"steps": done, "keep_stale": keep, "env": records.environment()})
    return done
