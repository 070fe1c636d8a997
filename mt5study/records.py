"""Run folders: atomic writes, metrics lines, the environment record and the inputs by content.

A run folder holds `config.json` (resolved params), `metrics.jsonl` (one line per logged step),
`env.json` (versions, git commit, hardware), `inputs.json` (data, checkpoint and code by
content: see `run_inputs`) and `summary.json`, written last: a folder without
`summary.json` is not a finished run.
"""

from __future__ import annotations

import ast
import hashlib
import json
import os
import platform
import socket
import subprocess
import sys
import tempfile
import threading
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any, Iterable

from mt5study.paths import ROOT

PACKAGES = (
    "mt5study", "torch", "transformers", "accelerate", "deepspeed", "datasets", "sentencepiece",
    "tokenizers", "numpy", "pandas", "pyarrow", "pydantic", "optuna", "papermill", "py3langid",
)


def write_json_atomic(path: str | Path, data: Any) -> None:
    """Write JSON so that readers see the old file or the whole new one, never a part."""
    write_text_atomic(path, json.dumps(data, indent=2, sort_keys=True, default=_jsonable) + "\n")


def write_text_atomic(path: str | Path, text: str) -> None:
    """Write text through a temporary file in the same folder, fsync, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def read_json(path: str | Path) -> Any:
    return json.loads(Path(path).read_text(encoding="utf-8"))


def _jsonable(x: Any) -> Any:
    if hasattr(x, "item"):
        return x.item()
    if isinstance(x, Path):
        return str(x)
    raise TypeError(f"not JSON serialisable: {type(x).__name__}")


def read_metrics(path: str | Path) -> list[dict[str, Any]]:
    """Metric lines of a run; a torn last line (a crash mid-write) is ignored."""
    path = Path(path)
    if not path.exists():
        return []
    rows = []
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            break
    return rows


def rewrite_metrics(path: str | Path, rows: Iterable[dict[str, Any]]) -> None:
    """Replace metrics.jsonl atomically (used on resume to drop lines past the checkpoint)."""
    write_text_atomic(path, "".join(json.dumps(r, default=_jsonable) + "\n" for r in rows))


def git_commit(root: Path = ROOT) -> dict[str, Any]:
    """The commit of the working tree and whether it has uncommitted changes."""
    def git(*args: str) -> str | None:
        try:
            out = subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=10)
        except (OSError, subprocess.TimeoutExpired):
            return None
        return out.stdout.strip() if out.returncode == 0 else None

    commit = git("rev-parse", "HEAD")
    status = git("status", "--porcelain", "--untracked-files=no")
    return {"commit": commit, "dirty": bool(status) if status is not None else None}


def hardware() -> dict[str, Any]:
    """CPU model, core count, memory and GPUs of this host."""
    cpu = platform.processor() or None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    info: dict[str, Any] = {"host": socket.gethostname(), "cpu": cpu, "cpu_count": os.cpu_count()}
    try:
        import psutil

        info["memory_bytes"] = psutil.virtual_memory().total
    except ImportError:
        pass
    try:
        import torch

        if torch.cuda.is_available():
            info["gpus"] = [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
            info["cuda"] = torch.version.cuda
        else:
            info["gpus"] = []
        import torch.backends.cpu as tbc

        info["cpu_capability"] = tbc.get_cpu_capability()
    except Exception:  # noqa: BLE001 (env.json must never fail a run)
        pass
    return info


def versions() -> dict[str, str | None]:
    out: dict[str, str | None] = {"python": sys.version.split()[0]}
    for name in PACKAGES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = None
    return out


def environment(**extra: Any) -> dict[str, Any]:
    """What env.json holds: versions, git commit, hardware, time, plus caller's fields."""
    return {
        "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "versions": versions(),
        "git": git_commit(),
        "hardware": hardware(),
        "platform": platform.platform(),
        "argv": sys.argv,
        "slurm": {k: v for k, v in os.environ.items() if k.startswith("SLURM_") and k in _SLURM_KEYS},
        **extra,
    }


_SLURM_KEYS = {
    "SLURM_JOB_ID", "SLURM_ARRAY_JOB_ID", "SLURM_ARRAY_TASK_ID", "SLURM_JOB_NODELIST",
    "SLURM_NNODES", "SLURM_JOB_PARTITION", "SLURM_RESTART_COUNT",
}


