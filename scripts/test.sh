#!/usr/bin/env bash
# Set up (if needed), install the browser the UI test drives and the PostgreSQL server the team
# deployment test starts, and run the whole test suite.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
if ! command -v chromium >/dev/null 2>&1; then
  # Debian's chromium: Playwright's own browser download is not reachable from these machines.
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
bash scripts/postgres.sh
if [ "$#" -eq 0 ] && [ "${LLAVACOT_SKIP_TF_RANGE:-0}" != "1" ]; then
  # the transformers range of pyproject.toml at both ends (the whole suite below runs on .venv's)
  PYTHON=python bash scripts/test_transformers_range.sh
fi
exec python -m pytest -q "$@"
