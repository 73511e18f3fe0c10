"""The training loop, one for every modality and algorithm.

Each iteration runs five phases, data flowing one way:

    1. rollout     the algorithm's rollout of this process's prompts, batch by batch;
                   each batch's media (and peeks) go to the reward worker at once
    2. score       the worker's rewards, failed calls counted (train.reward_failures)
    3. advantages  over the groups of every process, then the algorithm's training items
    4. update      inner epochs of shuffled micro-batches: loss, backward, one optimizer
                   step per accumulation window, EMA
    5. log         rewards, diversity, KL drift from the base, the update's stats, times
                   and the denoiser forwards (NFEs) of rollout and update

then evaluation (evaluation.py) and checkpoints (resume.py) on their schedules.
accelerate is the only distributed layer: it places the model, wraps it for DDP /
FSDP / DeepSpeed and runs autocast. All randomness comes from generators seeded by
(seed, iteration, prompt slot, group member), so a resumed run repeats exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import json
import logging
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch
from accelerate.utils import broadcast

from alignflow.sdk import runlock
from alignflow.sdk.advantages import GroupAdvantages
from alignflow.sdk.algorithms.base import StepContext
from alignflow.sdk.batching import batch_size, chunks, concat, select
from alignflow.sdk.build import (
    algorithm_class,
    build_accelerator,
    build_policy,
    build_rewards,
    build_training,
    build_writer,
)
from alignflow.sdk.config import RunConfig, validate
from alignflow.sdk.data import PromptSampler, PromptSet, load_prompts
from alignflow.sdk.diagnostics import drift_from_base, finite_mean, finite_std, group_diversities
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.evaluation import Evaluator
from alignflow.sdk.random import generator
from alignflow.sdk.report import write_report
from alignflow.sdk.resume import RunCheckpoints, RunState, fingerprint
from alignflow.sdk.scoring import Batch, Scored, Scorer, check_failures, check_nan
from alignflow.sdk.stopping import StopOnSignal, Stopped
from alignflow.sdk.tracking import ForwardCounter, MetricsLog, Timer, flat, train_seconds

log = logging.getLogger(__name__)


class Trainer:
    def __init__(self, cfg: RunConfig, accelerator: Any = None):
        validate(cfg)  # before anything heavy is built
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        self.acc = accelerator or build_accelerator(cfg)
        # one run per folder, taken before anything in it is read or changed
        self._lock = runlock.acquire(self.out) if self.acc.is_main_process else None
        world, P = self.acc.num_processes, cfg.sample.prompts_per_iteration
        if P % world:
            raise ConfigError("sample.prompts_per_iteration", P, f"a multiple of {world} processes")
        self.train_set = load_prompts(cfg.data.train, cfg.data.prompt_column, "data.train")
        self.eval_set = None
        if cfg.data.eval:
            self.eval_set = load_prompts(cfg.data.eval, cfg.data.prompt_column, "data.eval")
        self.sampler = PromptSampler(len(self.train_set), P, cfg.seed)

        self.policy = build_policy(cfg, self.acc.device)
        prepare = getattr(self.policy, "prepare_prompts", None)
        if prepare is not None:  # e.g. every prompt encoded once, the text encoders freed
            sets = [self.train_set, *([self.eval_set] if self.eval_set else [])]
            prepare([p for s in sets for p in s.prompts], [m for s in sets for m in s.metadata])
        self.reward, self.gold = build_rewards(cfg, self.policy.modality)
        algo_cls, algo_cfg = algorithm_class(cfg)
        self.writer = build_writer(self.policy.modality)
        reference = algo_cls.needs_reference(algo_cfg)
        training = build_training(cfg, self.policy, self.acc, needs_reference=reference)
        self.training, self.models = training, training.models
        self.finetune, self.params = training.finetune, training.params
        self.optimizer, self.ema = training.optimizer, training.ema
        self.algo = algo_cls(algo_cfg, self.params)
        self.algo.check(cfg.sample.num_steps, cfg.sample.group_size)  # now, not at iteration 0
        # the algorithm's compute: denoiser rows in rollouts and updates (train/nfe)
        self.nfe = ForwardCounter(self.policy.trainable_modules().values())
        self.scorer = Scorer(self.reward, self.gold, cfg.train.reward_timeout)
        self.evaluator = Evaluator(cfg, self.policy, self.acc, self.scorer, self.writer, self.ema)

        # a checkpoint resumes only this config (JSON-normalised, as saved) and these prompts
        config = json.loads(json.dumps(asdict(cfg), default=str))
        prompts = {"train": fingerprint(self.train_set)}
        self.checkpoints = RunCheckpoints(self.out, cfg.checkpoint, config, prompts)
        self.state = RunState(self.checkpoints, self.acc, training, self.algo, cfg)
        self.iteration, self.resumed_from = 0, None
        self.metrics: MetricsLog | None = None  # made by train(): eval and sample log no metrics
        self._stop: StopOnSignal | None = None  # set while train() runs
        if cfg.checkpoint.resume not in ("", "none"):
            c = self.state.resume(cfg.checkpoint.resume)
            if c is not None:
                self.resumed_from, self.iteration = c.path, c.iteration

    # ------------------------------------------------------------------ the run

    def train(self) -> dict[str, Any]:
        """Train to ``train.iterations`` (or until ``train.max_seconds`` is spent); returns
        the summary also written to summary.json.
        The output folder is released when it returns or raises."""
        try:
            return self._train()
        except Stopped:  # saved: end as a finished run ends (trackers flushed)
            self.metrics.close()
            self.acc.end_training()
            raise
        finally:
            self.close()

    def _train(self) -> dict[str, Any]:
        cfg, start = self.cfg, time.time()
        if self.resumed_from is None and self.acc.is_main_process:
            self.checkpoints.claim()
        self.acc.wait_for_everyone()
        self.metrics = MetricsLog(
            self.acc,
            self.out,
            total=cfg.train.iterations,
            progress_bar=cfg.logging.progress_bar and self.acc.is_main_process,
            start=self.iteration if self.resumed_from else None,
        )
        if cfg.logging.tensorboard or cfg.logging.wandb:
            self.acc.init_trackers(cfg.logging.project, config=flat(asdict(cfg)))
        before = None
        if self.eval_set is not None and self.iteration == 0:
            before = self.evaluate()
            self.metrics.log(0, before, advance=False)
        elif self.eval_set is not None:  # resumed: the base's evaluation is the metrics' row 0
            before = self.metrics.base
        with StopOnSignal(cfg.checkpoint.stop_grace) as self._stop:
            after = self._iterations()  # None for a resumed run with nothing left to do
            # trained and saved: a signal from here on exits at once, as a stop does
            self._stop.finishing(f"the run is saved; `alignflow report {self.out}` writes its page")
            if after is not None and self.evaluator.base_media is None and cfg.logging.media:
                self.evaluator.base_again(self.eval_set, self.finetune)  # resumed: for the report
            summary = dict(
                iterations=self.iteration,
                seconds=time.time() - start,
                before=before,
                after=after,
                processes=self.acc.num_processes,
                counters=self.counters,
                config_changes=self.checkpoints.changes,
            )
            if self.acc.is_main_process:
                write_report(cfg, summary, self.writer, self.evaluator, self.iteration)
        self.metrics.close()
        self.acc.end_training()
        return summary

    def _iterations(self) -> dict[str, float] | None:
        """Iterations to the budget, evaluated and saved on their schedules; a signal stops
        them with a checkpoint. Returns the last evaluation's metrics (None if none ran)."""
        cfg, after = self.cfg, None
        while self.iteration < cfg.train.iterations and not self._out_of_time({}):
            try:
                metrics = self.train_iteration(self.iteration)
            except _Abandoned:  # a signal before the update: the iteration is redone on resume
                self.state.stop(self.iteration, self._stop.signum)
            self.iteration += 1
            last = self.iteration == cfg.train.iterations or self._out_of_time(metrics)
            if self.eval_set is not None and (last or _every(self.iteration, cfg.eval.every)):
                metrics.update(self.evaluate())
                after = {k: v for k, v in metrics.items() if k.startswith("eval/")}
            self.metrics.log(self.iteration, metrics)
            if last or _every(self.iteration, cfg.checkpoint.every):
                self.save()
            if not last and self._stop.requested(self.acc):
                self.state.stop(self.iteration, self._stop.signum)
        return after

    def train_iteration(self, it: int) -> dict[str, float]:
        """One iteration's five phases; returns its metrics."""
        timer, rng, nfe = Timer(), torch.get_rng_state(), self.nfe.n
        with timer("rollout"), self.nfe.counting():
            batches = self.rollout(it)
        with timer("reward"):
            scored = self.score(batches)  # the last batch's rewards finish here
        if self._stop is not None and self._stop.requested(self.acc):
            torch.set_rng_state(rng)  # as when the iteration began, so that the redo is exact
            raise _Abandoned  # nothing is updated yet: cheaper to redo the rollouts than to finish
        rollout, cond = concat([b.rollout for b in batches]), concat([b.cond for b in batches])
        rewards, adv = self.advantages(rollout, scored)
        mine = adv.advantages[self._local(len(scored.reward.scores))]
        items = self.algo.training_items(
            rollout,
            mine,
            rewards=scored.reward.scores,
            peek_rewards=scored.peeks,
            seed=self.cfg.seed,
            iteration=it,
        )
        with timer("train"), self.nfe.counting():
            stats = self.update(items, cond, it)
        m = self.log_metrics(it, rollout, cond, scored, rewards, adv, items, stats)
        m["train/nfe"] = float(self._gather(torch.tensor([self.nfe.n - nfe])).sum())
        m["time/reward_compute"] = scored.seconds
        return m | {f"time/{k}": v for k, v in timer.seconds.items()}

    # ------------------------------------------------------------------ 1. rollout

    def rollout(self, it: int) -> list[Batch]:
        """This process's prompts of iteration ``it``, ``sample.batch_size`` samples at a
        time; each batch is decoded and submitted for scoring before the next one rolls
        out, so that the rewards run while the policy samples."""
        s, G = self.cfg.sample, self.cfg.sample.group_size
        sigmas = self.policy.sigmas(s.num_steps).to(self.acc.device)
        slots = self.sampler.local_slots(it, self.acc.process_index, self.acc.num_processes)
        batches = []
        with self.acc.autocast():
            for chunk in chunks(slots, s.batch_size // G):
                ids = [slot for slot, _ in chunk]
                prompts = [self.train_set.prompts[i] for _, i in chunk]
                meta = [self.train_set.metadata[i] for _, i in chunk]
                cond = self.policy.encode(prompts, meta)
                out = self.algo.rollout(
                    self.policy,
                    cond,
                    sigmas,
                    guidance=s.guidance,
                    group_size=G,
                    seed=self.cfg.seed,
                    iteration=it,
                    slots=ids,
                )
                batches.append(Batch.of(out, cond, prompts, meta, ids, G))
                self.scorer.submit(batches[-1], self.policy.decode)
        return batches

    # ------------------------------------------------------------------ 2. score

    def score(self, batches: list[Batch]) -> Scored:
        """The scorer's rewards of every batch, with ``train.reward_failures`` applied to
        the failed calls of every process (so that all stop together or none does)."""
        scored = self.scorer.collect(batches)
        scored.failures = int(self._gather(torch.tensor([len(scored.reasons)])).sum())
        self.counters["reward_failures"] += scored.failures
        check_failures(self.cfg.train, scored, self.counters["reward_failures"])
        return scored

    # ------------------------------------------------------------------ 3. advantages

    def advantages(self, rollout: Any, scored: Scored) -> tuple[torch.Tensor, GroupAdvantages]:
        """The algorithm's advantages over every process's samples (a group lives on one
        process, but the global std needs them all). Returns the gathered rewards too."""
        rewards = self._gather(scored.reward.scores)
        check_nan(self.cfg.train, rewards)  # NaN: left out of their groups, or an error
        terms, parts = None, self.reward.advantage_terms()
        if len(parts) > 1:  # per-term (or per-head) scores for algorithms that z-score each
            terms = {k: (self._gather(scored.reward.components[k]), w) for k, w in parts.items()}
        return rewards, self.algo.advantages(rewards, self._gather(rollout.group), terms)

    # ------------------------------------------------------------------ 4. update

    def update(self, items: Any, cond: Any, it: int) -> dict[str, float]:
        """Inner epochs over shuffled micro-batches; one optimizer step per window."""
        t, guidance = self.cfg.train, self.cfg.sample.guidance
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        norms = []
        on_policy = True  # until the first optimizer step the policy is the rollout policy
        for epoch in range(t.inner_epochs):
            shuffle = generator(self.cfg.seed, "shuffle", it, epoch, self.acc.process_index)
            order = torch.randperm(batch_size(items), generator=shuffle)
            for window in order.tensor_split(t.optimizer_steps):
                micro = window.split(t.micro_batch_size)
                for k, idx in enumerate(micro):
                    mb = select(items, idx)
                    ctx = StepContext(guidance, on_policy, self.finetune.reference, it)
                    # DDP: gradients are synchronised on the window's last backward only
                    with self.training.no_sync(self.acc, k < len(micro) - 1):
                        with self.acc.autocast():
                            out = self.algo.loss(self.policy, mb, select(cond, mb.sample), ctx)
                        # each window's gradient is the mean over its items
                        self.acc.backward(out.loss * len(idx) / len(window))
                    for name, v in out.stats.items():
                        stats[name].append(v.detach().float().reshape(-1))
                if t.max_grad_norm > 0:
                    norms.append(float(self.acc.clip_grad_norm_(self.params, t.max_grad_norm)))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.step()
                on_policy = False
        m = self._stats(stats) | ({"train/grad_norm": sum(norms) / len(norms)} if norms else {})
        return m | self.algo.end_iteration(t.inner_epochs * t.optimizer_steps)

    def _stats(self, stats: dict[str, list[torch.Tensor]]) -> dict[str, float]:
        """The loss stats' means over every process's items (and min / max for the
        algorithm's ``minmax_stats``)."""
        m = {}
        for name, parts in stats.items():
            v = self._gather(torch.cat(parts))
            m[f"train/{name}"] = v.mean().item()
            if name in self.algo.minmax_stats:
                m[f"train/{name}_min"], m[f"train/{name}_max"] = v.min().item(), v.max().item()
        return m

    # ------------------------------------------------------------------ 5. log

    def log_metrics(
        self,
        it: int,
        rollout: Any,
        cond: Any,
        scored: Scored,
        rewards: torch.Tensor,
        adv: GroupAdvantages,
        items: Any,
        stats: dict[str, float],
    ) -> dict[str, float]:
        """The iteration's metrics over every process: rewards and their terms, group
        statistics, diversity and KL drift from the base (diagnostics.py), what was
        trained, the update's stats."""
        m = {"train/reward_mean": finite_mean(rewards), "train/reward_std": finite_std(rewards)}
        for k, v in scored.reward.components.items():
            m[f"train/{k}_mean"] = finite_mean(self._gather(v))
        m["train/zero_std_groups"] = adv.zero_std_fraction
        diversity = self._gather(group_diversities(rollout.x0, rollout.group))
        m["train/diversity"] = diversity.mean().item() if len(diversity) else 0.0
        if self.finetune.has_reference:  # LoRA always; full fine-tuning when the algorithm keeps it
            with self.acc.autocast():
                kl = drift_from_base(
                    self.policy, self.finetune.reference, self.algo, rollout, cond, self.cfg, it
                )
            m["train/kl_base"] = self._gather(kl).mean().item()
        dropped = int((~torch.isfinite(rewards)).sum())
        m["train/dropped_samples"] = float(dropped)
        m["train/reward_failures"] = float(scored.failures)
        m["train/trained_steps"] = float(len(torch.unique(items.step)))
        self.counters["samples"] += len(rewards)
        self.counters["dropped_samples"] += dropped
        return m | stats

    def _out_of_time(self, metrics: dict[str, float]) -> bool:
        """Whether ``train.max_seconds`` is spent, ``metrics``' iteration included. The
        main process's clock decides for all: each process times its own phases."""
        if not self.cfg.train.max_seconds:
            return False
        spent = torch.tensor([self.metrics.seconds + train_seconds(metrics)])
        return float(broadcast(spent.to(self.acc.device))) >= self.cfg.train.max_seconds

    def _gather(self, v: torch.Tensor) -> torch.Tensor:
        """``v`` of every process, concatenated in process order, on the CPU."""
        return self.acc.gather(v.to(self.acc.device)).cpu()

    def _local(self, n: int) -> slice:
        """This process's rows of a gathered tensor of n rows per process."""
        return slice(self.acc.process_index * n, (self.acc.process_index + 1) * n)

    # ------------------------------------------------------------------ evaluation, checkpoints

    def evaluate(
        self, prompts: PromptSet | None = None, score: bool = True, name: str = ""
    ) -> dict[str, float]:
        """``eval/*`` metrics of the held-out prompts (default: ``data.eval``) at this
        iteration; see :class:`~alignflow.sdk.evaluation.Evaluator`."""
        prompts = prompts or self.eval_set
        base = self.iteration == 0 and prompts is self.eval_set
        return self.evaluator(self.iteration, prompts, score=score, name=name, base=base)

    def save(self) -> Path | None:
        return self.state.save(self.iteration)

    @property
    def counters(self) -> dict[str, int]:
        """Samples, dropped samples and failed reward calls so far (saved in checkpoints)."""
        return self.state.counters

    def close(self) -> None:
        """Release the output folder (also released when the process ends)."""
        if self._lock is not None:
            runlock.release(self._lock)
            self._lock = None


class _Abandoned(Exception):
    """A stop was requested before the iteration's update began."""


def _every(iteration: int, every: int) -> bool:
    return bool(every) and iteration % every == 0
