"""One run per output folder: a second run, a requeued resume or an overwrite against a
live run fails at once naming the holder; the lock dies with its process."""

import functools
import os
import signal
import subprocess
import sys

import pytest

from alignflow.sdk import runlock
from tests.helpers import FAST

ENV = {**os.environ, "HF_HUB_OFFLINE": "1"}
HOLD = (
    "import sys, time; from pathlib import Path; from alignflow.sdk import runlock; "
    "runlock.acquire(Path(sys.argv[1])); print('held', flush=True); time.sleep(120)"
)


@pytest.fixture
def held(tmp_path):
    """Another process holding tmp_path's lock."""
    proc = subprocess.Popen(
        [sys.executable, "-c", HOLD, str(tmp_path)], stdout=subprocess.PIPE, text=True, env=ENV
    )
    assert proc.stdout.readline().strip() == "held"
    yield proc
    proc.kill()
    proc.wait()


@pytest.mark.parametrize("extra", [[], ["checkpoint.resume=latest"], ["checkpoint.overwrite=true"]])
def test_a_second_run_fails_at_once_naming_the_holder(tmp_path, held, extra, capsys, monkeypatch):
    import alignflow.adapters.image.pixel as pixel
    from alignflow.sdk.cli import main

    @functools.wraps(pixel.load_pixel_policy)
    def never(*a, **k):
        raise AssertionError("a model was built in a folder another run holds")

    monkeypatch.setattr(pixel, "load_pixel_policy", never)
    assert main(["train", *FAST, f"output_dir={tmp_path}", *extra]) == 2
    err = capsys.readouterr().err
    lines = [x for x in err.splitlines() if x.startswith("alignflow:")]
    assert lines == [lines[0]] and f"is in use by pid {held.pid}" in lines[0], err
    assert "Traceback" not in err and not (tmp_path / "metrics.jsonl").exists()


def test_the_lock_dies_with_its_process(tmp_path, held):
    with pytest.raises(runlock.RunLocked, match=f"pid {held.pid}"):
        runlock.acquire(tmp_path)
    held.send_signal(signal.SIGKILL)
    held.wait()
    key = runlock.acquire(tmp_path)  # no stale lock after a kill
    runlock.release(key)


def test_the_lock_is_reentrant_within_a_process(tmp_path):
    a, b = runlock.acquire(tmp_path), runlock.acquire(tmp_path)
    runlock.release(a)
    held = subprocess.run(
        [
            sys.executable,
            "-c",
            "import sys; from pathlib import Path; from alignflow.sdk import "
            "runlock; runlock.acquire(Path(sys.argv[1]))",
            str(tmp_path),
        ],
        capture_output=True,
        text=True,
        env=ENV,
    )
    assert held.returncode != 0 and f"pid {os.getpid()}" in held.stderr  # still held by b
    runlock.release(b)
    assert (
        subprocess.run(
            [sys.executable, "-c", HOLD.replace("time.sleep(120)", "pass"), str(tmp_path)],
            env=ENV,
            capture_output=True,
        ).returncode
        == 0
    )


def test_a_finished_run_leaves_no_lock_file(tmp_path):
    runlock.release(runlock.acquire(tmp_path))
    assert not (tmp_path / runlock.LOCK_FILE).exists()
