#!/usr/bin/env bash
# The GPU check (issue 9, item 7): mt5-base bf16 under ZeRO-3 and ZeRO-0 (MFU, peak memory against
# mt5study.memory.estimate, the loss-curve difference), fp16 with loss scaling, and a short
# span-corruption run, each a real `mt5study launch` with its own timeout; one JSON written after
# every part ($OUT/gpu_check.json if OUT is set, else outputs/gpu_check/gpu_check.json).
# At most 8 minutes on one H100 or H200; never in CI. Needs the project's environment on a CUDA
# machine (make setup, or conda env create -f environment.yml). Options: --dry-run (plan only, no
# GPU), --etl DIR (span-corruption data), --out DIR; see scripts/gpu_check.py.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
[ -x .venv/bin/python ] && [ -z "${PYTHON:-}" ] && PY=.venv/bin/python
# 480 s in all: the script keeps its own 465 s budget and writes its JSON after each part; this
# outer limit only catches a hang outside any part.
exec timeout --signal=TERM --kill-after=10 480 "$PY" scripts/gpu_check.py "$@"
