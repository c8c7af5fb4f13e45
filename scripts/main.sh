#!/usr/bin/env bash
# Set up (if needed) and materialise the whole asset graph on the embedded sample.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
# shellcheck disable=SC1091
. scripts/setup.sh
unset PYTHONDONTWRITEBYTECODE  # let Python cache compiled modules: start-up is most of a no-op run
exec llavacot run "$@"
