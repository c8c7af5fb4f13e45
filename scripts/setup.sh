#!/usr/bin/env bash
# Idempotent set-up: a virtual environment in .venv with the project and its test extras.
# Sourced by scripts/main.sh and scripts/test.sh; safe to run again (it skips what is done).
#
# PyTorch: on a machine without CUDA we install the CPU build (torch==2.13.0) first, so the
# project's `torch` requirement is already met and pip does not pull a multi-GB CUDA build.
# GPU users: install your CUDA build of torch into .venv (or set LLAVACOT_TORCH_SPEC, e.g.
# LLAVACOT_TORCH_SPEC="torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128")
# before running this script; it keeps a torch that is already installed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
export PIP_DISABLE_PIP_VERSION_CHECK=1
stamp=.venv/.llavacot-installed
want="$(cat pyproject.toml scripts/setup.sh | sha256sum | cut -d' ' -f1)"
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  if ! python -c "import torch" 2>/dev/null; then
    # shellcheck disable=SC2086
    pip install -q ${LLAVACOT_TORCH_SPEC:-torch==2.13.0}
  fi
  pip install -q -e ".[test]"
  echo "$want" > "$stamp"
fi
export DAGSTER_HOME="${DAGSTER_HOME:-$PWD/.dagster_home}"
mkdir -p "$DAGSTER_HOME"
# the local instance's settings (jobs/cli.py: LOCAL_INSTANCE), also for a `dagster dev` before any run
[ -f "$DAGSTER_HOME/dagster.yaml" ] || python -c "from jobs.cli import write_local_instance; write_local_instance()"
