"""Building a run's parts from its config: the policy, the rewards, the algorithm and
what training adds to the policy (LoRA or full fine-tuning, the optimizer, EMA),
placed by accelerate. The trainer builds all of them; loading a trained policy for
sampling builds only the policy and its trained weights."""

from __future__ import annotations

import contextlib
import logging
from dataclasses import dataclass
from typing import Any

import torch

from alignflow.sdk.components import resolve
from alignflow.sdk.config import RunConfig, reward_terms, split_component
from alignflow.sdk.ema import EMA
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.finetune import build_finetune
from alignflow.sdk.random import derive_seed
from alignflow.sdk.rewards import ANY, WeightedSum

log = logging.getLogger(__name__)


def build_accelerator(cfg: RunConfig) -> Any:
    """accelerate's Accelerator: CPU without CUDA, the run's mixed precision, the
    trackers asked for (TensorBoard under output_dir/tensorboard, wandb)."""
    from pathlib import Path

    from accelerate import Accelerator
    from accelerate.utils import ProjectConfiguration

    out, lg = Path(cfg.output_dir), cfg.logging
    trackers = [name for name, on in (("tensorboard", lg.tensorboard), ("wandb", lg.wandb)) if on]
    project = ProjectConfiguration(str(out), logging_dir=str(out / "tensorboard"))
    return Accelerator(
        cpu=not torch.cuda.is_available(),
        mixed_precision=cfg.train.mixed_precision,
        log_with=trackers or None,
        project_config=project,
    )


def build_policy(cfg: RunConfig, device: Any) -> Any:
    name, args = split_component(cfg.policy, "policy")
    return resolve("policy", name, "policy.name")(**args).to(device)


def build_writer(modality: str) -> Any:
    """The declared media writer of ``modality`` (PNG grids, GIFs, WAVs), or the raw
    writer (a torch file) for a modality that declares none."""
    from alignflow.sdk.components import names
    from alignflow.sdk.report import RawWriter

    if modality in names("writer"):
        return resolve("writer", modality, "policy.modality")()
    log.info("no media writer is declared for %r media: samples are saved as torch files", modality)
    return RawWriter()


def build_rewards(cfg: RunConfig, modality: str) -> tuple[WeightedSum, dict[str, Any]]:
    """The optimised reward (weighted sum of ``reward``'s terms) and the gold rewards
    (``gold``: scored and logged, never in the advantage), checked against the policy's
    modality."""
    reward = WeightedSum(
        {
            term: (resolve("reward", name, f"reward.{term}.name")(**args), weight)
            for term, (name, weight, args) in reward_terms(cfg).items()
        }
    )
    gold = {
        term: resolve("reward", name, f"gold.{term}.name")(**args)
        for term, (name, _, args) in reward_terms(cfg, "gold").items()
    }
    if reward.modality not in (modality, ANY):
        raise ConfigError(
            "reward",
            list(cfg.reward),
            f"rewards for {modality!r} media (policy "
            f"{cfg.policy.get('name')!r} makes {modality}, the rewards score {reward.modality})",
        )
    return reward, gold


def algorithm_class(cfg: RunConfig) -> tuple[type, Any]:
    """The algorithm's class and its validated config."""
    name, args = split_component(cfg.algorithm, "algorithm")
    cls = resolve("algorithm", name, "algorithm.name")
    return cls, cls.config_from(args)


def finetune_of(cfg: RunConfig, policy: Any, *, needs_reference: bool) -> Any:
    """``train.finetune`` of ``policy``: LoRA (``train.lora_*``) or full fine-tuning."""
    t = cfg.train
    return build_finetune(
        policy,
        t.finetune,
        rank=t.lora_rank,
        alpha=t.lora_alpha,
        targets=t.lora_targets,
        needs_reference=needs_reference,
    )


@dataclass
class Training:
    """What training adds to a policy: its trained parameters (``finetune``), the
    models accelerate wraps (DDP / FSDP / DeepSpeed), the optimizer and the EMA."""

    finetune: Any
    params: list[torch.nn.Parameter]
    models: dict[str, Any]
    optimizer: Any
    ema: EMA | None
    sharded: Any = None
    """The FSDP2-sharded module (the only trained one), None without FSDP2: its
    checkpoint state is gathered by every process (sdk/sharded.py)."""

    def no_sync(self, acc: Any, skip: bool) -> contextlib.AbstractContextManager:
        """With several processes and ``skip``: gradients are not synchronised in this
        backward (an accumulation window syncs on its last one only)."""
        stack = contextlib.ExitStack()
        if skip and acc.num_processes > 1:
            for model in self.models.values():
                stack.enter_context(acc.no_sync(model))
        return stack


def build_training(cfg: RunConfig, policy: Any, acc: Any, *, needs_reference: bool) -> Training:
    """LoRA or full fine-tuning of ``policy`` (a frozen copy of the base kept for full
    fine-tuning only if ``needs_reference``), AdamW, EMA; the trainable modules are
    prepared by ``acc`` and put back on the policy."""
    from accelerate.utils import set_seed

    t = cfg.train
    # The global RNG only initialises what is created here (LoRA's A matrices);
    # everything drawn during training uses its own generator.
    set_seed(derive_seed(cfg.seed, "init") % 2**32)
    finetune = finetune_of(cfg, policy, needs_reference=needs_reference)
    params = finetune.parameters()
    optimizer = torch.optim.AdamW(
        params, lr=t.lr, betas=tuple(t.betas), eps=t.adam_eps, weight_decay=t.weight_decay
    )
    models, modules, sharded = {}, policy.trainable_modules(), None
    if getattr(acc, "is_fsdp2", False):
        # FSDP2 shards by replacing parameters: the optimizer is prepared with its model
        # (accelerate maps its parameters onto the sharded ones), and the trained
        # parameters are read again from the sharded modules.
        if len(modules) != 1:
            raise ConfigError(
                "accelerate config",
                "FSDP2",
                "a policy with one trainable module",
                hint=f"this one trains {sorted(modules)}; use DDP or DeepSpeed",
            )
        ((name, module),) = modules.items()
        models[name], optimizer = acc.prepare(module, optimizer)
        setattr(policy, name, models[name])
        params, sharded = finetune.parameters(), models[name]
    else:
        for name, module in modules.items():
            models[name] = acc.prepare(module)
            setattr(policy, name, models[name])
        optimizer = acc.prepare(optimizer)
    return Training(
        finetune,
        params,
        models,
        optimizer,
        EMA(params, t.ema_decay) if t.ema_decay > 0 else None,
        sharded,
    )