# ----------------------------------------------------------------------------- inputs by content
#
# inputs.json names what a run's numbers came from, by content: the data (the ETL manifest's
# content hashes and the tokenizer's bytes, or the synthetic data's parameters), the starting
# checkpoint's weight bytes, and a fingerprint of the code on its path. A finished folder is
# reused only when config.json and inputs.json both equal what would run now.
#
# The code fingerprint is a sha256 over the named source files, each reduced to its syntax tree
# without docstrings (ast.dump: comments, blank lines and docstrings do not count, any change of
# code does), plus the versions of the libraries that compute the numbers. It needs no git and
# sees uncommitted edits; it costs a few milliseconds.

INPUTS_FILE = "inputs.json"
INPUTS_FORMAT = "mt5study-inputs/1"
PACKAGE = ROOT / "mt5study"
CODE: dict[str, tuple[str, ...]] = {  # globs under PACKAGE, per kind of step
    "train": ("train.py", "model.py", "loss.py", "batches.py", "optim.py", "launch.py", "config.py", "amp.py",
              "partition.py", "ladder.py", "data/stream.py"),
    # The ETL's stages (report.py reads outputs, samples.py writes test corpora: not counted).
    "etl": tuple(f"data/{m}.py" for m in ("etl", "clean", "config", "corruption", "output", "sampling",
                                          "sources", "catalog_text", "tokenizer", "engine", "plan", "shards", "stages", "near_dedup")),
    "qa_data": ("qa/prepare.py", "qa/loaders.py", "qa/manpages.py", "qa/config.py"),  # QA examples, windows
    "qa_eval": ("qa/evaluate.py", "qa/metrics.py", "qa/prepare.py"),  # generation and EM/F1
}
LIBRARIES: dict[str, tuple[str, ...]] = {
    "train": ("torch", "transformers", "accelerate", "deepspeed", "datasets", "numpy"),
    "etl": ("datasets", "pyarrow", "sentencepiece", "tokenizers", "transformers", "numpy", "py3langid"),
    "qa_data": ("sentencepiece", "tokenizers", "transformers", "datasets", "numpy"),
    "qa_eval": ("torch", "transformers", "sentencepiece", "numpy"),
}
WEIGHT_GLOBS = ("*.safetensors", "*.bin", "*.pt", "*.pth", "config.json")  # what a checkpoint's numbers are
_HASHES: dict[tuple, str] = {}  # (path, size, mtime_ns, inode) -> sha256, for this process


class InputsError(RuntimeError):
    """A run's inputs cannot be named by content (missing data or checkpoint, unreadable manifest)."""


def say(line: str) -> None:
    """One progress line in one write: print() writes the text and the newline separately, so lines
    printed from the threads of side-by-side runs could run into each other on the page."""
    import sys

    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def loss_text(loss: float | None) -> str:
    """A loss for progress lines: 3 decimals (what the tables show), or "none" for a run without one."""
    return "none" if loss is None else f"{loss:.3f}"


def _stat_key(path: Path) -> tuple[str, int, int, int]:
    """What says a file is unchanged for the hash caches: (path, size, mtime, inode)."""
    st = path.stat()
    return (str(path), st.st_size, st.st_mtime_ns, st.st_ino)


def file_sha256(path: str | Path) -> str:
    """sha256 of a file's bytes, remembered per (path, size, mtime, inode) so that a multi-GB
    checkpoint is read once per process; a rewritten or replaced file is hashed again."""
    path = Path(path).resolve()
    key = _stat_key(path)
    if key not in _HASHES:
        h = hashlib.sha256()
        with path.open("rb") as f:
            for block in iter(lambda: f.read(1 << 22), b""):  # 4 MiB blocks
                h.update(block)
        _HASHES[key] = h.hexdigest()
    return _HASHES[key]


def _digest(obj: Any) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=_jsonable).encode()).hexdigest()


# CPython 3.11's AST constructor keeps its recursion-depth count in state shared by threads: two
# threads parsing at once can fail with "SystemError: AST constructor recursion depth mismatch"
# (python/cpython#106905; seen here once in a test of trials side by side, which fingerprint the
# code from worker threads at the same time), so the parse is serialised.
_AST_LOCK = threading.Lock()
_SOURCE_HASHES: dict[tuple[str, int, int, int], str] = {}


