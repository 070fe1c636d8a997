#!/usr/bin/env bash
# Install everything the study and its tests need on a fresh machine:
#   - as root on Debian/Ubuntu: the apt packages (translated manual pages for the default corpus
#     and groff to render them; the gettext catalogs the translation study reads as parallel
#     text; Slurm for the cluster tests);
#   - a virtual environment with torch first (2.13.0; the CPU wheel where one is on disk), then
#     the project and its dev extra pinned by requirements-lock.txt (the exact set CI installs).
set -euo pipefail
VENV=${1:-.venv}
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  export DEBIAN_FRONTEND=noninteractive
  bash scripts/install_manpages.sh          # the default corpus: translated manual pages + groff
  bash scripts/install_catalogs.sh          # parallel text for translation: gettext catalogs
  # Headless Chromium checks the published site (mt5study.site.check); Slurm's packages are
  # installed by scripts/slurm/start_local_cluster.sh when a test starts the cluster.
  if ! command -v chromedriver >/dev/null; then
    apt-get update -q >/dev/null
    apt-get install -y -q --no-install-recommends chromium chromium-driver >/dev/null
  fi
fi

[ -x "$VENV/bin/python" ] || python3 -m venv "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
# torch before anything else: a bare `torch` requirement would pull a multi-GB CUDA build.
"$VENV/bin/python" -m pip install -q "torch==2.13.0"
"$VENV/bin/python" -m pip install -q -c requirements-lock.txt -e ".[dev]"
# DeepSpeed JIT-compiles its CPU shared-memory collective op at the first process-group start,
# under a file lock in ~/.cache/torch_extensions; a process killed while compiling leaves the lock
# and every later run waits on it forever. Building it once here keeps that out of runs and tests.
# Built with the environment's own ninja, into its own build folder, as every run does
# (mt5study.jit_locks.use_one_toolchain).
"$VENV/bin/python" -c "from mt5study.jit_locks import use_one_toolchain; use_one_toolchain()
from deepspeed.comm.torch import build_shm_op; build_shm_op()" >/dev/null \
  || echo "setup: DeepSpeed's shm_comm op did not build (runs will try again)" >&2
# The kernel the notebooks name, so papermill/nbval/JupyterLab run them in this environment.
"$VENV/bin/python" -m ipykernel install --sys-prefix --name mt5study --display-name "mt5study" >/dev/null
echo "setup: $("$VENV/bin/python" -c 'import torch, transformers, deepspeed; print("torch", torch.__version__, "transformers", transformers.__version__, "deepspeed", deepspeed.__version__)')"
