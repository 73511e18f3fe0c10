"""Running a benchmark's jobs: each its own ``alignflow train`` process, N at a time.

A crash, an out-of-memory kill or a bad job takes down that job only: its exit code and
its error lines go to ``jobs/<id>/job.json`` and the others go on. Running the same
benchmark again skips the jobs that finished, resumes the interrupted ones from their
latest checkpoint (``checkpoint.resume=latest``; a job killed before its first
checkpoint starts over) and retries the failed ones. Nothing a job saved is deleted.
A job stopped with the benchmark is recorded as ``stopped``, not ``failed``.

If the benchmark itself is stopped (SIGTERM, SIGINT, its terminal closing, even a
SIGKILL), each running job notices and stops as a pre-empted run does: with a
checkpoint, to be resumed by the next run of the benchmark.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from alignflow.sdk.bench.grid import Job
from alignflow.sdk.checkpoint import list_checkpoints
from alignflow.sdk.files import atomic_write_text

JOB_FILE = "job.json"
DONE, FAILED, RUNNING, STOPPED = "done", "failed", "running", "stopped"
# the benchmark's stop signals: a job exits 128 + signal after saving a checkpoint, or is
# killed by the signal (return code -signal) when it comes before the job's handlers do
STOP_SIGNALS = (signal.SIGHUP, signal.SIGINT, signal.SIGTERM)
STOP_CODES = (*(128 + s for s in STOP_SIGNALS), *(-s for s in STOP_SIGNALS))


def job_dir(out: Path, job: Job) -> Path:
    return Path(out) / "jobs" / job.id


def read_job(out: Path, job: Job) -> dict[str, Any]:
    path = job_dir(out, job) / JOB_FILE
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return {}


def run_jobs(
    jobs: list[Job], out: Path, *, parallel: int = 1, procs: int = 1, say=print
) -> dict[str, str]:
    """Run what is not done yet, ``parallel`` at a time; returns {job id: state}."""
    out = Path(out)
    states = {j.id: read_job(out, j).get("state", "") for j in jobs}
    todo = [j for j in jobs if states[j.id] != DONE]
    say(f"{len(jobs) - len(todo)} of {len(jobs)} jobs done before; {len(todo)} to run")
    env = dict(os.environ)
    # the CPU threads shared among the jobs that run together, unless the user set it
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // (parallel * procs))))
    env["ALIGNFLOW_LAUNCHER_PID"] = str(os.getpid())  # a job stops (with a checkpoint) if we die
    running: dict[str, subprocess.Popen] = {}
    lock = threading.Lock()
    stopping = threading.Event()

    def run(job: Job) -> tuple[str, str]:
        if stopping.is_set():
            return job.id, states[job.id]
        state = _run_one(job, out, procs, env, running, lock, stopping)
        say(f"{job.id}: {state}")
        return job.id, state

    previous = _forward_signals(running, lock, stopping)
    try:
        with ThreadPoolExecutor(parallel) as pool:
            states.update(dict(pool.map(run, todo)))
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stopping.is_set():
        raise KeyboardInterrupt  # the jobs saved checkpoints; the next run resumes them
    return states


def _run_one(job, out, procs, env, running, lock, stopping) -> str:
    folder = job_dir(out, job)
    folder.mkdir(parents=True, exist_ok=True)
    record = read_job(out, job)
    resume = bool(list_checkpoints(folder))
    cmd = [
        sys.executable,
        "-m",
        "alignflow.sdk.cli",
        "train",
        *(["--procs", str(procs)] if procs > 1 else []),
        *job.overrides,
        *(["checkpoint.resume=latest"] if resume else []),
    ]
    record.update(
        id=job.id,
        experiment=job.experiment,
        algorithm=job.algorithm,
        seed=job.seed,
        axes=job.axes,
        modality=job.modality,
        state=RUNNING,
        attempts=record.get("attempts", 0) + 1,
        resumed=resume,
        command=cmd,
        started=time.time(),
    )
    record.pop("error", None)
    atomic_write_text(folder / JOB_FILE, json.dumps(record, indent=1))
    with open(folder / "log.txt", "a") as log:
        log.write(f"\n$ {' '.join(cmd)}\n")
        log.flush()
        with lock:
            if stopping.is_set():
                return record.get("state", "")
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env)
            running[job.id] = proc
        code = proc.wait()
        with lock:
            running.pop(job.id, None)
    record.update(returncode=code, finished=time.time())
    record["state"] = outcome(code, stopping.is_set())
    if code != 0:
        record["error"] = _error_lines(folder / "log.txt", code)
    atomic_write_text(folder / JOB_FILE, json.dumps(record, indent=1))
    return record["state"]


def outcome(code: int, stopping: bool) -> str:
    """A job's state from its exit code. A job that ends on the benchmark's own stop is
    ``stopped``: it resumes as a failed one does, but it is not a failure."""
    if code == 0:
        return DONE
    return STOPPED if stopping and code in STOP_CODES else FAILED


def _error_lines(log: Path, code: int) -> str:
    """The job's own ``alignflow:`` lines (one-line errors), else the end of its log."""
    lines = log.read_text(errors="replace").splitlines()
    last_run = lines[max(i for i, line in enumerate(lines) if line.startswith("$ ")) + 1 :]
    ours = [line for line in last_run if line.startswith("alignflow:")]
    if code < 0:
        ours.append(f"killed by {signal.Signals(-code).name}")
    return "\n".join(ours or last_run[-15:])


def _forward_signals(running, lock, stopping) -> dict[int, Any]:
    """SIGTERM / SIGINT / SIGHUP to the benchmark: no new jobs, and the running ones get
    SIGTERM (they save a checkpoint and exit)."""
    if threading.current_thread() is not threading.main_thread():
        return {}

    def handler(signum, frame):
        stopping.set()
        with lock:
            for proc in running.values():
                if proc.poll() is None:
                    proc.send_signal(signal.SIGTERM)

    return {
        sig: signal.signal(sig, handler) for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
    }
