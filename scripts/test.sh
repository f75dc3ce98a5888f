#!/usr/bin/env bash
# Set up (see scripts/setup.sh) and run the whole test suite: ruff format + lint, mypy, pytest.
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -k structured`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
bash scripts/setup.sh
py=.venv/bin/python
export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1
echo "== ruff format --check"; $py -m ruff format --check .
echo "== ruff check"; $py -m ruff check .
echo "== mypy"; $py -m mypy mmagents models tools agents prompts graphs eval finetune serve
echo "== pytest"; $py -m pytest -q -ra "$@"
