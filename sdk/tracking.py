"""Where metrics go: a JSON-lines file (always), the trackers accelerate drives
(TensorBoard, wandb) and a console progress bar. Only the main process writes.

Every start of a run (fresh or resumed) also records the environment it ran in
(versions, machine, git commit) in ``environment.jsonl``, so that a page shows what
produced its numbers, also when a run was resumed with other code."""

from __future__ import annotations

import contextlib
import json
import math
import os
import platform
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignflow.sdk.files import atomic_write_text

METRICS_FILE = "metrics.jsonl"
ENVIRONMENT_FILE = "environment.jsonl"
TRAIN_PHASES = ("rollout", "reward", "train")  # an iteration's timed phases (time/<phase>)


def train_seconds(row: dict[str, Any]) -> float:
    """The seconds a metrics row's training iteration took: its phases' sum (0 for an
    evaluation-only row). What ``train.max_seconds`` and the benchmarks' wall clock count."""
    return sum(row.get(f"time/{p}", 0.0) for p in TRAIN_PHASES)


def environment() -> dict[str, str]:
    """Versions, machine and git commit, for reproducing a run's numbers."""
    import importlib.metadata as md

    import torch

    env = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("alignflow", "torch", "diffusers", "transformers", "accelerate", "peft"):
        try:
            env[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            env[pkg] = "not installed"
    env["cpus"] = str(os.cpu_count())
    env["threads"] = str(torch.get_num_threads())
    env["gpu"] = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "none"
    env["git commit"] = git_commit()
    return env


def git_commit() -> str:
    """The commit of this alignflow checkout (with "+ uncommitted changes" when its
    tracked files differ from it), else the commit ``git archive`` wrote into the
    copy (``sdk/_commit.py``), else why there is none."""
    root = Path(__file__).resolve().parents[1]  # the repository root of a checkout

    def git(*args: str) -> str | None:
        try:
            done = subprocess.run(
                ["git", *args], capture_output=True, text=True, timeout=10, cwd=root
            )
        except (OSError, subprocess.SubprocessError):
            return None
        return done.stdout.strip() if done.returncode == 0 else None

    top = git("rev-parse", "--show-toplevel")
    if top and Path(top).resolve() == root:  # not a repository that merely contains us
        commit = git("rev-parse", "HEAD") or "no commit"
        changed = git("status", "--porcelain", "--untracked-files=no")
        return commit + (" + uncommitted changes" if changed else "")
    from alignflow.sdk._commit import COMMIT

    return COMMIT if not COMMIT.startswith("$") else "not a git checkout"


def record_environment(output_dir: Path, start: int | None) -> None:
    """Append this start's environment to the run's ``environment.jsonl`` (a fresh run
    starts the file over; a resumed one drops the starts after its checkpoint, whose
    iterations it drops too)."""
    path = Path(output_dir) / ENVIRONMENT_FILE
    rows = (
        [] if start is None else [r for r in read_metrics(path) if r.get("iteration", 0) <= start]
    )
    rows.append({"iteration": start or 0, "time": time.strftime("%Y-%m-%d %H:%M:%S %Z")})
    rows[-1].update(environment())
    atomic_write_text(path, "".join(json.dumps(r) + "\n" for r in rows))


def read_metrics(path: Path) -> list[dict[str, Any]]:
    path = Path(path)
    if path.is_dir():
        path = path / METRICS_FILE
    if not path.is_file():
        return []
    rows = []
    for line in path.read_text().splitlines():
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:  # a line cut short by a kill
            continue
    return rows


class Timer:
    """Accumulates wall-clock seconds per phase: ``with timer("rollout"): ...``."""

    def __init__(self):
        self.seconds: dict[str, float] = defaultdict(float)

    @contextlib.contextmanager
    def __call__(self, name: str):
        start = time.perf_counter()
        try:
            yield
        finally:
            self.seconds[name] += time.perf_counter() - start


class ForwardCounter:
    """Counts the denoiser's forward rows (NFEs) while ``counting``: a forward pre-hook on
    each module reads the batch size of its first tensor argument. A classifier-free
    guided step counts twice (its batched call has 2B rows), a forward with a backward
    once, as the algorithm benchmarks count compute."""

    def __init__(self, modules: Any):
        self.n, self._on = 0, False
        self._hooks = [m.register_forward_pre_hook(self._count, with_kwargs=True) for m in modules]

    def _count(self, module: Any, args: tuple, kwargs: dict) -> None:
        import torch

        if self._on:
            first = next(
                (a for a in (*args, *kwargs.values()) if isinstance(a, torch.Tensor)), None
            )
            self.n += int(first.shape[0]) if first is not None and first.ndim else 0

    @contextlib.contextmanager
    def counting(self):
        self._on = True
        try:
            yield
        finally:
            self._on = False


def flat(d: dict, prefix: str = "") -> dict[str, Any]:
    """A nested config as {dotted key: scalar} (trackers take flat hyperparameters)."""
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out


def _clean(v: Any) -> Any:
    return None if isinstance(v, float) and not math.isfinite(v) else v


class MetricsLog:
    def __init__(
        self, accelerator, output_dir: Path, *, progress_bar: bool, total: int, start: int | None
    ):
        """``start``: the iteration a resumed run continues from (lines after it, written
        by the interrupted run, are dropped), or None for a fresh run (file emptied)."""
        self.acc = accelerator
        self.path = Path(output_dir) / METRICS_FILE
        self.bar = None
        self.base: dict[str, float] | None = None  # a resumed run's evaluation at iteration 0
        self.seconds = 0.0  # training seconds of the rows so far (main process)
        if accelerator.is_main_process:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            record_environment(output_dir, start)
            rows = (
                []
                if start is None
                else [r for r in read_metrics(self.path) if r.get("iteration", 0) <= start]
            )
            # atomic: a full disk during the rewrite keeps every row the file had
            atomic_write_text(self.path, "".join(json.dumps(r) + "\n" for r in rows))
            self.seconds = sum(train_seconds(r) for r in rows)
            base = [r for r in rows if r.get("iteration") == 0 and "eval/reward_mean" in r]
            self.base = (
                {k: v for k, v in base[0].items() if k.startswith("eval/")} if base else None
            )
            if progress_bar:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, initial=start or 0, desc="train", dynamic_ncols=True)

    def log(self, iteration: int, metrics: dict[str, float], advance: bool = True) -> None:
        self.seconds += train_seconds(metrics)
        if self.acc.trackers:
            self.acc.log(
                {k: v for k, v in metrics.items() if isinstance(v, (int, float))}, step=iteration
            )
        if not self.acc.is_main_process:
            return
        with open(self.path, "a") as f:
            f.write(
                json.dumps({"iteration": iteration, **{k: _clean(v) for k, v in metrics.items()}})
                + "\n"
            )
            f.flush()
        if self.bar is not None:
            shown = {
                k.split("/", 1)[1]: f"{v:.3f}"
                for k, v in metrics.items()
                if k in ("train/reward_mean", "eval/reward_mean") or k.endswith("accuracy_mean")
            }
            self.bar.set_postfix(shown, refresh=False)
            if advance:
                self.bar.update(1)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
