"""`mt5study` command line: train (one rank), launch (all ranks here), etl, study, trial, slurm,
info, faults.

Every command validates its params before anything starts; a ConfigError exits with code 2. A
wrong flag, a missing file or an output folder that cannot be written is one line on stderr and a
non-zero exit, never a traceback; a folder is tried before anything is launched into it.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

from mt5study import config
from mt5study.launch import EXIT_CONFIG, EXIT_FAILED


class _Parser(argparse.ArgumentParser):
    """argparse with its errors on one line (usage is one `-h` away)."""

    def error(self, message: str):  # noqa: D102
        self.exit(EXIT_CONFIG, f"{self.prog}: error: {message} (see {self.prog} -h)\n")


def check_writable(folder: str | Path, what: str = "--out") -> None:
    """Raise OSError naming `folder` unless a file can be created in it or in the nearest existing
    folder above it (the run would create it). Root ignores permissions, so this tries a file."""
    p = Path(folder).absolute()
    while not p.exists():
        p = p.parent
    if not p.is_dir():
        raise NotADirectoryError(errno.ENOTDIR, f"{what} {folder}: {p} is not a folder")
    try:
        with tempfile.TemporaryFile(dir=p, prefix=".mt5study-write-check-"):
            pass
    except OSError as e:
        raise OSError(e.errno, f"{what} {folder} cannot be written ({p}: {e.strerror})") from e


def _overrides(items: list[str] | None) -> dict[str, Any]:
    return dict(config.parse_override(s) for s in items or [])


def _add_params(p: argparse.ArgumentParser) -> None:
    p.add_argument("--params", required=True, help="params YAML file")
    p.add_argument("--out", required=True, help="output folder of the run")
    p.add_argument("--set", action="append", metavar="KEY=VALUE", help="override, e.g. run.steps=10")
    p.add_argument("--overwrite", action="store_true", help="replace a completed run in --out")


def cmd_train(a: argparse.Namespace) -> int:
    from mt5study.train import RunExists, train

    params = config.load(a.params, _overrides(a.set))
    check_writable(a.out)
    try:
        code = train(params, a.out, resume=a.resume, overwrite=a.overwrite, stop_at_step=a.stop_at_step)
    except RunExists as e:
        print(f"mt5study train: {e}", file=sys.stderr)
        return EXIT_FAILED
    _release_process_group()
    return code


def _release_process_group() -> None:
    """A launched rank tears its process group down before the interpreter exits. Left to
    interpreter shutdown, gloo's worker threads can still be joinable when their owner is destroyed
    and the rank aborts ("terminate called without an active exception", exit code -6) after a run
    that had finished or checkpointed (seen once in CI, 2026-12-01, on a preempted 2-rank ZeRO-3
    run). Every rank returns from train() past a barrier, so all of them get here. One process
    (WORLD_SIZE unset or 1, or train() called in-process) keeps its state."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def cmd_launch(a: argparse.Namespace) -> int:
    from mt5study.launch import accelerate_command, call_forwarding_signals, exit_code, launch_env

    params = config.load(a.params, _overrides(a.set))
    extra = [f"--set={s}" for s in a.set or []]
    extra += ["--resume"] if a.resume else []
    extra += ["--overwrite"] if a.overwrite else []
    extra += ["--stop-at-step", str(a.stop_at_step)] if a.stop_at_step is not None else []
    cmd = accelerate_command(params, a.params, a.out, extra_args=extra)
    if a.dry_run:
        print(" ".join(cmd))
        return 0
    check_writable(a.out)
    return exit_code(a.out, call_forwarding_signals(cmd, launch_env(params.run.processes_per_node)))


def cmd_etl(a: argparse.Namespace) -> int:
    from mt5study.data.etl import ETLError, run
    from mt5study.data.sources import SourceError

    params = config.load(a.params, _overrides(a.set))
    check_writable(a.out)
    try:
        manifest = run(params, a.out, overwrite=a.overwrite)
    except (ETLError, SourceError) as e:
        print(f"mt5study etl: {e}", file=sys.stderr)
        return EXIT_FAILED
    if manifest.get("status") == "submitted":  # engine.executor slurm with wait: false
        print(f"mt5study etl: submitted {manifest['slurm_jobs']}")
        return 0
    print(f"mt5study etl: wrote {a.out} ({len(manifest.get('languages', []))} languages)")
    return 0


def cmd_study(a: argparse.Namespace) -> int:
    from mt5study import pipeline

    params = config.load(a.pipeline)
    if a.outputs:
        check_writable(a.outputs, "--outputs")
    steps = pipeline.run(params, only=a.only, outputs=Path(a.outputs) if a.outputs else pipeline.OUTPUTS,
                         keep_stale=True if a.keep_stale else None)
    return 0 if all(s["status"] == "completed" for s in steps) else EXIT_FAILED


