"""Held-out evaluation: deterministic (ODE) samples of fixed prompts and seeds.

Every evaluation of a run samples the same prompts with the same noise, so what
changes between two evaluations is the policy. ``eval.samples_per_prompt`` seeds per
prompt, ``eval.num_steps`` steps, the EMA weights when EMA is on; the jobs are spread
over the processes and gathered in job order, so the grid and the numbers do not
depend on the number of processes.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.batching import chunks
from alignflow.sdk.data import PromptSet
from alignflow.sdk.diagnostics import finite_mean
from alignflow.sdk.ema import EMA
from alignflow.sdk.random import generator
from alignflow.sdk.rollout import sample

log = logging.getLogger(__name__)


class Evaluator:
    """``evaluate(iteration, prompts)`` -> ``eval/*`` metrics; keeps the media of the
    last evaluation (``last_media``) and of the base (``base_media``), with each
    sample's prompt and scores (``last_samples``, ``base_samples``), for the report."""

    def __init__(self, cfg: Any, policy: Any, acc: Any, scorer: Any, writer: Any, ema: EMA | None):
        """``cfg``: the run config (``eval``, ``output_dir``, ``logging.media``: write
        the grids); ``scorer(media, prompts, metadata, groups)`` -> (RewardOutput, s)."""
        self.cfg, self.policy, self.acc, self.score = cfg.eval, policy, acc, scorer
        self.writer, self.ema, self.out, self.media = (
            writer,
            ema,
            Path(cfg.output_dir),
            cfg.logging.media,
        )
        # a reward that compares a prompt's samples needs whole prompts in each call
        self.groupwise = scorer.groupwise
        self.last_media: list | None = None
        self.base_media: list | None = None
        # per sample, in job order: {"prompt", "seed": k, "reward", <component>: score}
        self.last_samples: list[dict] | None = None
        self.base_samples: list[dict] | None = None
        self.prompts: PromptSet | None = None  # those of the last evaluation

    @torch.no_grad()
    def __call__(
        self,
        iteration: int,
        prompts: PromptSet,
        score: bool = True,
        name: str = "",
        base: bool = False,
    ) -> dict[str, float]:
        """Sample and (unless ``score=False``) score every (prompt, seed); write the grid
        (rows: prompts, columns: seeds) to samples/<name or eval-<iteration>>;
        ``base``: these are the base policy's samples, kept for the before/after figure."""
        from accelerate.utils import gather_object

        ev, acc = self.cfg, self.acc
        jobs = [(p, k) for p in range(len(prompts)) for k in range(ev.samples_per_prompt)]
        results = []  # (job, score, components, media) of this process's share
        size = ev.batch_size
        if self.groupwise:
            # whole prompts per call
            size = max(1, size // ev.samples_per_prompt) * ev.samples_per_prompt
        with self.ema.applied() if self.ema else contextlib.nullcontext():
            for chunk in chunks(jobs[acc.process_index :: acc.num_processes], size):
                text = [prompts.prompts[p] for p, _ in chunk]
                meta = [prompts.metadata[p] for p, _ in chunk]
                # the policy runs in the training's precision; the rewards score outside
                # autocast, as they do in training (their worker thread has none)
                with acc.autocast():
                    cond = self.policy.encode(text, meta)
                    x0 = sample(
                        self.policy,
                        cond,
                        ev.num_steps,
                        guidance=ev.guidance,
                        noise_generators=[generator(ev.seed, "eval", p, k) for p, k in chunk],
                    )
                    media = self.policy.decode(x0, cond).cpu()
                out = (
                    self.score(media, text, meta, torch.tensor([p for p, _ in chunk]))[0]
                    if score
                    else None
                )
                for b, job in enumerate(chunk):
                    results.append(
                        (
                            job,
                            out.scores[b].item() if out else None,
                            {n: v[b].item() for n, v in out.components.items()} if out else {},
                            media[b],
                        )
                    )
        results = sorted(gather_object(results), key=lambda r: r[0])
        m = {"eval/reward_mean": _mean([r[1] for r in results])} if score else {}
        for comp in results[0][2]:
            m[f"eval/{comp}_mean"] = _mean([r[2][comp] for r in results])
        self.last_media = [r[3] for r in results]  # one item per sample, in job order
        self.prompts = prompts
        self.last_samples = [
            {"prompt": prompts.prompts[p], "seed": k, "reward": s, **c}
            for (p, k), s, c, _ in results
        ]
        if base:
            self.base_media, self.base_samples = self.last_media, self.last_samples
        if acc.is_main_process and self.media:
            (self.out / "samples").mkdir(parents=True, exist_ok=True)
            self.writer.save_samples(
                self.last_media,
                self.out / "samples" / (name or f"eval-{iteration:05d}"),
                per_row=ev.samples_per_prompt,
                title=f"iteration {iteration}",
            )
        return m

    def sources(self) -> list | None:
        """The source media of the last evaluation's prompts, for an editing policy (one
        whose prompts start from source media it reads: its ``sources``), else None."""
        reader = getattr(self.policy, "sources", None)
        if reader is None or self.prompts is None:
            return None
        return reader.batch(self.prompts.metadata, len(self.prompts))

    def base_again(self, prompts: PromptSet, finetune: Any) -> None:
        """A resumed run's base samples for the before/after report: the same prompts and
        noise as its evaluation at iteration 0, with the policy as the reference."""
        if not finetune.has_reference:
            log.info("no reference policy to sample: the report has no before/after samples")
            return
        with finetune.reference():
            self(0, prompts, base=True, name="eval-00000")


def _mean(values: list[float]) -> float:
    return finite_mean(torch.tensor(values, dtype=torch.float64))
