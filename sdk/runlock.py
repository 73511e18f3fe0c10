"""One run per output folder: an exclusive OS lock held for the run's lifetime.

``<output_dir>/.alignflow.lock`` is locked with ``flock`` (released by the kernel when
the process dies, however it dies, so a killed run never leaves a stale lock) and
holds the holder's pid, host and command for the error a second run gets; the file is
removed when the run ends. Within one process the lock is re-entrant (two Trainers of
one script on one folder share it).
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
import sys
import time
from pathlib import Path

from alignflow.sdk.errors import AlignflowError

LOCK_FILE = ".alignflow.lock"
_HELD: dict[str, list] = {}  # resolved folder -> [fd, holders in this process]


class RunLocked(AlignflowError):
    """Another live process holds the output folder."""


def acquire(folder: Path) -> str:
    """Lock ``folder`` (created if missing) or raise :class:`RunLocked` at once. Returns
    the key to :func:`release` it with."""
    folder.mkdir(parents=True, exist_ok=True)
    key = str(folder.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
        return key
    path = folder / LOCK_FILE
    fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _read(fd)
        os.close(fd)
        raise RunLocked(
            f"output_dir {folder} is in use by pid {holder.get('pid', '?')} on "
            f"{holder.get('host', '?')} "
            f"({holder.get('command', '?')}, since {holder.get('since', '?')}); wait for it to "
            "end, stop it, or "
            "choose another output_dir"
        ) from None
    info = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "since": time.strftime("%Y-%m-%d %H:%M:%S"),
        "command": " ".join(["alignflow", *sys.argv[1:]])[:300],
    }
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps(info).encode(), 0)
    _HELD[key] = [fd, 1]
    return key


def release(key: str) -> None:
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] == 0:
        # unlink while still locked: a run starting now creates a fresh file; unlocking
        # first would let it lock the old inode just before the name goes away
        with contextlib.suppress(OSError):
            os.unlink(Path(key) / LOCK_FILE)
        fcntl.flock(held[0], fcntl.LOCK_UN)
        os.close(held[0])
        del _HELD[key]


def _read(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0).decode() or "{}")
    except (ValueError, OSError):
        return {}
