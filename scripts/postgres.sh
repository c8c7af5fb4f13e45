#!/usr/bin/env bash
# Install Debian's PostgreSQL server if it is missing (the PostgreSQL test starts a throwaway
# server from its binaries: tests/postgres.py). Idempotent; sourced or run by scripts/test.sh.
set -euo pipefail
if ! ls /usr/lib/postgresql/*/bin/pg_ctl >/dev/null 2>&1 && ! command -v pg_ctl >/dev/null 2>&1; then
  SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql >/dev/null
fi
