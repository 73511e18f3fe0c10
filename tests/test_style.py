"""The code is formatted by `ruff format` and passes `ruff check` (100 columns,
pyproject.toml's rules): run `ruff format . && ruff check --fix .` before committing."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.parametrize("command", [["format", "--check"], ["check"]])
def test_ruff(command):
    result = subprocess.run(
        [sys.executable, "-m", "ruff", *command, "."], cwd=ROOT, capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr
