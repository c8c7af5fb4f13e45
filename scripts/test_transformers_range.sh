#!/usr/bin/env bash
# The transformers range declared in pyproject.toml, tested at both ends: the tiny-model search,
# collator and training tests run under the oldest supported release (installed with pip --target
# into .tf-range/, put first on PYTHONPATH; the project's .venv is not touched) and under the newest
# (when .venv holds the newest, the whole suite that follows runs them there; else installed the same way).
# Keep OLDEST/NEWEST equal to the bounds in pyproject.toml.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
OLDEST=5.17.0
NEWEST=5.25.0
PY=${PYTHON:-.venv/bin/python}
TESTS=(tests/pipeline/search/test_runner.py tests/pipeline/search/test_core_tiny_mllama.py
       tests/pipeline/search/test_prompt_real_template.py tests/pipeline/train/test_data_and_collator.py
       tests/pipeline/train/test_deepspeed.py)

run_with() {
  local version=$1 path=""
  if [ "$("$PY" -c 'import transformers; print(transformers.__version__)')" == "$version" ]; then
    echo "== transformers $version: the .venv's own, tested by the whole suite"
    return 0
  fi
  if true; then
    path=".tf-range/$version"
    if [ ! -f "$path/.complete" ]; then
      rm -rf "$path"
      "$PY" -m pip install --quiet --disable-pip-version-check --target "$path" "transformers==$version"
      touch "$path/.complete"
    fi
  fi
  echo "== transformers $version: search, collator and training tests"
  PYTHONPATH="${path:+$PWD/$path:}$PWD" "$PY" -m pytest -q -p no:cacheprovider "${TESTS[@]}"
}

run_with "$OLDEST"
run_with "$NEWEST"
