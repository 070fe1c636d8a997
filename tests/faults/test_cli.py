"""Every subcommand used by hand with a missing file, a wrong flag or a folder it may not write:
one clear line on stderr and a non-zero exit, never a traceback, nothing launched.

Run in process through `mt5study.cli.main` (the console entry point) to keep CI time small; one
case per kind also goes through a real `python -m mt5study.cli` process.
"""

from __future__ import annotations

import subprocess
import sys

import pytest

from mt5study import cli
from mt5study.paths import PARAMS

TINY = str(PARAMS / "cpu" / "tiny.yaml")
ETL = str(PARAMS / "cpu" / "etl_smoke.yaml")
STUDY = str(PARAMS / "cpu" / "batch_lr_smoke.yaml")
PIPELINE = str(PARAMS / "cpu" / "pipeline_smoke.yaml")


def _main(argv, capsys):
    try:
        code = cli.main(argv)
    except SystemExit as e:  # argparse
        code = e.code
    return code, capsys.readouterr().err


def _one_clear_line(code, err, *words):
    lines = [line for line in err.splitlines() if line.strip()]
    return (code not in (0, None) and len(lines) == 1 and "Traceback" not in err
            and all(w.lower() in err.lower() for w in words))


MISSING = {  # subcommand argv with a params file that does not exist
    "train": ["train", "--params", "nope.yaml", "--out", "{tmp}/r"],
    "launch": ["launch", "--params", "nope.yaml", "--out", "{tmp}/r"],
    "etl": ["etl", "--params", "nope.yaml", "--out", "{tmp}/e"],
    "study": ["study", "--pipeline", "nope.yaml", "--outputs", "{tmp}/s"],
    "trial": ["trial", "--params", "nope.yaml", "--index", "0", "--out", "{tmp}/t"],
    "slurm submit": ["slurm", "submit", "--notebook", "notebooks/02_precision_study.ipynb", "--params", "nope.yaml",
                     "--dry-run"],
    "slurm submit-study": ["slurm", "submit-study", "--params", "nope.yaml", "--dry-run"],
    "slurm train": ["slurm", "train", "--params", "nope.yaml", "--out", "{tmp}/r", "--dry-run"],
}
WRONG_FLAG = {  # a valid command line, then a flag no command has
    "train": ["train", "--params", TINY, "--out", "{tmp}/r"],
    "launch": ["launch", "--params", TINY, "--out", "{tmp}/r"],
    "etl": ["etl", "--params", ETL, "--out", "{tmp}/e"],
    "study": ["study"],
    "trial": ["trial", "--params", STUDY, "--index", "0"],
    "info": ["info"],
    "faults": ["faults"],
    "slurm submit": ["slurm", "submit", "--notebook", "x.ipynb", "--params", TINY],
    "slurm submit-study": ["slurm", "submit-study", "--params", STUDY],
    "slurm train": ["slurm", "train", "--params", TINY, "--out", "{tmp}/r"],
    "slurm status": ["slurm", "status"],
}
UNWRITABLE = {  # subcommand argv whose output folder is on a read-only file system
    "train": ["train", "--params", TINY, "--out", "{ro}/run"],
    "launch": ["launch", "--params", TINY, "--out", "{ro}/run"],
    "etl": ["etl", "--params", ETL, "--out", "{ro}/etl"],
    "study": ["study", "--pipeline", PIPELINE, "--outputs", "{ro}/outputs", "--only", "etl"],
    "trial": ["trial", "--params", STUDY, "--index", "0", "--out", "{ro}/study"],
    "faults": ["faults", "--json", "{ro}/figures.json"],
}


@pytest.mark.parametrize("name", sorted(MISSING))
def test_missing_params_file(name, tmp_path, capsys, ledger):
    argv = [a.format(tmp=tmp_path) for a in MISSING[name]]
    code, err = _main(argv, capsys)
    ledger.rejected(f"mt5study {name} with a missing params file", _one_clear_line(code, err, "nope.yaml"), err)
    assert _one_clear_line(code, err, "nope.yaml"), (code, err)
    assert not any(tmp_path.iterdir())  # nothing written


@pytest.mark.parametrize("name", sorted(WRONG_FLAG))
def test_wrong_flag(name, tmp_path, capsys, ledger):
    code, err = _main([*(a.format(tmp=tmp_path) for a in WRONG_FLAG[name]), "--no-such-flag"], capsys)
    ok = _one_clear_line(code, err, "--no-such-flag", "-h")
    ledger.rejected(f"mt5study {name} --no-such-flag", ok, err)
    assert ok, (code, err)


@pytest.mark.parametrize("name", sorted(UNWRITABLE))
def test_unwritable_output_folder(name, readonly_dir, capsys, ledger):
    argv = [a.format(ro=readonly_dir) for a in UNWRITABLE[name]]
    code, err = _main(argv, capsys)
    ok = _one_clear_line(code, err, str(readonly_dir), "cannot be written")
    ledger.rejected(f"mt5study {name} into a read-only folder", ok, err)
    assert ok, (code, err)


def test_real_process_prints_one_line(tmp_path, ledger):
    for argv, word in ((["train", "--params", "nope.yaml", "--out", str(tmp_path)], "nope.yaml"),
                       (["launch", "--params", TINY, "--out", str(tmp_path), "--bogus"], "--bogus")):
        r = subprocess.run([sys.executable, "-m", "mt5study.cli", *argv], capture_output=True, text=True, timeout=300)
        ok = _one_clear_line(r.returncode, r.stderr, word)
        ledger.rejected(f"python -m mt5study.cli {' '.join(argv[:1])} ({word})", ok, r.stderr)
        assert ok, r.stderr


def test_train_without_a_launcher_at_world_size_2(tmp_path, capsys, ledger):
    """`mt5study train` by hand at world size 2: one line naming `mt5study launch`, nothing written
    (at world size 1 it runs as one process: tests/test_train_one_process.py)."""
    code, err = _main(["train", "--params", TINY, "--out", str(tmp_path / "run")], capsys)
    ok = _one_clear_line(code, err, "mt5study launch")
    ledger.rejected("mt5study train at world size 2 without a launcher", ok, err)
    assert ok, (code, err)
    assert not (tmp_path / "run").exists()
