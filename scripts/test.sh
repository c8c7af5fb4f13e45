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
exec python -m pytest -q "$@"
