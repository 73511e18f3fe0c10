"""Stopping on SIGTERM, SIGINT or SIGHUP with a checkpoint, within a bounded time.

A scheduler pre-empting a job sends SIGTERM and waits a grace period before SIGKILL.
On the first signal the trainer finishes the iteration's update if it has started
one, or abandons the iteration if it has not (its rollouts are redone on resume),
saves a checkpoint and exits with 128 + the signal number. If that takes longer than
``checkpoint.stop_grace`` seconds, or a second signal comes, the process exits at once
without saving: checkpoints are written atomically, so the last one stands.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
from typing import Any

from alignflow.sdk.errors import AlignflowError

SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


class Stopped(AlignflowError):
    """The run stopped on a signal (after saving a checkpoint, if it could)."""

    def __init__(self, signum: int, message: str):
        super().__init__(message)
        self.signum = signum

    @property
    def exit_code(self) -> int:
        return 128 + self.signum


class StopOnSignal:
    """``with StopOnSignal(grace) as stop:`` installs the handlers (main thread only;
    elsewhere it does nothing) and restores the old ones on exit. ``stop.signum`` is
    the first signal received, or None."""

    def __init__(self, grace: float):
        self.grace = grace
        self.signum: int | None = None
        self._received = (
            0  # signals this process got (not counting a stop learnt from another process)
        )
        self._old: dict[int, Any] = {}
        self._timer: threading.Timer | None = None
        self._finishing: str | None = None

    def finishing(self, note: str) -> None:
        """The run is saved: from now on a signal exits at once, with 128 + its number (a
        stop, to whoever launched the run) and ``note`` on stderr."""
        self._finishing = note

    def __enter__(self) -> StopOnSignal:
        if threading.current_thread() is threading.main_thread():
            for s in SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc: Any) -> None:
        for s, old in self._old.items():
            signal.signal(s, old)
        if self._timer is not None:
            self._timer.cancel()

    def _handle(self, signum: int, frame: Any) -> None:
        name = signal.Signals(signum).name
        if self._finishing is not None:
            _say(f"alignflow: {name}: stopped; {self._finishing}")
            os._exit(128 + signum)
        self._received += 1
        if self._received > 1:
            _say(
                f"alignflow: {name} again: exiting now without a checkpoint (the last saved one "
                "stands)"
            )
            os._exit(128 + signum)
        self.signum = self.signum or signum
        if self._timer is not None:  # already stopping on another process's signal, under its grace
            return
        _say(
            f"alignflow: {name}: stopping after this iteration with a checkpoint "
            f"(at most {self.grace:g} s; send it again to stop at once)"
        )
        self._timer = threading.Timer(self.grace, self._give_up, args=(signum,))
        self._timer.daemon = True
        self._timer.start()

    def _give_up(self, signum: int) -> None:
        _say(
            f"alignflow: no checkpoint within checkpoint.stop_grace = {self.grace:g} s: exiting "
            "without one "
            "(the last saved one stands)"
        )
        os._exit(128 + signum)

    def requested(self, acc: Any) -> bool:
        """Whether any process got a signal: decided on a value gathered from every
        process, so that all of them stop at the same point."""
        import torch

        flag = torch.tensor([1 if self.signum is not None else 0], device=acc.device)
        if acc.num_processes > 1:
            flag = acc.gather(flag)
        hit = int(flag.max()) > 0
        # another process was told to stop: stop too, under the same grace
        if hit and self.signum is None:
            self.signum = int(signal.SIGTERM)
            self._timer = threading.Timer(self.grace, self._give_up, args=(self.signum,))
            self._timer.daemon = True
            self._timer.start()
        return hit


def _say(line: str) -> None:
    sys.stderr.write(line + "\n")
    sys.stderr.flush()