def source_sha256(path: Path) -> str:
    """sha256 of a Python file's syntax tree without docstrings; its bytes if it does not parse.
    Remembered per (path, size, mtime, inode), as file_sha256: a study fingerprints the same code
    for every trial, and an edited file is parsed again."""
    path = Path(path).resolve()
    key = _stat_key(path)
    if key in _SOURCE_HASHES:
        return _SOURCE_HASHES[key]
    text = path.read_bytes()
    with _AST_LOCK:
        try:
            tree = ast.parse(text)
        except (SyntaxError, ValueError):
            return hashlib.sha256(text).hexdigest()
        for node in ast.walk(tree):
            body = getattr(node, "body", None)
            if (isinstance(node, (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)) and body
                    and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant)
                    and isinstance(body[0].value.value, str)):
                node.body = body[1:] or [ast.Pass()]
        dumped = ast.dump(tree)
    _SOURCE_HASHES[key] = digest = hashlib.sha256(dumped.encode()).hexdigest()
    return digest


def code_fingerprint(kind: str = "train", package: Path | None = None) -> dict[str, Any]:
    """The code a kind of step ('train', 'etl', 'qa_data', 'qa_eval') runs: per-file hashes, library versions and
    one sha256 over both. A listed file that does not exist yet is simply absent."""
    if kind not in CODE:
        raise ValueError(f"code fingerprint: unknown kind {kind!r}; one of {sorted(CODE)}")
    package = Path(package or PACKAGE)
    files = {}
    for pattern in CODE[kind]:
        for p in sorted(package.glob(pattern)):
            files[p.relative_to(package).as_posix()] = source_sha256(p)
    vers = versions()
    libraries = {name: vers.get(name) for name in LIBRARIES[kind]}
    return {"kind": kind, "sha256": _digest([files, libraries]), "files": files, "libraries": libraries}


def data_inputs(data: Any) -> dict[str, Any]:
    """The training data by content: an ETL output's manifest hashes and tokenizer bytes, another
    prepared folder's dataset bytes, or the synthetic data's parameters. `data` is a DataConfig."""
    from mt5study.paths import find

    if data.path is None:
        spec = {"synthetic": data.synthetic.model_dump(mode="json"),
                "input_length": data.input_length, "target_length": data.target_length}
        return {"kind": "synthetic", "sha256": _digest(spec), **spec}
    root = find(data.path)
    try:
        manifest = read_json(root / "manifest.json")
    except FileNotFoundError:
        raise InputsError(f"data.path={root}: no manifest.json (not a completed ETL output); "
                          "cannot name the run's data") from None
    except (OSError, ValueError) as e:
        raise InputsError(f"data.path={root}: manifest.json unreadable: {e}") from None
    out: dict[str, Any] = {"path": str(root)}
    if isinstance(manifest.get("content_sha256"), dict):  # an ETL output (mt5study-etl/1)
        splits = {s: manifest["content_sha256"].get(s) for s in ("train", "validation")}
        if None in splits.values():
            raise InputsError(f"data.path={root}: manifest.json lacks content_sha256 of {splits}")
        out.update(kind="etl", sha256=etl_data_sha(manifest), splits=splits)
    else:  # e.g. the QA study's prepared folder: hash the dataset's Arrow files
        files = sorted((root / "dataset").rglob("*.arrow"))
        if not files:
            raise InputsError(f"data.path={root}: no content hashes in manifest.json and no dataset/*.arrow files")
        out.update(kind="prepared", sha256=_digest({p.relative_to(root).as_posix(): file_sha256(p) for p in files}))
    tok = root / "tokenizer"
    if tok.is_dir():
        from mt5study.data.tokenizer import tokenizer_hash

        out["tokenizer_sha256"] = tokenizer_hash(tok)
    return out


def etl_data_sha(manifest: dict[str, Any]) -> str:
    """An ETL output's data sha: over its manifest's content hashes of the train and validation
    splits (token ids, labels, languages in order), what runs on it record as data.sha256."""
    return _digest({s: (manifest.get("content_sha256") or {}).get(s) for s in ("train", "validation")})