def cmd_trial(a: argparse.Namespace) -> int:
    from mt5study.launch import status_exit_code
    from mt5study.studies.cluster import run_one_trial

    if a.out:
        check_writable(a.out)
    summary = run_one_trial(a.params, a.index, a.out)
    print(f"mt5study trial {a.index}: {summary.get('status')}")
    return status_exit_code(summary.get("status"))


def cmd_info(a: argparse.Namespace) -> int:
    from mt5study.model import PRESETS, RELEASED_PARAMETERS, build

    for name in PRESETS:
        n = build(name, device="meta").num_parameters()
        ref = RELEASED_PARAMETERS.get(name)
        print(f"{name:10s} {n:>15,d}" + (f"  (released: {ref:,d})" if ref else ""))
    return 0


def cmd_faults(a: argparse.Namespace) -> int:
    from mt5study import faults

    if a.json:
        check_writable(Path(a.json).parent, "--json")
    return faults.main(a.pytest_args, json_out=a.json)


def build_parser() -> argparse.ArgumentParser:
    ap = _Parser(prog="mt5study", description=__doc__)
    sub = ap.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="a training run in this process (world size 1 runs as is; several processes: mt5study launch)")
    _add_params(p)
    p.add_argument("--resume", action="store_true", help="continue from the newest checkpoint in --out")
    p.add_argument("--stop-at-step", type=int, default=None,
                   help="checkpoint and stop as if preempted after this step (tests, drills)")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("launch", help="launch all ranks of a run on this machine via accelerate")
    _add_params(p)
    p.add_argument("--resume", action="store_true")
    p.add_argument("--dry-run", action="store_true", help="print the accelerate command only")
    p.add_argument("--stop-at-step", type=int, default=None, help="as for train")
    p.set_defaults(func=cmd_launch)

    p = sub.add_parser("etl", help="build the pretraining dataset and tokenizer")
    _add_params(p)
    p.set_defaults(func=cmd_etl)

    p = sub.add_parser("study", help="run the default study end to end (notebooks via papermill)")
    p.add_argument("--pipeline", default=str(Path(__file__).resolve().parent.parent / "params" / "cpu" / "pipeline.yaml"),
                   help="pipeline params file (default: params/cpu/pipeline.yaml)")
    p.add_argument("--only", nargs="+", help="run only these steps")
    p.add_argument("--outputs", default=None, help="outputs folder of the study (default: outputs/ or $MT5STUDY_OUTPUTS)")
    p.add_argument("--keep-stale", action="store_true",
                   help="keep finished results whose params, data or code changed (every page marks them STALE)")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("trial", help="train one grid trial of a study (one Slurm array task)")
    p.add_argument("--params", required=True, help="study params file")
    p.add_argument("--index", type=int, required=True, help="trial index in the grid (0-based)")
    p.add_argument("--out", default=None, help="study folder (default outputs/<study name>)")
    p.set_defaults(func=cmd_trial)

    p = sub.add_parser("info", help="presets and their parameter counts")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("faults", help="run the fault suite (tests/faults) and print its figures")
    p.add_argument("--json", default=None, help="also write the figures to this JSON file")
    p.add_argument("pytest_args", nargs="*", help="passed to pytest after --, e.g. -- -k torn")
    p.set_defaults(func=cmd_faults)

    try:
        from mt5study import slurm
    except ImportError:
        slurm = None
    if slurm is not None and hasattr(slurm, "add_cli"):
        slurm.add_cli(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except config.ConfigError as e:
        sep = "\n" if "\n" in str(e).strip() else " "  # one error: one line; several: one line each
        print(f"mt5study {args.command}: invalid params:{sep}{str(e).strip()}", file=sys.stderr)
        return EXIT_CONFIG
    except FileNotFoundError as e:
        print(f"mt5study {args.command}: {_one_line(e)}", file=sys.stderr)
        return EXIT_CONFIG
    except OSError as e:  # a folder that may not be written, a full disk: the run is not marked completed
        print(f"mt5study {args.command}: {_one_line(e)}", file=sys.stderr)
        return EXIT_FAILED
    except Exception as e:  # named input errors: a report's refusal, inputs that cannot be hashed
        from mt5study.pipeline import StepFailed
        from mt5study.records import InputsError
        from mt5study.studies.report import MixedInputsError

        if isinstance(e, (InputsError, MixedInputsError, StepFailed)):
            print(f"mt5study {args.command}: {_one_line(e)}", file=sys.stderr)
            return EXIT_FAILED
        raise


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    sys.exit(main())
