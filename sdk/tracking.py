"""Where metrics go: a JSON-lines file (always), the trackers accelerate drives
(TensorBoard, wandb) and a console progress bar. Only the main process writes."""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignflow.sdk.files import atomic_write_text

METRICS_FILE = "metrics.jsonl"
TRAIN_PHASES = ("rollout", "reward", "train")  # an iteration's timed phases (time/<phase>)


def train_seconds(row: dict[str, Any]) -> float:
    """The seconds a metrics row's training iteration took: its phases' sum (0 for an
    evaluation-only row). What ``train.max_seconds`` and the benchmarks' wall clock count."""
    return sum(row.get(f"time/{p}", 0.0) for p in TRAIN_PHASES)


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