def checkpoint_inputs(source: str) -> dict[str, Any]:
    """A starting checkpoint by the bytes of its weight files (and config.json); a hub name is
    hashed from the local hub cache, and recorded with sha256 None when it is not there yet."""
    from mt5study.paths import find

    local = find(source)
    if not local.exists() and not str(source).startswith((".", "/")) and str(source).count("/") == 1:
        try:
            from huggingface_hub import snapshot_download

            local = Path(snapshot_download(str(source), local_files_only=True))
        except Exception as e:  # noqa: BLE001 (not cached: the hash is unknown, reuse impossible)
            return {"source": str(source), "sha256": None, "unknown": f"hub model not in the local cache ({type(e).__name__})"}
    if not local.is_dir():
        raise InputsError(f"model.checkpoint={source}: {local} is not a folder; cannot hash the starting weights")
    files = sorted({p for g in WEIGHT_GLOBS for p in local.glob(g) if p.is_file()})
    if not any(p.name != "config.json" for p in files):
        raise InputsError(f"model.checkpoint={source}: no weight files ({', '.join(WEIGHT_GLOBS[:-1])}) in {local}")
    try:
        hashes = {p.name: file_sha256(p) for p in files}
    except OSError as e:
        raise InputsError(f"model.checkpoint={source}: cannot read {e.filename}: {e.strerror}") from None
    return {"source": str(source), "path": str(local), "sha256": _digest(hashes), "files": hashes}


def run_inputs(params: Any, out_dir: str | Path | None = None) -> dict[str, Any]:  # noqa: ARG001 (the run folder, for symmetry)
    """What a training run's numbers come from, by content (inputs.json): data, checkpoint, code."""
    ckpt = params.model.checkpoint
    return {"format": INPUTS_FORMAT, "data": data_inputs(params.data),
            "checkpoint": checkpoint_inputs(ckpt) if ckpt else None, "code": code_fingerprint("train")}


def short(sha: str | None, n: int = 10) -> str:
    return sha[:n] if sha else "?"


def inputs_changes(old: dict[str, Any] | None, new: dict[str, Any]) -> list[str]:
    """Why a recorded inputs.json does not match `new` (empty when it does), e.g. 'data changed:
    manifest sha 1a2b… -> 3c4d…', 'code changed: loss.py, train.py', 'checkpoint changed: …'."""
    if not isinstance(old, dict) or old.get("format") != new.get("format"):
        return ["no inputs.json: the run was recorded before runs named their inputs"]
    reasons = []
    od, nd = old.get("data") or {}, new.get("data") or {}
    if od.get("kind") != nd.get("kind"):
        reasons.append(f"data changed: {od.get('kind')} -> {nd.get('kind')}")
    elif od.get("sha256") != nd.get("sha256"):
        what = "manifest sha" if nd.get("kind") == "etl" else f"{nd.get('kind')} data sha"
        reasons.append(f"data changed: {what} {short(od.get('sha256'))} -> {short(nd.get('sha256'))}")
    if od.get("tokenizer_sha256") != nd.get("tokenizer_sha256"):
        reasons.append(f"tokenizer changed: sha {short(od.get('tokenizer_sha256'))} -> {short(nd.get('tokenizer_sha256'))}")
    oc, nc = old.get("checkpoint"), new.get("checkpoint")
    if nc is not None and nc.get("sha256") is None:
        reasons.append(f"checkpoint {nc.get('source')}: hash unknown ({nc.get('unknown')}), cannot verify")
    elif (oc or {}).get("sha256") != (nc or {}).get("sha256"):
        reasons.append(f"checkpoint changed: sha {short((oc or {}).get('sha256'))} -> {short((nc or {}).get('sha256'))}")
    ok, nk = old.get("code") or {}, new.get("code") or {}
    if ok.get("sha256") != nk.get("sha256"):
        of, nf = ok.get("files") or {}, nk.get("files") or {}
        files = sorted(f for f in set(of) | set(nf) if of.get(f) != nf.get(f))
        libs = [f"{k} {v} -> {(nk.get('libraries') or {}).get(k)}" for k, v in (ok.get("libraries") or {}).items()
                if (nk.get("libraries") or {}).get(k) != v]
        named = [f + (" (new)" if f not in of else " (removed)" if f not in nf else "") for f in files]
        reasons.append("code changed: " + ", ".join(named + libs or [f"fingerprint {short(ok.get('sha256'))}"])
                       + f" (fingerprint {short(ok.get('sha256'))} -> {short(nk.get('sha256'))})")
    return reasons


