"""alignflow from Python: train with plain reward functions, load what a run trained,
sample from it and score it.

    from alignflow.sdk.api import evaluate, load_policy, train

    def ink(media, prompts, metadata):  # any function: one score per sample
        return media.flatten(1).mean(1)

    run = train("image_digits", reward=ink, output_dir="runs/ink",
                overrides=["train.iterations=20"])
    policy = load_policy("runs/ink")  # the trained weights; no reward model is built
    images = policy.sample(["a handwritten digit seven"] * 4, seed=0)
    print(evaluate(policy, ink))  # held-out prompts of the run, its evaluation settings

A reward is a function ``fn(media, prompts, metadata) -> scores`` (a tensor [B], B
numbers, or a RewardOutput), a ``(fn, weight)`` pair, a list of them, or a dict
``{term: fn or (fn, weight)}``; ``None`` keeps the experiment's rewards. Functions are
declared as reward components named ``module.qualname``, so a run's config records
which function it trained with, and resuming with another one is refused.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk.batching import chunks
from alignflow.sdk.build import build_policy, finetune_of
from alignflow.sdk.components import component
from alignflow.sdk.config import RunConfig, compose, dataclass_from
from alignflow.sdk.data import load_prompts
from alignflow.sdk.diagnostics import finite_mean
from alignflow.sdk.ema import EMA
from alignflow.sdk.errors import CheckpointError, ConfigError
from alignflow.sdk.random import generator
from alignflow.sdk.rewards import FunctionReward, WeightedSum, check_output
from alignflow.sdk.rollout import sample

__all__ = ["Run", "TrainedPolicy", "config", "evaluate", "load_policy", "train"]

RewardFn = Callable[[Any, Sequence[str], Sequence[dict]], Any]


@dataclass
class Run:
    """What :func:`train` returns: the summary written to summary.json and the folder."""

    summary: dict[str, Any]
    output_dir: Path


@dataclass
class TrainedPolicy:
    """A policy with the weights a run trained (the EMA weights if the run kept them),
    its run config and the checkpoint it came from."""

    policy: Any
    config: RunConfig
    checkpoint: Path
    ema: bool

    def held_out(self) -> Any:
        """The run's held-out prompt set (``data.eval``, else ``data.train``): ``prompts``
        and ``metadata`` (a speech prompt's reference audio and text, a digit...)."""
        data = self.config.data
        return load_prompts(data.eval or data.train, data.prompt_column, "data.eval")

    @torch.no_grad()
    def sample(
        self,
        prompts: Sequence[str],
        metadata: Sequence[dict] | None = None,
        *,
        seed: int = 0,
        num_steps: int | None = None,
        guidance: float | None = None,
    ) -> Any:
        """ODE samples of ``prompts`` (one each; repeat a prompt for several), decoded
        to media; sample k's noise is keyed by (seed, k). Defaults: the run's eval
        settings."""
        ev = self.config.eval
        metadata = list(metadata) if metadata is not None else [{} for _ in prompts]
        cond = self.policy.encode(list(prompts), metadata)
        noise = [generator(seed, "api", k) for k in range(len(prompts))]
        x0 = sample(
            self.policy,
            cond,
            num_steps or ev.num_steps,
            guidance=guidance or ev.guidance,
            noise_generators=noise,
        )
        return self.policy.decode(x0, cond)


def config(
    experiment: str,
    *,
    reward: Any = None,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> RunConfig:
    """The composed run config of ``experiment`` with ``overrides`` (as on the command
    line), its rewards replaced by ``reward`` if given."""
    args = [f"experiment={experiment}", *overrides]
    if output_dir is not None:
        args.append(f"output_dir={output_dir}")
    cfg = compose("train", args)
    if reward is not None:
        cfg.reward = {
            term: {"name": declare(fn), "weight": w}
            for term, (fn, w) in reward_terms(reward).items()
        }
    return cfg


def train(
    experiment: str | RunConfig,
    *,
    reward: Any = None,
    overrides: Sequence[str] = (),
    output_dir: str | Path | None = None,
) -> Run:
    """Train ``experiment`` (a name from configs/experiment, or a config from
    :func:`config`) as ``alignflow train`` does, in this process."""
    from alignflow.sdk.trainer import Trainer

    if isinstance(experiment, RunConfig):
        if reward is not None or overrides or output_dir is not None:
            raise ConfigError(
                "train", "a RunConfig and options", "one or the other: pass the options to config()"
            )
        cfg = experiment
    else:
        cfg = config(experiment, reward=reward, overrides=overrides, output_dir=output_dir)
    summary = Trainer(cfg).train()
    return Run(summary, Path(cfg.output_dir))


def load_policy(
    run_dir: str | Path,
    checkpoint: str | int = "latest",
    *,
    ema: bool = True,
    device: str | torch.device | None = None,
) -> TrainedPolicy:
    """The policy a run trained: its base (from the run's config) with the trained
    weights of ``checkpoint`` ('latest': the newest that loads; N: checkpoint-N; or a
    path), the EMA weights if the run kept them and ``ema``. Builds no reward model and
    takes no lock: a running training may be read."""
    c = _read_checkpoint(Path(run_dir), checkpoint)
    saved = c.state.get("config")
    if not isinstance(saved, dict):
        raise CheckpointError(f"checkpoint {c.path}: trainer_state.json has no run config")
    cfg = dataclass_from(RunConfig, saved, "config")
    device = device or ("cuda" if torch.cuda.is_available() else "cpu")
    policy = build_policy(cfg, device)
    with torch.random.fork_rng(devices=[]):  # LoRA's initialisation must not move the caller's RNG
        finetune = finetune_of(cfg, policy, needs_reference=False)
    finetune.load_state_dict(c.trained)
    use_ema = ema and c.ema is not None
    if use_ema:
        average = EMA(finetune.parameters(), decay=0.0)
        average.load_state_dict(c.ema)
        with torch.no_grad():
            for p, s in zip(average.params, average.shadow):
                p.copy_(s)
    return TrainedPolicy(policy, cfg, c.path, use_ema)


@torch.no_grad()
def evaluate(
    policy: TrainedPolicy,
    reward: Any = None,
    *,
    prompts: Sequence[str] | None = None,
    metadata: Sequence[dict] | None = None,
    samples_per_prompt: int | None = None,
    seed: int | None = None,
) -> dict[str, float]:
    """Mean reward (and each term and component) of ``policy``'s samples: by default the
    run's held-out prompts (``data.eval``), seeds and evaluation settings, and its
    config's rewards unless ``reward`` is given."""
    from alignflow.sdk.build import build_rewards

    cfg = policy.config
    if prompts is None:
        held_out = policy.held_out()
        prompts, metadata = held_out.prompts, held_out.metadata
    metadata = list(metadata) if metadata is not None else [{} for _ in prompts]
    if reward is None:
        scorer, _ = build_rewards(cfg, policy.policy.modality)
    else:
        scorer = WeightedSum(
            {term: (FunctionReward(fn), w) for term, (fn, w) in reward_terms(reward).items()}
        )
    per, seed = (
        samples_per_prompt or cfg.eval.samples_per_prompt,
        cfg.eval.seed if seed is None else seed,
    )
    jobs = [(p, k) for p in range(len(prompts)) for k in range(per)]
    scores, parts = [], {}
    for chunk in chunks(jobs, cfg.eval.batch_size):
        text, meta = [prompts[p] for p, _ in chunk], [metadata[p] for p, _ in chunk]
        cond = policy.policy.encode(text, meta)
        x0 = sample(
            policy.policy,
            cond,
            cfg.eval.num_steps,
            guidance=cfg.eval.guidance,
            noise_generators=[generator(seed, "eval", p, k) for p, k in chunk],
        )
        media = policy.policy.decode(x0, cond)
        out = check_output(
            scorer(media, text, meta, groups=torch.tensor([p for p, _ in chunk])),
            len(text),
            "reward",
        )
        scores.append(out.scores)
        for name, v in out.components.items():
            parts.setdefault(name, []).append(v)
    m = {"reward_mean": finite_mean(torch.cat(scores))}
    return m | {f"{name}_mean": finite_mean(torch.cat(v)) for name, v in parts.items()}


# ---------------------------------------------------------------------- rewards as functions


def reward_terms(reward: Any) -> dict[str, tuple[RewardFn, float]]:
    """``{term: (fn, weight)}`` from a function, a (fn, weight) pair, a list of them or a
    dict; a term is named after its function."""
    if isinstance(reward, dict):
        items = list(reward.items())
    else:
        items = [(None, r) for r in (reward if isinstance(reward, list) else [reward])]
    terms: dict[str, tuple[RewardFn, float]] = {}
    for name, r in items:
        fn, weight = r if isinstance(r, tuple) and len(r) == 2 else (r, 1.0)
        if not callable(fn) or isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(
                "reward",
                repr(r),
                "a function fn(media, prompts, metadata) -> scores, or (fn, weight)",
            )
        term = name or getattr(fn, "__name__", "reward")
        while term in terms:
            term += "_"
        terms[term] = (fn, float(weight))
    return terms


def declare(fn: RewardFn) -> str:
    """Declare ``fn`` as a reward component named ``module.qualname``; returns the name."""
    module = getattr(fn, "__module__", None) or "python"
    name = f"{module}.{getattr(fn, '__qualname__', type(fn).__name__)}"

    def build() -> FunctionReward:
        return FunctionReward(fn)

    component("reward", name)(build)
    return name


def _read_checkpoint(run_dir: Path, which: str | int) -> ckpt.Checkpoint:
    if which != "latest":
        path = run_dir / f"checkpoint-{which}" if isinstance(which, int) else Path(which)
        return ckpt.load_checkpoint(path)
    reasons = []
    for path in reversed(ckpt.list_checkpoints(run_dir)):
        try:
            return ckpt.load_checkpoint(path)
        except CheckpointError as e:
            reasons.append(str(e))
    raise CheckpointError(
        f"{run_dir}: no checkpoint that loads" + (f" ({'; '.join(reasons)})" if reasons else "")
    )
