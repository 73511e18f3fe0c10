"""The training loop, one for every modality and algorithm.

    for each iteration:
        prompts  <- the iteration's slots of the prompt stream        (data.py)
        rollout  <- the algorithm's plan and kernel, per batch        (rollout.py)
        rewards  <- decoded media scored in a worker thread while the next batch rolls out
        advantages over groups gathered from every process            (advantages.py)
        inner epochs of shuffled micro-batches: loss, backward,
            optimizer step per accumulation window, EMA               (algorithms/)
        log, evaluate (ODE, fixed prompts and seeds), checkpoint

accelerate is the only distributed layer: it places the model, wraps it for DDP /
FSDP / DeepSpeed and runs autocast. All randomness comes from generators seeded by
(seed, iteration, prompt slot, group member), so a resumed run repeats exactly what an
uninterrupted run would have done.
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import signal
import time
from collections import defaultdict
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk import runlock
from alignflow.sdk.advantages import members
from alignflow.sdk.algorithms.base import StepContext
from alignflow.sdk.batching import batch_size, concat, repeat_interleave, select
from alignflow.sdk.components import resolve
from alignflow.sdk.config import RunConfig, reward_terms, split_component, validate
from alignflow.sdk.data import PromptSampler, PromptSet, load_prompts
from alignflow.sdk.diagnostics import group_diversities, kl_drift
from alignflow.sdk.ema import EMA
from alignflow.sdk.errors import CheckpointError, ConfigError, RewardError
from alignflow.sdk.files import atomic_write_text
from alignflow.sdk.finetune import build_finetune
from alignflow.sdk.kernels import get_kernel
from alignflow.sdk.random import derive_seed, generator
from alignflow.sdk.resume import RunCheckpoints, fingerprint
from alignflow.sdk.reward_worker import RewardWorker
from alignflow.sdk.rewards import RewardOutput, WeightedSum, check_output, score
from alignflow.sdk.rollout import rollout, rollout_generators, sample
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
        self.algo = algo_cls(algo_cls.config_from(aargs))
        try:  # a step plan that cannot fit the schedule fails now, not at the first iteration
            self.algo.plan(cfg.sample.num_steps, 0, cfg.seed)
        except ValueError as e:
            raise ConfigError("sample.num_steps", cfg.sample.num_steps, f"enough steps for algorithm {aname}'s plan",
                              hint=str(e)) from e
        self.writer = resolve("writer", self.policy.modality, "policy.modality")()

        t = cfg.train
        # The global RNG only initialises what is created here (LoRA's A matrices);
        # everything drawn during training uses its own generator.
        set_seed(derive_seed(cfg.seed, "init") % 2**32)
        self.finetune = build_finetune(self.policy, t.finetune, rank=t.lora_rank, alpha=t.lora_alpha,
                                       targets=t.lora_targets, needs_reference=self.algo.needs_reference)
        self.params = self.finetune.parameters()
        optimizer = torch.optim.AdamW(self.params, lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps,
                                      weight_decay=t.weight_decay)
        self.models = {}
        for name, module in self.policy.trainable_modules().items():
            self.models[name] = self.acc.prepare(module)
            setattr(self.policy, name, self.models[name])
        self.optimizer = self.acc.prepare(optimizer)
        self.ema = EMA(self.params, t.ema_decay) if t.ema_decay > 0 else None
        if hasattr(self.algo, "bind"):  # algorithms with their own copy of the weights (DiffusionNFT's old policy)
            self.algo.bind(self.params)
        self.sampler = PromptSampler(len(self.train_set), P, cfg.seed)
        self.reward_worker = RewardWorker(self._score, t.reward_timeout)
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

    # ------------------------------------------------------------------ the loop

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
        before = None
        if self.eval_set is not None and self.iteration == 0:
            before = self.evaluate()
            self.metrics.log(0, before, advance=False)
        after = None
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
        """One rollout + update. Returns the iteration's metrics."""
        cfg, timer = self.cfg, Timer()
        G, N = cfg.sample.group_size, cfg.sample.num_steps
        plan = self.algo.plan(N, it, cfg.seed)
        rng = torch.get_rng_state()
        sigmas = self.policy.sigmas(N).to(self.acc.device)
        slots = self._local_slots(it)

        shared = self.algo.share_noise or plan.shared_prefix > 0  # one initial noise per group
        trajs, conds = [], []
        with timer("rollout"), self.acc.autocast():
            for chunk in _chunks(slots, cfg.sample.batch_size // G):
                prompts = [self.train_set.prompts[i] for _, i in chunk]
                meta = [self.train_set.metadata[i] for _, i in chunk]
                cond = self.policy.encode(prompts, meta)
                slots = [s for s, _ in chunk]
                group = torch.tensor(slots).repeat_interleave(G)
                sample_prompts, sample_meta = [p for p in prompts for _ in range(G)], [m for m in meta for _ in range(G)]
                if hasattr(self.algo, "rollout"):  # its own topology (trees); G samples per prompt all the same
                    extra = {}
                    if getattr(self.algo, "scores_peeks", False):  # rewards of intermediate clean samples (DenseGRPO)
                        extra["score"] = functools.partial(self._peek_score, cond=repeat_interleave(cond, G),
                                                           prompts=sample_prompts, metadata=sample_meta, group=group)
                    traj = self.algo.rollout(self.policy, cond, sigmas, guidance=cfg.sample.guidance, group_size=G,
                                             seed=cfg.seed, iteration=it, slots=slots, **extra)
                else:
                    noise_gens, sde_gens = rollout_generators(cfg.seed, it, slots, G, shared)
                    traj = rollout(
                        self.policy, cond, sigmas, plan, self.algo.kernel,
                        noise_level=self.algo.noise_level, guidance=cfg.sample.guidance, group_size=G,
                        noise_generators=noise_gens, sde_generators=sde_gens, share_noise=shared,
                    )
                traj.group = group.to(traj.x0.device)
                cond = repeat_interleave(cond, G)  # one row per sample, for decoding and training
                media = self.policy.decode(traj.x0, cond)
                self.reward_worker.submit(media, sample_prompts, sample_meta, group)
                trajs.append(traj)
                conds.append(cond)
        with timer("reward"):
            reward, reward_seconds, reasons = self.reward_worker.collect()  # rewards of the last batch finish here
        if self._stop is not None and self._stop.requested(self.acc):
            torch.set_rng_state(rng)  # as it was when the iteration began, so that the redo is exact
            raise _Abandoned  # nothing is updated yet: cheaper to redo the rollouts than to finish
        traj = concat(trajs)

        # Advantages need the whole group and, for the global std, the whole iteration.
        all_rewards = self.acc.gather(reward.scores.to(self.acc.device)).cpu()
        # decided on gathered numbers, so that every process stops together or none does
        failures = int(self.acc.gather(torch.tensor([len(reasons)], device=self.acc.device)).sum())
        self._check_failures(failures, reasons)
        dropped = self._check_rewards(all_rewards)
        all_groups = self.acc.gather(traj.group).cpu()
        terms, parts = None, self.reward.advantage_terms()
        if len(parts) > 1:  # per-term (or per-head) scores for algorithms that z-score each
            terms = {name: (self.acc.gather(reward.components[name].to(self.acc.device)).cpu(), weight)
                     for name, weight in parts.items()}
        adv = self.algo.advantages(all_rewards, all_groups, terms)
        B = len(reward.scores)
        local_adv = adv.advantages[self.acc.process_index * B:(self.acc.process_index + 1) * B]
        items = self.algo.training_items(traj, local_adv, seed=cfg.seed, iteration=it, rewards=reward.scores)
        cond = concat(conds)
        with timer("train"):
            stats = self._update(items, cond, it)

        m: dict[str, float] = {}
        valid = torch.isfinite(all_rewards)
        m["train/reward_mean"] = all_rewards[valid].mean().item() if valid.any() else float("nan")
        m["train/reward_std"] = all_rewards[valid].std(unbiased=False).item() if valid.any() else float("nan")
        for k, v in reward.components.items():
            v = self.acc.gather(v.to(self.acc.device)).cpu()
            m[f"train/{k}_mean"] = v[torch.isfinite(v)].mean().item() if torch.isfinite(v).any() else float("nan")
        m["train/zero_std_groups"] = adv.zero_std_fraction
        diversity = self.acc.gather(group_diversities(traj.x0, traj.group).to(self.acc.device)).cpu()
        m["train/diversity"] = diversity.mean().item() if len(diversity) else 0.0
        if self.finetune.has_reference:  # LoRA always; full fine-tuning when the algorithm keeps the base
            m["train/kl_base"] = self._kl_base(traj, cond, sigmas, it)
        m["train/dropped_samples"] = float(dropped)
        m["train/reward_failures"] = float(failures)
        m["train/trained_steps"] = float(len(torch.unique(items.step))) if hasattr(items, "step") else 0.0
        m.update(stats)
        self.counters["samples"] += len(all_rewards)
        self.counters["dropped_samples"] += int(m["train/dropped_samples"])
        m["time/reward_compute"] = reward_seconds
        m.update({f"time/{k}": v for k, v in timer.seconds.items()})
        return m

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

    def _kl_base(self, traj, cond, sigmas: torch.Tensor, it: int) -> float:
        """The KL drift from the base at the first sample of every group (the same probes
        and noise however the groups are spread over processes)."""
        probes = [b for b, m in enumerate(members(traj.group)) if m == 0]
        kernel = self.algo.kernel if self.algo.kernel.stochastic else get_kernel("flow_sde")
        gens = [generator(self.cfg.seed, "drift", it, int(traj.group[b])) for b in probes]
        with self.acc.autocast():
            kl = kl_drift(self.policy, self.finetune.reference, traj.x0[probes], select(cond, probes), sigmas, kernel,
                          self.algo.noise_level or 0.7, self.cfg.sample.guidance, gens)
        return self.acc.gather(kl.to(self.acc.device)).mean().item()

    def _peek_score(self, x0: torch.Tensor, *, cond, prompts, metadata, group: torch.Tensor) -> torch.Tensor:
        """The reward of latents that are not the rollout's output (an algorithm's peeks);
        synchronous, gold rewards not scored."""
        return self._score(self.policy.decode(x0, cond), prompts, metadata, group, gold=False)[0].scores

    def _check_rewards(self, scores: torch.Tensor) -> int:
        bad = int((~torch.isfinite(scores)).sum())
        if bad and self.cfg.train.reward_failures == "error":
            raise RewardError(f"{bad} of {len(scores)} rewards are NaN (train.reward_failures=error); "
                              "set train.reward_failures=drop to leave such samples out of their group")
        if bad:
            log.warning("%d of %d samples have a NaN reward: left out of their group's statistics (advantage 0)",
                        bad, len(scores))
        return bad

    def _update(self, items: Any, cond: Any, it: int) -> dict[str, float]:
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
                        # each window's gradient is the mean over its transitions
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
        if hasattr(self.algo, "end_iteration"):
            m.update(self.algo.end_iteration(t.inner_epochs * t.optimizer_steps))
        return m

    def _no_sync(self, skip: bool):
        stack = contextlib.ExitStack()
        if skip and self.acc.num_processes > 1:
            for model in self.models.values():
                stack.enter_context(self.acc.no_sync(model))
        return stack

    def _local_slots(self, it: int) -> list[tuple[int, int]]:
        """(global slot, dataset index) of this process's prompts: contiguous blocks,
        so whole groups live on one process."""
        idx = self.sampler.indices(it)
        per = len(idx) // self.acc.num_processes
        lo = self.acc.process_index * per
        return [(s, idx[s]) for s in range(lo, lo + per)]

    # ------------------------------------------------------------------ evaluation

    @torch.no_grad()
    def evaluate(self, prompts: PromptSet | None = None, score: bool = True, name: str = "") -> dict[str, float]:
        """ODE sampling at ``eval.num_steps`` of ``eval.samples_per_prompt`` fixed seeds per
        prompt (default: the eval prompts), with the EMA weights when EMA is on. Writes
        the grid (rows: prompts, columns: seeds) to samples/<name or eval-<iteration>>.png;
        returns ``eval/*`` metrics (none with ``score=False``)."""
        from accelerate.utils import gather_object

        ev, prompts = self.cfg.eval, prompts or self.eval_set
        jobs = [(p, k) for p in range(len(prompts)) for k in range(ev.samples_per_prompt)]
        results = []  # (job, score, components, media) of this process's share
        with (self.ema.applied() if self.ema else contextlib.nullcontext()), self.acc.autocast():
            size = ev.batch_size
            if any(getattr(r, "groupwise", False) for r, _ in self.reward.terms.values()):
                size = max(1, size // ev.samples_per_prompt) * ev.samples_per_prompt  # whole groups per call
            for chunk in _chunks(jobs[self.acc.process_index::self.acc.num_processes], size):
                text = [prompts.prompts[p] for p, _ in chunk]
                meta = [prompts.metadata[p] for p, _ in chunk]
                cond = self.policy.encode(text, meta)
                x0 = sample(self.policy, cond, ev.num_steps, guidance=ev.guidance,
                            noise_generators=[generator(ev.seed, "eval", p, k) for p, k in chunk])
                media = self.policy.decode(x0, cond).cpu()
                out = self._score(media, text, meta, torch.tensor([p for p, _ in chunk]))[0] if score else None
                for b, job in enumerate(chunk):
                    results.append((job, out.scores[b].item() if out else None,
                                    {n: v[b].item() for n, v in out.components.items()} if out else {}, media[b]))
        results = sorted(gather_object(results), key=lambda r: r[0])
        m = {"eval/reward_mean": _finite_mean([r[1] for r in results])} if score else {}
        for comp in results[0][2]:
            m[f"eval/{comp}_mean"] = _finite_mean([r[2][comp] for r in results])
        self.last_eval_media = [r[3] for r in results]  # one item per sample, in job order
        if self.acc.is_main_process and self.cfg.logging.media:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            self.writer.save_samples(self.last_eval_media, self.out / "samples" / (name or f"eval-{self.iteration:05d}"),
                                     per_row=ev.samples_per_prompt, title=f"iteration {self.iteration}")
        if self.iteration == 0 and prompts is self.eval_set:
            self.base_eval_media = self.last_eval_media
        return m

    # ------------------------------------------------------------------ checkpoints

    def save(self) -> Path | None:
        path = None
        if self.acc.is_main_process:
            path = self.checkpoints.save(
                self.iteration,
                trained=self.finetune.state_dict(),
                ema=self.ema.state_dict() if self.ema else None,
                algorithm=self.algo.state_dict() if hasattr(self.algo, "state_dict") else None,
                optimizer=self.optimizer.state_dict(),
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
        c = self.checkpoints.resume(where, self._apply_checkpoint)
        if c is not None:
            self.resumed_from, self.iteration, self._saved_at = c.path, c.iteration, c.iteration

    def _apply_checkpoint(self, c: ckpt.Checkpoint) -> None:
        """Load a read checkpoint into the run; anything that does not fit raises."""
        if self.ema is not None and c.ema is None:
            log.warning("checkpoint %s has no EMA; the EMA restarts from the current weights", c.path)
        if hasattr(self.algo, "load_state_dict") and c.algorithm is None:
            raise CheckpointError(f"checkpoint {c.path} has no algorithm state, which {self.algo.name} needs "
                                  "(it was written by another algorithm)")
        self.finetune.load_state_dict(c.trained)
        self.optimizer.load_state_dict(c.optimizer)
        if self.ema is not None and c.ema is not None:
            self.ema.load_state_dict(c.ema)
        if hasattr(self.algo, "load_state_dict"):
            self.algo.load_state_dict(c.algorithm)
        ckpt.restore_rng(c.rng)
        self.counters = dict(c.state.get("counters", self.counters))

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
        base = getattr(self, "base_eval_media", None)
        if base is not None and summary["after"] is not None:
            self.writer.save_comparison(
                base, self.last_eval_media, self.out / "samples" / "before_after",
                per_row=self.cfg.eval.samples_per_prompt,
                titles=(f"base: {_fmt(summary['before'])}", f"iteration {self.iteration}: {_fmt(summary['after'])}"),
            )


class _Abandoned(Exception):
    """A stop was requested before the iteration's update began."""


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k.removeprefix('eval/').removesuffix('_mean')} {v:.2f}" for k, v in metrics.items())


def _finite_mean(values: list[float]) -> float:
    v = torch.tensor(values, dtype=torch.float64)
    v = v[torch.isfinite(v)]
    return v.mean().item() if len(v) else float("nan")


def _chunks(seq: list, size: int) -> list[list]:
    return [seq[i:i + size] for i in range(0, len(seq), max(1, size))]


def _flat(d: dict, prefix: str = "") -> dict[str, Any]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(_flat(v, key + "."))
        else:
            out[key] = v if isinstance(v, (int, float, str, bool)) else str(v)
    return out
