"""The training loop, one for every modality and algorithm.

Each iteration runs five phases, data flowing one way:

    1. rollout     the algorithm's rollout of this process's prompts, batch by batch;
                   each batch's media (and peeks) go to the reward worker at once
    2. score       the worker's rewards, failures counted (train.reward_failures)
    3. advantages  over the groups of every process; then the algorithm's training items
    4. update      inner epochs of shuffled micro-batches: loss, backward, one optimizer
                   step per accumulation window, EMA
    5. log         rewards, diversity, KL drift from the base, the update's stats, times

then evaluation (evaluation.py) and checkpoints (resume.py) on their schedules.
accelerate is the only distributed layer: it places the model, wraps it for DDP /
FSDP / DeepSpeed and runs autocast. All randomness comes from generators seeded by
(seed, iteration, prompt slot, group member), so a resumed run repeats exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import time
from collections import defaultdict
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk import runlock
from alignflow.sdk.advantages import GroupAdvantages, members
from alignflow.sdk.algorithms.base import StepContext
from alignflow.sdk.batching import batch_size, chunks, concat, repeat_interleave, select
from alignflow.sdk.components import resolve
from alignflow.sdk.config import RunConfig, reward_terms, split_component, validate
from alignflow.sdk.data import PromptSampler, PromptSet, load_prompts
from alignflow.sdk.diagnostics import group_diversities, kl_drift
from alignflow.sdk.ema import EMA
from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.evaluation import Evaluator
from alignflow.sdk.files import atomic_write_text
from alignflow.sdk.finetune import build_finetune
from alignflow.sdk.kernels import get_kernel
from alignflow.sdk.random import derive_seed, generator
from alignflow.sdk.resume import RunCheckpoints, TrainingState, fingerprint
from alignflow.sdk.reward_worker import RewardWorker, join, nan_scores
from alignflow.sdk.rewards import RewardOutput, WeightedSum, check_output, score
from alignflow.sdk.stopping import StopOnSignal, Stopped
from alignflow.sdk.tracking import MetricsLog

log = logging.getLogger(__name__)


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


@dataclass
class Batch:
    """One rollout batch of this process: the algorithm's rollout and, one row per
    sample, the condition, prompts, metadata and prompt slots [B]."""

    rollout: Any
    cond: Any
    prompts: list[str]
    metadata: list[dict]
    group: torch.Tensor


@dataclass
class Scored:
    """This process's rewards: ``reward`` (scores [B] and components), ``peeks`` [B, M]
    or None, the reward's compute seconds and the failed calls of every process."""

    reward: RewardOutput
    peeks: torch.Tensor | None
    seconds: float
    failures: int


