"""examples/points: a new modality in its own folder (a point-cloud policy, its reward,
its experiment and prompts) trains from the command line with nothing added to
alignflow, as docs/add_an_adapter.md describes."""

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).parents[1]
EXAMPLE = ROOT / "examples" / "points"


def alignflow(*args: str, plugins: bool = True) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(EXAMPLE)}
    if plugins:
        env["ALIGNFLOW_PLUGINS"] = "points"
    cmd = [sys.executable, "-m", "alignflow.sdk.cli", *args]
    return subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)


def test_a_new_modality_trains_from_the_cli(tmp_path):
    done = alignflow(
        "train", "experiment=points", f"output_dir={tmp_path}", "logging.progress_bar=false"
    )
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((tmp_path / "summary.json").read_text())
    before, after = summary["before"], summary["after"]
    # measured: reward -1.08 -> -0.24, clouds within 0.25 of the place 0% -> 58% (held-out places)
    assert after["eval/reward_mean"] >= before["eval/reward_mean"] + 0.5, (before, after)
    assert after["eval/gather/hit_mean"] >= before["eval/gather/hit_mean"] + 0.3, (before, after)
    assert (tmp_path / "reward_curve.png").is_file()
    assert (tmp_path / "samples" / "before_after.pt").is_file()  # no writer declared: the raw one


def test_the_example_is_only_visible_when_its_package_is_declared(tmp_path):
    done = alignflow("config", "experiment=points", plugins=False)
    assert done.returncode == 2 and "experiment" in done.stderr and "points" in done.stderr
    assert "Traceback" not in done.stderr
