"""Flow-matching pretraining of a policy's denoiser (rectified flow / conditional FM).

Used to make the small offline base models the toy experiments start from. For a
batch of (media, caption):

    x0 = to_latents(media),  eps ~ N(0, I),  sigma ~ U(0, 1)
    x_sigma = (1 - sigma) x0 + sigma eps
    L = mean || v_theta(x_sigma, sigma | c) - (eps - x0) ||^2

with the caption replaced by "" with probability ``cond_dropout`` so that
classifier-free guidance works. Only ``policy.trainable_modules()`` are trained.

A dataset returns (media, captions) or (media, captions, metadata). A policy that
infills (speech) provides ``pretrain_inputs(x0, captions, metadata, drop) -> (cond,
weights)``: the condition comes from the data itself and the loss is averaged over the
weighted (generated) elements only. Such conditions depend on the data alone, so they
are made once for the whole dataset (with and without dropout) and indexed per step.

``device``: on an accelerator the policy, the data and the noise live there (the noise
is drawn there too: on the CPU it costs more than a tiny model's step). On the CPU the
noise is drawn as everywhere else in alignflow (:func:`alignflow.sdk.random.randn`).
"""

from __future__ import annotations

import logging
import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk import runlock
from alignflow.sdk.batching import concat, select
from alignflow.sdk.config import check_arguments, option, split_component
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import generator, randn

log = logging.getLogger(__name__)


@dataclass
class PretrainConfig:
    name: str = option("pretrain", "run name")
    seed: int = option(0, "seed of initialisation, batches, noise and caption dropout")
    output_dir: str = option(
        "outputs/${name}", "where the pretrained policy is saved (diffusers layout)"
    )
    overwrite: bool = option(
        False,
        "replace a policy already saved in output_dir (without it such a run stops "
        "before training)",
    )
    policy: dict[str, Any] = option(
        {"name": "???"}, "the policy to pretrain: {name: ..., <arguments>}"
    )
    dataset: dict[str, Any] = option(
        {"name": "???"}, "paired data: {name: <registered pretrain dataset>, <arguments>}"
    )
    steps: int = option(2000, "optimizer steps")
    batch_size: int = option(128, "samples per step")
    lr: float = option(1e-3, "AdamW learning rate")
    lr_schedule: str = option("cosine", "cosine (decay to 10% of lr over the steps) or constant")
    weight_decay: float = option(0.0, "AdamW weight decay")
    cond_dropout: float = option(0.1, "probability of training a sample on the empty prompt")
    sigma_shift: float = option(
        1.0,
        "training sigmas s = k u / (1 + (k - 1) u), u uniform: SD3's timestep shift "
        "k > 1 trains more at high noise, where large samples decide their layout",
    )
    sigma_range: list[float] = option(
        [0.0, 1.0],
        "[lo, hi]: the (shifted) sigmas are mapped onto lo + (hi - lo) s; "
        "[1, 1] trains at pure noise only, where the layout is decided",
    )
    log_every: int = option(100, "log the loss every this many steps")
    device: str = option("auto", "cpu, cuda, cuda:N, or auto (cuda when available)")
    extra: dict[str, Any] = field(
        default_factory=dict, metadata={"help": "free-form notes saved with the result"}
    )


def validate(cfg: PretrainConfig) -> None:
    from alignflow.sdk.components import builder

    for name, ok, accepted in (
        ("steps", cfg.steps >= 1, "an int >= 1"),
        ("batch_size", cfg.batch_size >= 1, "an int >= 1"),
        ("lr", cfg.lr > 0, "a float > 0"),
        ("cond_dropout", 0 <= cfg.cond_dropout < 1, "a float in [0, 1)"),
        ("sigma_shift", cfg.sigma_shift > 0, "a float > 0"),
        ("lr_schedule", cfg.lr_schedule in ("cosine", "constant"), "'cosine' or 'constant'"),
        (
            "device",
            cfg.device in ("auto", "cpu") or re.fullmatch(r"cuda(:\d+)?", cfg.device),
            "'auto', 'cpu', 'cuda' or 'cuda:N'",
        ),
        (
            "sigma_range",
            len(cfg.sigma_range) == 2 and 0 <= cfg.sigma_range[0] <= cfg.sigma_range[1] <= 1,
            "[lo, hi] with 0 <= lo <= hi <= 1",
        ),
    ):
        if not ok:
            raise ConfigError(name, getattr(cfg, name), accepted)
    if cfg.device.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", cfg.device, "'cpu' or 'auto' (no CUDA device is visible)")
    pname, pargs = split_component(cfg.policy, "policy")
    check_arguments(builder("policy", pname, "policy.name"), pargs, "policy")
    dname, dargs = split_component(cfg.dataset, "dataset")
    check_arguments(builder("dataset", dname, "dataset.name"), dargs, "dataset")


def shift_sigmas(u: torch.Tensor, shift: float) -> torch.Tensor:
    """k u / (1 + (k - 1) u): SD3's and Wan's timestep shift, which maps [0, 1] onto
    itself and, for k > 1, moves sigmas towards 1 (k = 1: unchanged)."""
    return shift * u / (1 + (shift - 1) * u)


