"""A run's checkpoints: starting fresh, resuming, saving and pruning, with the rules
that keep what is already saved.

- A fresh run (``checkpoint.resume`` empty or ``none``) in a folder that holds
  checkpoints stops, unless ``checkpoint.overwrite=true`` (which deletes them).
- ``resume=latest`` tries the checkpoints newest first; one that fails to verify, to
  load, or to fit the policy is skipped with a warning naming the reason. With none
  loadable it stops, listing each and why; it never deletes one. A folder with no
  checkpoint at all starts fresh (the first run of a requeued job).
- Resuming with a config that changes the numbers (seed, learning rate, group size,
  the prompts...) stops with the fields listed, unless
  ``checkpoint.allow_config_change=true``; the change is then recorded in the
  checkpoint and in summary.json.
- Pruning (``keep_last``) deletes only checkpoints that verify and belong to this run
  (written by this process, or saved with this run's config); a checkpoint it cannot
  read is never deleted, and one in the way of a new save is set aside.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk.errors import CheckpointError, ConfigError
from alignflow.sdk.sharded import load_optimizer_state, optimizer_state
from alignflow.sdk.stopping import Stopped

log = logging.getLogger(__name__)

# Fields that may differ on resume: they change where and how long the run goes, how it
# is evaluated and reported and how it reacts to failures, never the numbers it trains
# with. data.train is compared by its content (the prompts), not by its path.
FREE = (
    "name",
    "output_dir",
    "train.iterations",
    "train.max_seconds",
    "data.train",
    "data.eval",
    "eval.",
    "checkpoint.",
    "logging.",
    "train.reward_timeout",
    "train.reward_max_failures",
    "train.reward_failures",
)


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and v:
            out.update(flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def fingerprint(prompts: Any) -> str:
    """sha256 of a prompt set's prompts and metadata: the data the numbers depend on,
    whatever path it was read from."""
    if prompts is None:
        return ""
    blob = json.dumps([prompts.prompts, prompts.metadata], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()


def config_changes(saved: dict[str, Any], current: dict[str, Any]) -> dict[str, tuple[Any, Any]]:
    """{field: (saved, current)} for every field that changes the numbers. Both are
    ``{"config": run config dict, "prompts": {"train": sha}}``; prompts
    saved by an older version (none) are not compared."""
    a, b = flatten(saved.get("config", {})), flatten(current["config"])
    out = {
        k: (a.get(k), b.get(k))
        for k in sorted(set(a) | set(b))
        if a.get(k) != b.get(k) and not k.startswith(FREE)
    }
    for split, sha in (saved.get("prompts") or {}).items():
        if sha != current["prompts"].get(split):
            out[f"the prompts of data.{split}"] = (sha[:12], current["prompts"].get(split, "")[:12])
    return out


class RunCheckpoints:
    """The checkpoints of one run in ``out``. ``config`` is the run's config as a dict
    and ``prompts`` the fingerprints of its prompt sets; both are saved in every
    checkpoint and compared on resume."""

    def __init__(self, out: Path, ckpt_cfg: Any, config: dict[str, Any], prompts: dict[str, str]):
        self.out, self.cfg = out, ckpt_cfg
        self.identity = {"config": config, "prompts": prompts}
        self.written: set[str] = set()  # checkpoint names this process wrote
        self.changes: list[dict[str, Any]] = []  # allowed config changes, oldest first

    # ------------------------------------------------------------------ starting

    def claim(self) -> None:
        """A fresh run must not mix with an earlier run's checkpoints (pruning and
        resume=latest would pick them up): stop, unless checkpoint.overwrite."""
        old = ckpt.list_checkpoints(self.out)
        if not old:
            return
        if not self.cfg.overwrite:
            raise ConfigError(
                "checkpoint.resume",
                self.cfg.resume,
                "'latest' to continue the run in "
                f"{self.out} ({len(old)} checkpoints, newest {old[-1].name}), or "
                "checkpoint.overwrite=true to start over and delete them, or another output_dir",
            )
        log.warning(
            "starting fresh in %s: deleting %d checkpoints of an earlier run "
            "(checkpoint.overwrite=true)",
            self.out,
            len(old),
        )
        for path in old:
            ckpt.shutil.rmtree(path)

    def resume(
        self, where: str, apply: Callable[[ckpt.Checkpoint], None]
    ) -> ckpt.Checkpoint | None:
        """Load ``where`` ('latest' or a path) and hand it to ``apply``; returns it, or
        None when 'latest' finds an empty folder."""
        if where != "latest":
            c = ckpt.load_checkpoint(Path(where))
            self._check_config(c)
            self._apply(c, apply)
            return c
        candidates = ckpt.list_checkpoints(self.out)
        rejected = []
        for path in reversed(candidates):
            try:
                c = ckpt.load_checkpoint(path)
            except CheckpointError as e:
                log.warning("skipping %s: %s", path.name, e)
                rejected.append(f"{path.name}: {str(e).removeprefix(f'checkpoint {path}: ')}")
                continue
            # the newest readable checkpoint decides: older ones share its config
            self._check_config(c)
            try:
                self._apply(c, apply)
            except CheckpointError as e:
                log.warning("skipping %s: %s", path.name, e)
                rejected.append(f"{path.name}: {str(e).removeprefix(f'checkpoint {path}: ')}")
                continue
            return c
        if candidates:
            raise CheckpointError(
                f"checkpoint.resume=latest: none of the {len(candidates)} checkpoints in "
                f"{self.out} can be loaded "
                f"[{'; '.join(rejected)}]. Nothing was deleted: repair or move them, name one with "
                "checkpoint.resume=PATH, or start over with checkpoint.resume=none "
                "checkpoint.overwrite=true "
                "(deletes them) or another output_dir"
            )
        log.info(
            "checkpoint.resume=latest: no checkpoint in %s yet; starting from scratch", self.out
        )
        return None

    def _apply(self, c: ckpt.Checkpoint, apply: Callable[[ckpt.Checkpoint], None]) -> None:
        try:
            apply(c)
        except CheckpointError:
            raise
        except Exception as e:
            # a state that does not fit (optimizer groups, EMA size, algorithm state)
            raise CheckpointError(
                f"checkpoint {c.path}: does not fit this run ({type(e).__name__}: {e})"
            ) from e
        self.changes = list(c.state.get("config_changes", [])) + self.changes
        log.info("resumed from %s at iteration %d", c.path, c.iteration)

    def _check_config(self, c: ckpt.Checkpoint) -> None:
        changed = config_changes(c.state, self.identity)
        if not changed:
            return
        listed = ", ".join(
            f"{k}: {a!r} -> {b!r}" for k, a, b in ((k, *v) for k, v in changed.items())
        )
        if not self.cfg.allow_config_change:
            raise ConfigError(
                "checkpoint.resume",
                self.cfg.resume,
                f"the config {c.path.name} was saved with",
                hint=f"changed: {listed}; set checkpoint.allow_config_change=true to resume anyway",
            )
        log.warning(
            "resuming %s with a changed config (checkpoint.allow_config_change=true): %s",
            c.path.name,
            listed,
        )
        self.changes.append(
            {"iteration": c.iteration, "fields": {k: list(v) for k, v in changed.items()}}
        )

    # ------------------------------------------------------------------ saving

    def save(self, iteration: int, *, state: dict[str, Any], **tensors: Any) -> Path:
        """Write checkpoint-<iteration> (main process only), then prune."""
        final = self.out / f"checkpoint-{iteration}"
        if final.exists() and final.name not in self.written:
            ckpt.set_aside(final, f"in the way of iteration {iteration}'s save by a resumed run")
        path = ckpt.save_checkpoint(
            self.out,
            iteration,
            state={**state, **self.identity, "config_changes": self.changes},
            **tensors,
        )
        self.written.add(path.name)
        ckpt.prune(self.out, self.cfg.keep_last, self._may_delete)
        return path

    def _may_delete(self, path: Path) -> bool:
        """Pruning deletes a checkpoint of this run that verifies; nothing else."""
        if path.name in self.written:
            return True
        try:
            ckpt.verify(path)
            ours = not config_changes(
                json.loads((path / "trainer_state.json").read_bytes().decode("utf-8")),
                self.identity,
            )
        except (CheckpointError, OSError, ValueError, AttributeError) as e:
            log.warning(
                "keeping %s, which is not a readable checkpoint of this run (%s)", path.name, e
            )
            return False
        if not ours:
            log.warning("keeping %s: saved with another config", path.name)
        return ours


class RunState:
    """A training run's saved state: the trained weights, the optimizer, the EMA, the
    algorithm's own state, the global RNG and the run's counters; saved by the main
    process into ``checkpoints``, resumed by every process."""

    def __init__(
        self, checkpoints: RunCheckpoints, acc: Any, training: Any, algorithm: Any, cfg: Any
    ):
        """``training``: :class:`~alignflow.sdk.build.Training` (finetune, optimizer,
        EMA); ``cfg``: the run config (its seed and prompts per iteration are saved)."""
        self.checkpoints, self.acc, self.training = checkpoints, acc, training
        self.algorithm, self.seed, self.per_iteration = (
            algorithm,
            cfg.seed,
            cfg.sample.prompts_per_iteration,
        )
        self.counters = {"samples": 0, "dropped_samples": 0, "reward_failures": 0}
        self.saved_at: int | None = None  # the iteration of this process's last checkpoint

    def save(self, iteration: int) -> Path | None:
        """checkpoint-<iteration> (written by the main process; every process waits)."""
        path, t = None, self.training
        whole = {}
        if t.sharded is not None or self.acc.is_main_process:  # FSDP2: gathering takes all
            whole = dict(
                trained=t.finetune.state_dict(),
                ema=t.ema.state_dict() if t.ema else None,
                optimizer=optimizer_state(t.optimizer, t.sharded),
            )
        if self.acc.is_main_process:
            path = self.checkpoints.save(
                iteration,
                **whole,
                algorithm=self.algorithm.state_dict() or None,
                # where the prompt stream stands is a function of the iteration; kept for people
                state={
                    "seed": self.seed,
                    "counters": self.counters,
                    "data_position": iteration * self.per_iteration,
                },
            )
        self.saved_at = iteration
        self.acc.wait_for_everyone()
        return path

    def stop(self, iteration: int, signum: int) -> NoReturn:
        """After a signal: save (unless this iteration is saved already) and stop."""
        if self.saved_at != iteration:
            self.save(iteration)
        raise Stopped(
            signum,
            f"stopped by {signal.Signals(signum).name} at iteration {iteration}; "
            f"checkpoint-{iteration} is saved; continue with checkpoint.resume=latest",
        )

    def resume(self, where: str) -> ckpt.Checkpoint | None:
        """Finish partial saves (main process, under the folder's lock), then load
        ``where`` ('latest' or a path) by :meth:`RunCheckpoints.resume`'s rules."""
        if self.acc.is_main_process:
            for line in ckpt.recover_partial(self.checkpoints.out):
                log.warning("%s", line)
        self.acc.wait_for_everyone()
        c = self.checkpoints.resume(where, self.load)
        if c is not None:
            self.saved_at = c.iteration
        return c

    def load(self, c: ckpt.Checkpoint) -> None:
        """Put a read checkpoint back; anything that does not fit raises."""
        t = self.training
        if t.ema is not None and c.ema is None:
            log.warning(
                "checkpoint %s has no EMA; the EMA restarts from the current weights", c.path
            )
        if c.algorithm is None and self.algorithm.state_dict():
            raise CheckpointError(
                f"checkpoint {c.path} has no algorithm state, which {self.algorithm.name} "
                "needs (it was written by another algorithm)"
            )
        t.finetune.load_state_dict(c.trained)
        load_optimizer_state(t.optimizer, c.optimizer, t.sharded)
        if t.ema is not None and c.ema is not None:
            t.ema.load_state_dict(c.ema)
        self.algorithm.load_state_dict(c.algorithm or {})
        ckpt.restore_rng(c.rng)
        self.counters = dict(c.state.get("counters", self.counters))