def params_changes(old: Any, new: Any, prefix: str = "") -> list[str]:
    """Dotted keys whose values differ between two resolved configs, with old -> new."""
    if isinstance(old, dict) and isinstance(new, dict):
        out = []
        for k in sorted(set(old) | set(new), key=str):
            out += params_changes(old.get(k), new.get(k), f"{prefix}{k}.")
        return out
    return [] if old == new else [f"{prefix[:-1] or '(all)'} {old!r} -> {new!r}"]


def stale_reasons(out: str | Path, config_dict: dict[str, Any], inputs: dict[str, Any]) -> list[str]:
    """Why the run folder `out` does not hold a run of these params and inputs ([] = it does).
    A missing or unreadable config.json or inputs.json is a reason, never a silent match."""
    out = Path(out)
    reasons = []
    try:
        recorded = read_json(out / "config.json")
    except (OSError, ValueError) as e:
        recorded = None
        reasons.append(f"config.json missing or unreadable ({type(e).__name__})")
    if recorded is not None and recorded != config_dict:
        diff = params_changes(recorded, config_dict)
        reasons.append("params changed: " + "; ".join(diff[:4]) + (f" (+{len(diff) - 4} more)" if len(diff) > 4 else ""))
    try:
        old = read_json(out / INPUTS_FILE)
    except FileNotFoundError:
        old = None
    except (OSError, ValueError) as e:
        return reasons + [f"inputs.json unreadable ({type(e).__name__}: {e})"]
    return reasons + inputs_changes(old, inputs)


# ----------------------------------------------------------------------------- reuse decisions

REUSE_FILE = "reuse.json"  # the runner's last decision about a folder: reused / trained / kept stale


def record_decision(out: str | Path, action: str, reasons: list[str]) -> dict[str, Any]:
    """Write OUT/reuse.json: what the last check did with the folder and why (pages read it)."""
    entry = {"action": action, "reasons": list(reasons),
             "time_utc": datetime.now(timezone.utc).isoformat(timespec="seconds")}
    write_json_atomic(Path(out) / REUSE_FILE, entry)
    return entry


def reuse_or_redo(out: str | Path, reasons: list[str], keep_stale: bool, match: str) -> bool:
    """True to reuse the finished folder `out`: nothing changed (`match` says what was compared),
    or it is kept stale on request; False to redo it. Prints and records (reuse.json) which, and why."""
    if not reasons:
        say(f"[reuse] {out}: {match}")
        record_decision(out, "reused", [])
        return True
    if keep_stale:
        say(f"[reuse] {out}: KEPT STALE on request: {'; '.join(reasons)}")
        record_decision(out, "kept stale", reasons)
        return True
    say(f"[rerun] {out}: {'; '.join(reasons)}")
    return False


def stale_mark(out: str | Path) -> str | None:
    """The reasons a folder was kept although stale (keep_stale), or None when it is current."""
    try:
        entry = read_json(Path(out) / REUSE_FILE)
    except (OSError, ValueError):
        return None
    return "; ".join(entry.get("reasons") or ["stale"]) if entry.get("action") == "kept stale" else None


def machine(env: dict[str, Any]) -> str:
    """A short name of the hardware in an env.json: '8x NVIDIA H100 80GB HBM3' or 'AMD EPYC 7763 x2'."""
    hw = env.get("hardware") or {}
    if hw.get("gpus"):
        return f"{len(hw['gpus'])}x {hw['gpus'][0]}"
    cpu = str(hw.get("cpu") or "?")
    for noise in ("(R)", "(TM)", " Processor", " CPU", "64-Core", "32-Core", "16-Core"):
        cpu = cpu.replace(noise, "")
    return f"{' '.join(cpu.split())} x{hw.get('cpu_count')}"


def provenance(run_dir: str | Path) -> dict[str, Any]:
    """Short forms of what a run folder's numbers came from: data sha, code fingerprint, checkpoint
    sha, machine, and the stale mark; '?' where the folder does not say (a run from before)."""
    run_dir = Path(run_dir)
    try:
        inputs = read_json(run_dir / INPUTS_FILE)
    except (OSError, ValueError):
        inputs = {}
    try:
        env = read_json(run_dir / "env.json")
    except (OSError, ValueError):
        env = {}
    if not inputs:  # an ETL output names its data and code in its manifest
        try:
            manifest = read_json(run_dir / "manifest.json")
        except (OSError, ValueError):
            manifest = {}
        if isinstance(manifest.get("content_sha256"), dict):
            inputs = {"data": {"kind": "etl", "sha256": etl_data_sha(manifest)},
                      "code": (manifest.get("inputs") or {}).get("code") or {}}
            env = env or manifest.get("environment") or {}
    data = inputs.get("data") or {}
    return {"run": "data" in inputs,  # a training run or ETL output (not a cache folder that records only its code)
            "data": short(data.get("sha256")) + ("" if data.get("kind") != "synthetic" else " (synthetic)"),
            "code": short((inputs.get("code") or {}).get("sha256")),
            "checkpoint": short((inputs.get("checkpoint") or {}).get("sha256")) if inputs.get("checkpoint") else "",
            "machine": machine(env) if env else "?", "stale": stale_mark(run_dir) or ""}


