#!/usr/bin/env bash
# The test suite (CPU, tiny models, no downloads). Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q "$@"
