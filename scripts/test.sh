#!/usr/bin/env bash
# The test suite (CPU, tiny models, no downloads). Extra arguments go to pytest.
# One pytest-xdist worker per core, each on one thread (tests/conftest.py), handed one
# test at a time in the order tests/conftest.py sorts them (the longest first), so that
# the workers finish together; tests marked with one xdist_group share a worker. The
# 15 slowest are listed at the end.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
.venv/bin/python -m pytest -q -n auto --dist loadgroup --no-loadscope-reorder --durations=15 "$@"