class Trainer:
    def __init__(self, cfg: RunConfig, accelerator: Any = None):
        from accelerate import Accelerator
        from accelerate.utils import ProjectConfiguration, set_seed

        validate(cfg)  # before anything heavy is built
        self.cfg, self.out = cfg, Path(cfg.output_dir)
        trackers = [t for t, on in (("tensorboard", cfg.logging.tensorboard), ("wandb", cfg.logging.wandb)) if on]
        self.acc = accelerator or Accelerator(
            cpu=not torch.cuda.is_available(), mixed_precision=cfg.train.mixed_precision, log_with=trackers or None,
            project_config=ProjectConfiguration(project_dir=str(self.out), logging_dir=str(self.out / "tensorboard")),
        )
        # one run per folder, taken before anything in it is read or changed
        self._lock = runlock.acquire(self.out) if self.acc.is_main_process else None
        world, P = self.acc.num_processes, cfg.sample.prompts_per_iteration
        if P % world:
            raise ConfigError("sample.prompts_per_iteration", P, f"a multiple of the number of processes ({world})")
        self.train_set = load_prompts(cfg.data.train, cfg.data.prompt_column, "data.train")
        self.eval_set = load_prompts(cfg.data.eval, cfg.data.prompt_column, "data.eval") if cfg.data.eval else None

        pname, pargs = split_component(cfg.policy, "policy")
        self.policy = resolve("policy", pname, "policy.name")(**pargs).to(self.acc.device)
        self.reward = WeightedSum({term: (resolve("reward", name, f"reward.{term}.name")(**args), weight)
                                   for term, (name, weight, args) in reward_terms(cfg).items()})
        # held-out rewards: scored and logged, never in the advantage
        self.gold = {term: resolve("reward", name, f"gold.{term}.name")(**args)
                     for term, (name, _, args) in reward_terms(cfg, "gold").items()}
        if self.reward.modality != self.policy.modality:
            raise ConfigError("reward", list(cfg.reward), f"rewards for {self.policy.modality!r} media "
                              f"(policy {pname!r} makes {self.policy.modality}, the rewards score {self.reward.modality})")
        aname, aargs = split_component(cfg.algorithm, "algorithm")
        algo_cls = resolve("algorithm", aname, "algorithm.name")
        algo_cfg = algo_cls.config_from(aargs)
        self.writer = resolve("writer", self.policy.modality, "policy.modality")()

        t = cfg.train
        # The global RNG only initialises what is created here (LoRA's A matrices);
        # everything drawn during training uses its own generator.
        set_seed(derive_seed(cfg.seed, "init") % 2**32)
        self.finetune = build_finetune(self.policy, t.finetune, rank=t.lora_rank, alpha=t.lora_alpha,
                                       targets=t.lora_targets, needs_reference=algo_cls.needs_reference(algo_cfg))
        self.params = self.finetune.parameters()
        optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps,
                                      weight_decay=t.weight_decay)
        self.models = {}
        for name, module in self.policy.trainable_modules().items():
            self.models[name] = self.acc.prepare(module)
            setattr(self.policy, name, self.models[name])
        self.optimizer = self.acc.prepare(optimizer)
        self.ema = EMA(self.params, t.ema_decay) if t.ema_decay > 0 else None
        self.algo = algo_cls(algo_cfg, self.params)
        self.algo.check(cfg.sample.num_steps, cfg.sample.group_size)  # now, not at the first iteration
        self.state = TrainingState(self.finetune, self.optimizer, self.ema, self.algo)
        self.sampler = PromptSampler(len(self.train_set), P, cfg.seed)
        self.reward_worker = RewardWorker(self._score, t.reward_timeout)
        self.evaluator = Evaluator(cfg.eval, self.policy, self.acc, self._score, self.writer, self.out, ema=self.ema,
                                   groupwise=any(getattr(r, "groupwise", False) for r, _ in self.reward.terms.values()),
                                   media=cfg.logging.media)
        self.iteration = 0
        self.resumed_from: Path | None = None
        self._stop: StopOnSignal | None = None  # set while train() runs
        self._saved_at: int | None = None  # the iteration of this process's last checkpoint
        # what a checkpoint must match to be resumed: the config (JSON-normalised, as saved) and the prompts
        self.checkpoints = RunCheckpoints(self.out, cfg.checkpoint, json.loads(json.dumps(asdict(cfg), default=str)),
                                          {"train": fingerprint(self.train_set)})
        self.counters = {"samples": 0, "dropped_samples": 0, "reward_failures": 0}
        self.trackers = trackers
        self.metrics: MetricsLog | None = None  # created by train(): eval and sample write no metrics
        if cfg.checkpoint.resume not in ("", "none"):
            self._resume(cfg.checkpoint.resume)

    # ------------------------------------------------------------------ the run

    def train(self) -> dict[str, Any]:
        """Train to ``train.iterations``; returns the summary also written to summary.json.
        The output folder is released when it returns or raises."""
        try:
            return self._train()
        except Stopped:  # saved: end as a finished run ends (trackers flushed, process group closed)
            self.metrics.close()
            self.acc.end_training()
            raise
        finally:
            self.close()

    def _train(self) -> dict[str, Any]:
        cfg = self.cfg
        if self.resumed_from is None and self.acc.is_main_process:
            self.checkpoints.claim()
        self.acc.wait_for_everyone()
        self.metrics = MetricsLog(self.acc, self.out, progress_bar=cfg.logging.progress_bar and self.acc.is_main_process,
                                  total=cfg.train.iterations, start=self.iteration if self.resumed_from else None)
        if self.trackers:
            self.acc.init_trackers(cfg.logging.project, config=_flat(asdict(cfg)))
        start_time = time.time()
        before = after = None
        if self.eval_set is not None and self.iteration == 0:
            before = self.evaluate()
            self.metrics.log(0, before, advance=False)
        with StopOnSignal(cfg.checkpoint.stop_grace) as self._stop:
            while self.iteration < cfg.train.iterations:
                try:
                    metrics = self.train_iteration(self.iteration)
                except _Abandoned:  # a signal came before the update: the iteration is redone on resume
                    self._stop_with_checkpoint()
                self.iteration += 1
                last = self.iteration == cfg.train.iterations
                if self.eval_set is not None and (last or (cfg.eval.every and self.iteration % cfg.eval.every == 0)):
                    metrics.update(self.evaluate())
                    after = {k: v for k, v in metrics.items() if k.startswith("eval/")}
                self.metrics.log(self.iteration, metrics)
                if last or (cfg.checkpoint.every and self.iteration % cfg.checkpoint.every == 0):
                    self.save()
                if not last and self._stop.requested(self.acc):
                    self._stop_with_checkpoint()
        summary = {"iterations": self.iteration, "seconds": time.time() - start_time, "processes": self.acc.num_processes,
                   "before": before, "after": after, "counters": self.counters,
                   "config_changes": self.checkpoints.changes}
        if self.acc.is_main_process:
            self._write_report(summary)
        self.metrics.close()
        self.acc.end_training()
        return summary

    def train_iteration(self, it: int) -> dict[str, float]:
        """One iteration's five phases; returns its metrics."""
        timer, rng = Timer(), torch.get_rng_state()
        with timer("rollout"):
            batches = self.rollout(it)
        with timer("reward"):
            scored = self.score(batches)  # the last batch's rewards finish here
        if self._stop is not None and self._stop.requested(self.acc):
            torch.set_rng_state(rng)  # as it was when the iteration began, so that the redo is exact
            raise _Abandoned  # nothing is updated yet: cheaper to redo the rollouts than to finish
        rollout, cond = concat([b.rollout for b in batches]), concat([b.cond for b in batches])
        rewards, adv = self.advantages(rollout, scored)
        items = self.algo.training_items(rollout, adv.advantages[self._local(len(scored.reward.scores))],
                                         rewards=scored.reward.scores, peek_rewards=scored.peeks,
                                         seed=self.cfg.seed, iteration=it)
        with timer("train"):
            stats = self.update(items, cond, it)
        m = self.log_metrics(it, rollout, cond, scored, rewards, adv, items, stats)
        m["time/reward_compute"] = scored.seconds
        m.update({f"time/{k}": v for k, v in timer.seconds.items()})
        return m

    # ------------------------------------------------------------------ 1. rollout

    def rollout(self, it: int) -> list[Batch]:
        """This process's prompts of iteration ``it``, ``sample.batch_size`` samples at a
        time; each batch is decoded and submitted for scoring before the next one rolls
        out, so that the rewards run while the policy samples."""
        cfg, G = self.cfg, self.cfg.sample.group_size
        sigmas = self.policy.sigmas(cfg.sample.num_steps).to(self.acc.device)
        batches = []
        with self.acc.autocast():
            for chunk in chunks(self._local_slots(it), cfg.sample.batch_size // G):
                slots = [s for s, _ in chunk]
                prompts = [self.train_set.prompts[i] for _, i in chunk]
                meta = [self.train_set.metadata[i] for _, i in chunk]
                cond = self.policy.encode(prompts, meta)
                out = self.algo.rollout(self.policy, cond, sigmas, guidance=cfg.sample.guidance, group_size=G,
                                        seed=cfg.seed, iteration=it, slots=slots)
                group = torch.tensor(slots).repeat_interleave(G)
                out.group = group.to(out.x0.device)
                b = Batch(out, repeat_interleave(cond, G), [p for p in prompts for _ in range(G)],
                          [m for m in meta for _ in range(G)], group)
                self.reward_worker.submit(self.policy.decode(out.x0, b.cond), b.prompts, b.metadata, group)
                for m in range(0 if out.peeks is None else out.peeks.shape[1]):  # an algorithm's extra latents
                    self.reward_worker.submit(self.policy.decode(out.peeks[:, m], b.cond), b.prompts, b.metadata,
                                              group, gold=False)
                batches.append(b)
        return batches

    # ------------------------------------------------------------------ 2. score

    def score(self, batches: list[Batch]) -> Scored:
        """Wait for the worker; lay its outputs back out as the batches were submitted
        (each batch's samples, then its M peek columns)."""
        outputs, seconds, reasons = self.reward_worker.collect()
        finals, peeks, k = [], [], 0
        for b in batches:
            n, M = len(b.prompts), 0 if b.rollout.peeks is None else b.rollout.peeks.shape[1]
            finals.append(outputs[k])
            peeks.append([o.scores if o is not None else nan_scores(n) for o in outputs[k + 1:k + 1 + M]])
            k += 1 + M
        reward = join(finals, [len(b.prompts) for b in batches])
        peek_rewards = torch.cat([torch.stack(p, 1) for p in peeks]) if peeks[0] else None
        # decided on gathered numbers, so that every process stops together or none does
        failures = int(self.acc.gather(torch.tensor([len(reasons)], device=self.acc.device)).sum())
        self._check_failures(failures, reasons)
        return Scored(reward, peek_rewards, seconds, failures)

    def _score(self, media, prompts, metadata, groups: torch.Tensor, gold: bool = True) -> tuple[RewardOutput, float]:
        start = time.perf_counter()
        out = check_output(self.reward(media, prompts, metadata, groups=groups), len(prompts), "reward")
        for term, reward in (self.gold if gold else {}).items():
            out.components[f"gold/{term}"] = score(reward, media, prompts, metadata, groups, f"gold.{term}").scores
        return out, time.perf_counter() - start

    def _check_failures(self, failures: int, reasons: list[str]) -> None:
        """``train.reward_failures`` on this iteration's failed calls (counted over every
        process; ``reasons`` are this process's)."""
        t = self.cfg.train
        self.counters["reward_failures"] = self.counters.get("reward_failures", 0) + failures
        reason = reasons[-1] if reasons else "a reward call failed on another process"
        if failures and t.reward_failures == "error":
            raise RewardError(f"{reason} (train.reward_failures=error; 'drop' leaves the batch out)")
        if self.counters["reward_failures"] > t.reward_max_failures:
            raise RewardError(f"{self.counters['reward_failures']} reward calls have failed, more than "
                              f"train.reward_max_failures = {t.reward_max_failures}; the last: {reason}")

    # ------------------------------------------------------------------ 3. advantages

    def advantages(self, rollout: Any, scored: Scored) -> tuple[torch.Tensor, GroupAdvantages]:
        """The algorithm's advantages over every process's samples (a group lives on one
        process, but the global std needs them all). Returns the gathered rewards too."""
        rewards = self.acc.gather(scored.reward.scores.to(self.acc.device)).cpu()
        bad = int((~torch.isfinite(rewards)).sum())
        if bad and self.cfg.train.reward_failures == "error":
            raise RewardError(f"{bad} of {len(rewards)} rewards are NaN (train.reward_failures=error); "
                              "set train.reward_failures=drop to leave such samples out of their group")
        if bad:
            log.warning("%d of %d samples have a NaN reward: left out of their group's statistics (advantage 0)",
                        bad, len(rewards))
        terms, parts = None, self.reward.advantage_terms()
        if len(parts) > 1:  # per-term (or per-head) scores for algorithms that z-score each
            terms = {name: (self.acc.gather(scored.reward.components[name].to(self.acc.device)).cpu(), weight)
                     for name, weight in parts.items()}
        return rewards, self.algo.advantages(rewards, self.acc.gather(rollout.group).cpu(), terms)

    def _local(self, n: int) -> slice:
        """This process's rows of a gathered tensor of n rows per process."""
        return slice(self.acc.process_index * n, (self.acc.process_index + 1) * n)

    # ------------------------------------------------------------------ 4. update

    def update(self, items: Any, cond: Any, it: int) -> dict[str, float]:
        """Inner epochs over shuffled micro-batches; one optimizer step per window."""
        t = self.cfg.train
        E = batch_size(items)
        stats: dict[str, list[torch.Tensor]] = defaultdict(list)
        grad_norms = []
        on_policy = True  # until the first optimizer step the policy is the rollout policy
        for epoch in range(t.inner_epochs):
            order = torch.randperm(E, generator=generator(self.cfg.seed, "shuffle", it, epoch, self.acc.process_index))
            for window in order.tensor_split(t.optimizer_steps):
                micro = window.split(t.micro_batch_size)
                for k, idx in enumerate(micro):
                    mb = select(items, idx)
                    ctx = StepContext(self.cfg.sample.guidance, on_policy, self.finetune.reference, it)
                    # DDP: synchronise gradients only on the window's last backward.
                    with self._no_sync(k < len(micro) - 1):
                        with self.acc.autocast():
                            out = self.algo.loss(self.policy, mb, select(cond, mb.sample), ctx)
                        # each window's gradient is the mean over its items
                        self.acc.backward(out.loss * len(idx) / len(window))
                    for name, v in out.stats.items():
                        stats[name].append(v.detach().float().reshape(-1))
                if t.max_grad_norm > 0:
                    grad_norms.append(float(self.acc.clip_grad_norm_(self.params, t.max_grad_norm)))
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                if self.ema is not None:
                    self.ema.step()
                on_policy = False
        m = {}
        for name, parts in stats.items():
            v = self.acc.gather(torch.cat(parts).to(self.acc.device)).cpu()
            m[f"train/{name}"] = v.mean().item()
            if name in self.algo.minmax_stats:
                m[f"train/{name}_min"], m[f"train/{name}_max"] = v.min().item(), v.max().item()
        if grad_norms:
            m["train/grad_norm"] = sum(grad_norms) / len(grad_norms)
        m.update(self.algo.end_iteration(t.inner_epochs * t.optimizer_steps))
        return m

    def _no_sync(self, skip: bool):
        stack = contextlib.ExitStack()
        if skip and self.acc.num_processes > 1:
            for model in self.models.values():
                stack.enter_context(self.acc.no_sync(model))
        return stack

    # ------------------------------------------------------------------ 5. log

    def log_metrics(self, it: int, rollout: Any, cond: Any, scored: Scored, rewards: torch.Tensor,
                    adv: GroupAdvantages, items: Any, stats: dict[str, float]) -> dict[str, float]:
        """The iteration's metrics, over every process: rewards and their terms, group
        statistics, diversity, KL drift from the base, what was trained, the update's stats."""
        m: dict[str, float] = {"train/reward_mean": _finite_mean(rewards), "train/reward_std": _finite_std(rewards)}
        for k, v in scored.reward.components.items():
            m[f"train/{k}_mean"] = _finite_mean(self.acc.gather(v.to(self.acc.device)).cpu())
        m["train/zero_std_groups"] = adv.zero_std_fraction
        diversity = self.acc.gather(group_diversities(rollout.x0, rollout.group).to(self.acc.device)).cpu()
        m["train/diversity"] = diversity.mean().item() if len(diversity) else 0.0
        if self.finetune.has_reference:  # LoRA always; full fine-tuning when the algorithm keeps the base
            m["train/kl_base"] = self._kl_base(rollout, cond, it)
        dropped = int((~torch.isfinite(rewards)).sum())
        m["train/dropped_samples"] = float(dropped)
        m["train/reward_failures"] = float(scored.failures)
        m["train/trained_steps"] = float(len(torch.unique(items.step)))
        m.update(stats)
        self.counters["samples"] += len(rewards)
        self.counters["dropped_samples"] += dropped
        return m

    def _kl_base(self, rollout: Any, cond: Any, it: int) -> float:
        """The KL drift from the base at the first sample of every group (the same probes
        and noise however the groups are spread over processes)."""
        probes = [b for b, m in enumerate(members(rollout.group)) if m == 0]
        kernel = self.algo.kernel if self.algo.kernel.stochastic else get_kernel("flow_sde")
        gens = [generator(self.cfg.seed, "drift", it, int(rollout.group[b])) for b in probes]
        sigmas = self.policy.sigmas(self.cfg.sample.num_steps).to(self.acc.device)
        with self.acc.autocast():
            kl = kl_drift(self.policy, self.finetune.reference, rollout.x0[probes], select(cond, probes), sigmas,
                          kernel, self.algo.noise_level or 0.7, self.cfg.sample.guidance, gens)
        return self.acc.gather(kl.to(self.acc.device)).mean().item()

    def _local_slots(self, it: int) -> list[tuple[int, int]]:
        """(global slot, dataset index) of this process's prompts: contiguous blocks,
        so whole groups live on one process."""
        idx = self.sampler.indices(it)
        per = len(idx) // self.acc.num_processes
        lo = self.acc.process_index * per
        return [(s, idx[s]) for s in range(lo, lo + per)]

    # ------------------------------------------------------------------ evaluation

    def evaluate(self, prompts: PromptSet | None = None, score: bool = True, name: str = "") -> dict[str, float]:
        """``eval/*`` metrics of the held-out prompts (default: ``data.eval``) at this
        iteration; see :class:`~alignflow.sdk.evaluation.Evaluator`."""
        prompts = prompts or self.eval_set
        base = self.iteration == 0 and prompts is self.eval_set
        return self.evaluator(self.iteration, prompts, score=score, name=name, base=base)

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path | None:
        path = None
        if self.acc.is_main_process:
            path = self.checkpoints.save(
                self.iteration, **self.state.tensors(),
                state={"seed": self.cfg.seed, "counters": self.counters,
                       # where the prompt stream stands (a function of the iteration; kept for people)
                       "data_position": self.iteration * self.cfg.sample.prompts_per_iteration},
            )
        self._saved_at = self.iteration
        self.acc.wait_for_everyone()
        return path

    def _stop_with_checkpoint(self) -> None:
        """After a signal: save (unless this iteration is saved already) and stop."""
        if self._saved_at != self.iteration:
            self.save()
        signum = self._stop.signum
        raise Stopped(signum, f"stopped by {signal.Signals(signum).name} at iteration {self.iteration}; "
                              f"checkpoint-{self.iteration} is saved; continue with checkpoint.resume=latest")

    def _resume(self, where: str) -> None:
        if self.acc.is_main_process:
            for line in ckpt.recover_partial(self.out):  # safe: this process holds the folder's lock
                log.warning("%s", line)
        self.acc.wait_for_everyone()

        def apply(c: ckpt.Checkpoint) -> None:
            self.state.load(c)
            self.counters = dict(c.state.get("counters", self.counters))

        c = self.checkpoints.resume(where, apply)
        if c is not None:
            self.resumed_from, self.iteration, self._saved_at = c.path, c.iteration, c.iteration

    def close(self) -> None:
        """Release the output folder (also released when the process ends)."""
        if self._lock is not None:
            runlock.release(self._lock)
            self._lock = None

    # ------------------------------------------------------------------ the end

    def _write_report(self, summary: dict[str, Any]) -> None:
        """summary.json, the reward curve and the before/after comparison."""
        from alignflow.sdk.plots import plot_reward_curve

        atomic_write_text(self.out / "summary.json", json.dumps(summary, indent=2))
        if not self.cfg.logging.media:
            return
        plot_reward_curve(self.out, title=self.cfg.name)
        ev = self.evaluator
        if ev.base_media is not None and summary["after"] is not None:
            self.writer.save_comparison(
                ev.base_media, ev.last_media, self.out / "samples" / "before_after",
                per_row=self.cfg.eval.samples_per_prompt,
                titles=(f"base: {_fmt(summary['before'])}", f"iteration {self.iteration}: {_fmt(summary['after'])}"),
            )


class _Abandoned(Exception):
    """A stop was requested before the iteration's update began."""


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k.removeprefix('eval/').removesuffix('_mean')} {v:.2f}" for k, v in metrics.items())


def _finite_mean(v: torch.Tensor) -> float:
    v = v[torch.isfinite(v)]
    return v.mean().item() if len(v) else float("nan")


def _finite_std(v: torch.Tensor) -> float:
    v = v[torch.isfinite(v)]
    return v.std(unbiased=False).item() if len(v) else float("nan")


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