def pretrain(cfg: PretrainConfig) -> dict[str, float]:
    """Train and save; returns the final loss, the loss averaged over every
    ``log_every`` steps and the wall time."""
    validate(cfg)
    out = Path(cfg.output_dir)
    lock = runlock.acquire(out)  # one run per folder, as for training
    try:
        return _pretrain(cfg, out)
    finally:
        runlock.release(lock)


def _pretrain(cfg: PretrainConfig, out: Path) -> dict[str, float]:
    from alignflow.sdk.components import resolve

    saved = sorted(p.name for p in out.iterdir() if p.name != runlock.LOCK_FILE)
    if saved and not cfg.overwrite:
        raise ConfigError(
            "output_dir",
            str(out),
            "a new or empty folder, or overwrite=true to replace what it "
            f"holds ({', '.join(saved[:5])})",
        )
    pname, pargs = split_component(cfg.policy, "policy")
    dname, dargs = split_component(cfg.dataset, "dataset")
    data = resolve("dataset", dname, "dataset.name")(**dargs)
    media, captions, metadata = data if len(data) == 3 else (*data, None)
    policy = resolve("policy", pname, "policy.name")(**pargs)
    device = torch.device(
        cfg.device if cfg.device != "auto" else "cuda" if torch.cuda.is_available() else "cpu"
    )
    policy.to(device)
    params = [p for m in policy.trainable_modules().values() for p in m.parameters()]
    for m in policy.trainable_modules().values():
        m.train().requires_grad_(True)
    opt = torch.optim.AdamW(
        params, lr=cfg.lr, weight_decay=cfg.weight_decay, fused=device.type == "cuda" or None
    )
    if cfg.lr_schedule == "cosine":

        def factor(s: int) -> float:
            return 0.1 + 0.9 * 0.5 * (1 + torch.cos(torch.tensor(s / cfg.steps * torch.pi)).item())
    else:

        def factor(s: int) -> float:
            return 1.0

    sched = torch.optim.lr_scheduler.LambdaLR(opt, factor)
    lo, hi = cfg.sigma_range
    x0_all = policy.to_latents(media).to(device)
    n = len(captions)
    infilling = hasattr(policy, "pretrain_inputs")
    if infilling:  # condition and loss weights from the data: rows [0, n) kept, [n, 2n) dropped
        with torch.no_grad():
            conditions = concat(
                [
                    policy.pretrain_inputs(x0_all, captions, metadata, torch.full((n,), d))
                    for d in (False, True)
                ]
            )
    g = generator(cfg.seed, "pretrain")
    g_device = None if device.type == "cpu" else torch.Generator(device).manual_seed(cfg.seed)
    start, window, curve = time.time(), [], []
    for step in range(cfg.steps):
        idx = torch.randint(0, n, (cfg.batch_size,), generator=g)
        drop = torch.rand(cfg.batch_size, generator=g) < cfg.cond_dropout
        x0 = x0_all[idx.to(device)]
        if g_device is None:
            eps = randn(x0.shape, g, device=device)
        else:
            eps = torch.randn(x0.shape, generator=g_device, device=device)
        sigma = (
            lo + (hi - lo) * shift_sigmas(torch.rand(cfg.batch_size, generator=g), cfg.sigma_shift)
        ).to(device)
        s = sigma.view(-1, *([1] * (x0.ndim - 1)))
        x_t = (1 - s) * x0 + s * eps
        if infilling:
            cond, weight = select(conditions, idx + n * drop)
        else:
            rows = None if metadata is None else [metadata[i] for i in idx.tolist()]
            with torch.no_grad():  # (metadata: e.g. the source an editing model starts from)
                cond, weight = (
                    policy.encode(
                        ["" if d else captions[i] for i, d in zip(idx.tolist(), drop.tolist())],
                        rows,
                    ),
                    None,
                )
        v = policy.velocity(x_t, sigma, cond, 1.0)
        err = (v.float() - (eps - x0)) ** 2
        loss = (
            err.mean()
            if weight is None
            else (err * weight).sum() / (weight.sum() * err.shape[-1]).clamp_min(1)
        )
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        sched.step()
        window.append(loss.detach())
        if (
            step + 1
        ) % cfg.log_every == 0 or step + 1 == cfg.steps:  # one device sync per log, not per step
            curve.append(torch.stack(window).double().mean().item())
            log.info("pretrain step %d/%d loss %.4f", step + 1, cfg.steps, curve[-1])
            window = []
    for m in policy.trainable_modules().values():
        m.eval()
    # written beside the folder first: a failed save (disk full) leaves what was there
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        policy.save_pretrained(tmp)
        for name in saved:  # overwrite=true: the old policy goes only once the new one is complete
            shutil.rmtree(out / name) if (out / name).is_dir() else (out / name).unlink()
        for entry in tmp.iterdir():
            entry.rename(out / entry.name)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return {"final_loss": curve[-1], "loss_curve": curve, "seconds": time.time() - start}