def run_folders(root: str | Path) -> list[Path]:
    """Every run or cached folder under `root` that records its inputs (inputs.json) or a reuse decision."""
    root = Path(root)
    found = {p.parent for name in (INPUTS_FILE, REUSE_FILE) for p in root.rglob(name)}
    return sorted(found)


def provenance_note(root: str | Path) -> str:
    """What the numbers under `root` were computed from (data, code, machine: each distinct value
    with its count of folders), led by a banner when any folder was kept stale on purpose."""
    root = Path(root)
    rows = [r for r in (provenance(p) for p in run_folders(root)) if r["run"]]
    lines = []
    stale = [(p, stale_mark(p)) for p in run_folders(root) if stale_mark(p)]
    if stale:
        lines.append(f"!!! STALE RESULTS KEPT ON PURPOSE (keep_stale): {len(stale)} folder(s) under {root.name}/ "
                     "were not recomputed although their params, data or code changed:")
        lines += [f"!!!   {p.relative_to(root)}: {why}" for p, why in stale]
    for key in ("data", "code", "machine"):
        counts: dict[str, int] = {}
        for r in rows:
            counts[r[key]] = counts.get(r[key], 0) + 1
        shown = ", ".join(f"{v} ({n})" for v, n in sorted(counts.items())) or "not recorded"
        lines.append(f"{key}: {shown}")
    return "\n".join(lines)


# --- Reuse of prepared data folders and cached evaluations (QA and translation share these) ---

def prepared_matches(out: str | Path, fingerprint: str, redo: bool = False) -> bool:
    """Whether the prepared data folder `out` can be reused: its manifest.json (written last, so
    a half-written folder never matches) carries `fingerprint`, and no redo was asked."""
    manifest = Path(out) / "manifest.json"
    return manifest.exists() and not redo and read_json(manifest).get("fingerprint") == fingerprint


def eval_key(run_dir: str | Path, prepared: str | Path, cfg: Any, kind: str, **extra: Any) -> dict[str, Any]:
    """What a cached evaluation of a fine-tuned run depends on: the run (its finish time and steps),
    the prepared data's fingerprint, the eval params (a pydantic model), the evaluation code of
    `kind` (code_fingerprint) and any `extra` (library versions)."""
    summary = read_json(Path(run_dir) / "summary.json")
    return {"run": str(run_dir), "finished": summary.get("wall_seconds"), "steps": summary.get("steps"),
            "data": read_json(Path(prepared) / "manifest.json")["fingerprint"],
            "eval": cfg.model_dump(mode="json"), "code": code_fingerprint(kind)["sha256"], **extra}


def read_cached(out: str | Path, key: dict[str, Any], names: tuple[str, ...], redo: bool = False) -> list | None:
    """The tables <out>/<name>.parquet (pandas DataFrames) of an evaluation cached under `key`, or
    None when it must be redone (no scores.json, another key, or redo)."""
    import pandas as pd

    done = Path(out) / "scores.json"
    if redo or not done.exists() or read_json(done).get("key") != key:
        return None
    return [pd.read_parquet(Path(out) / f"{name}.parquet") for name in names]


def write_cached(out: str | Path, key: dict[str, Any], tables: dict[str, Any], seconds: float) -> None:
    """Each table as <out>/<name>.parquet, then scores.json (key, seconds, the `scores` table) last."""
    Path(out).mkdir(parents=True, exist_ok=True)
    for name, table in tables.items():
        table.to_parquet(Path(out) / f"{name}.parquet", index=False)
    write_json_atomic(Path(out) / "scores.json", {"key": key, "seconds": seconds,
                                                  "scores": tables["scores"].to_dict(orient="records")})
