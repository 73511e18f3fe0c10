"""Kill -9 in the middle of a run, resume with resume=latest: the rest of the run is
what an uninterrupted run does, number for number."""

import os
import signal
import subprocess
import sys
import time

import pytest

from alignflow.sdk.tracking import read_metrics
from tests.helpers import FAST, strip_times

ARGS = [*FAST, "train.iterations=8", "checkpoint.every=2", "checkpoint.keep_last=3", "data.eval=",
        "train.optimizer_steps=3", "train.ema_decay=0.5"]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}


def cli(out, *extra):
    return [sys.executable, "-m", "alignflow.sdk.cli", "train", *ARGS, f"output_dir={out}", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The metrics of the run both tests must reproduce, run once for the module."""
    out = tmp_path_factory.mktemp("full")
    subprocess.run(cli(out), check=True, env=ENV, capture_output=True)
    return strip_times(read_metrics(out))


@pytest.mark.slow
def test_sigkill_then_resume_latest_matches_an_uninterrupted_run(tmp_path, uninterrupted):
    out = tmp_path / "killed"
    proc = subprocess.Popen(cli(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not (out / "checkpoint-4" / "manifest.json").exists():
        assert proc.poll() is None, "the run ended before it could be killed"
        assert time.time() < deadline
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert not (out / "checkpoint-8").exists(), "killed too late to test anything"

    done = subprocess.run(cli(out, "checkpoint.resume=latest"), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr
    resumed = strip_times(read_metrics(out))
    assert [r["iteration"] for r in resumed] == list(range(1, 9))
    assert resumed == uninterrupted


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path, uninterrupted):
    """The process is SIGKILLed half way through writing checkpoint 6 (a failpoint in
    the save); resume=latest continues from checkpoint 4 and ends where an uninterrupted
    run ends, number for number."""
    out = tmp_path / "killed"
    died = subprocess.run(cli(out), env={**ENV, "ALIGNFLOW_FAILPOINT": "checkpoint.write:6"}, capture_output=True)
    assert died.returncode == -signal.SIGKILL
    partial = [p.name for p in out.iterdir() if p.name.startswith(".checkpoint-6.tmp")]
    assert partial and (out / partial[0] / "trained.safetensors").exists()  # really killed mid-write
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-6").exists()

    done = subprocess.run(cli(out, "checkpoint.resume=latest"), env=ENV, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "resumed from" in done.stderr and "checkpoint-4" in done.stderr and partial[0] in done.stderr
    assert not any(p.name.startswith(".checkpoint-") for p in out.iterdir())  # the partial write is cleaned up
    resumed = strip_times(read_metrics(out))
    assert [r["iteration"] for r in resumed] == list(range(1, 9))
    assert resumed == uninterrupted
