"""Kill -9 in the middle of a run (at its worst moment: half way through writing a
checkpoint), or pre-empt it with SIGTERM; resume with resume=latest: the rest of the run
is what an uninterrupted run does, number for number."""

import os
import signal
import subprocess
import sys
import time

import pytest

from alignflow.sdk.tracking import read_metrics
from tests.helpers import FAST, strip_times

ARGS = [
    *FAST,
    "train.iterations=8",
    "checkpoint.every=2",
    "checkpoint.keep_last=3",
    "data.eval=",
    "train.optimizer_steps=3",
    "train.ema_decay=0.5",
]


ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
# one pytest-xdist worker runs them all: the uninterrupted run is made once
pytestmark = pytest.mark.xdist_group("resume")


def cli(out, *extra):
    return [sys.executable, "-m", "alignflow.sdk.cli", "train", *ARGS, f"output_dir={out}", *extra]


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """The metrics of the run both tests must reproduce, run once for the module."""
    out = tmp_path_factory.mktemp("full")
    subprocess.run(cli(out), check=True, env=ENV, capture_output=True)
    return strip_times(read_metrics(out))


@pytest.mark.slow
def test_sigkill_during_a_checkpoint_write_then_resume(tmp_path, uninterrupted):
    """The process is SIGKILLed half way through writing checkpoint 6 (a failpoint in
    the save); resume=latest continues from checkpoint 4 and ends where an uninterrupted
    run ends, number for number."""
    out = tmp_path / "killed"
    died = subprocess.run(
        cli(out), env={**ENV, "ALIGNFLOW_FAILPOINT": "checkpoint.write:6"}, capture_output=True
    )
    assert died.returncode == -signal.SIGKILL
    partial = [p.name for p in out.iterdir() if p.name.startswith(".checkpoint-6.tmp")]
    # really killed mid-write
    assert partial and (out / partial[0] / "trained.safetensors").exists()
    assert (out / "checkpoint-4").is_dir() and not (out / "checkpoint-6").exists()

    done = subprocess.run(
        cli(out, "checkpoint.resume=latest"), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert (
        "resumed from" in done.stderr
        and "checkpoint-4" in done.stderr
        and partial[0] in done.stderr
    )
    # the partial write is cleaned up
    assert not any(p.name.startswith(".checkpoint-") for p in out.iterdir())
    resumed = strip_times(read_metrics(out))
    assert [r["iteration"] for r in resumed] == list(range(1, 9))
    assert resumed == uninterrupted


def wait_for_row(out, iteration, proc, seconds=240):
    deadline = time.time() + seconds
    while not any(r.get("iteration", 0) >= iteration for r in read_metrics(out)):
        assert proc.poll() is None, "the run ended before the signal"
        assert time.time() < deadline
        time.sleep(0.05)


@pytest.mark.slow
def test_sigterm_saves_a_checkpoint_exits_nonzero_and_resume_matches(tmp_path, uninterrupted):
    """Pre-emption: SIGTERM mid-run finishes or abandons the iteration, saves, prints one
    line and exits 143; resume=latest then ends as the uninterrupted run does."""
    out = tmp_path / "preempted"
    proc = subprocess.Popen(
        cli(out), env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )
    wait_for_row(out, 3, proc)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGTERM, err[-2000:]
    ours = [line for line in err.splitlines() if line.startswith("alignflow:")]
    assert ours[0].startswith("alignflow: SIGTERM: stopping after this iteration with a checkpoint")
    assert (
        ours[1].startswith("alignflow: stopped: stopped by SIGTERM at iteration") and len(ours) == 2
    ), ours
    stopped_at = int(ours[1].split("at iteration ")[1].split(";")[0])
    assert 3 <= stopped_at < 8 and (out / f"checkpoint-{stopped_at}" / "manifest.json").is_file()
    assert "Traceback" not in err

    done = subprocess.run(
        cli(out, "checkpoint.resume=latest"), env=ENV, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert strip_times(read_metrics(out)) == uninterrupted


@pytest.mark.slow
def test_a_stop_that_outlives_its_grace_exits_without_a_checkpoint(tmp_path):
    out = tmp_path / "slow_stop"
    proc = subprocess.Popen(
        cli(out, "checkpoint.stop_grace=0.01", "checkpoint.every=0"),
        env=ENV,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    wait_for_row(out, 1, proc)
    proc.send_signal(signal.SIGHUP)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 128 + signal.SIGHUP, err[-2000:]
    assert "no checkpoint within checkpoint.stop_grace = 0.01 s" in err
    assert not list(out.glob("checkpoint-*"))


def test_a_signal_after_training_exits_at_once_as_a_stop():
    """Once the run is saved (the trainer then re-evaluates a resumed run's base and
    writes its report, minutes for speech), a signal exits at once with 128 + its
    number, so that a benchmark records the job as stopped, not killed."""
    code = (
        "import os, signal, time\n"
        "from alignflow.sdk.stopping import StopOnSignal\n"
        "with StopOnSignal(120) as stop:\n"
        "    stop.finishing('the run is saved')\n"
        "    os.kill(os.getpid(), signal.SIGTERM)\n"
        "    time.sleep(30)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 128 + signal.SIGTERM, done.stderr
    assert "alignflow: SIGTERM: stopped; the run is saved" in done.stderr
