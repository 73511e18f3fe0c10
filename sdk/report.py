"""What a finished run leaves for people: summary.json, the reward curve from the
metrics file, and the before/after comparison of the evaluation samples."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from alignflow.sdk.files import atomic_write_text
from alignflow.sdk.tracking import read_metrics


def write_report(
    cfg: Any, summary: dict[str, Any], writer: Any, evaluator: Any, iteration: int
) -> None:
    """summary.json in ``cfg.output_dir``; with ``logging.media``, reward_curve.png and
    samples/before_after: the evaluator's base samples beside its last ones, each titled
    with its metrics."""
    out = Path(cfg.output_dir)
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=2))
    if not cfg.logging.media:
        return
    plot_reward_curve(out, title=cfg.name)
    if evaluator.base_media is not None and summary["after"] is not None:
        titles = (
            f"base: {_fmt(summary['before'])}",
            f"iteration {iteration}: {_fmt(summary['after'])}",
        )
        writer.save_comparison(
            evaluator.base_media,
            evaluator.last_media,
            out / "samples" / "before_after",
            per_row=cfg.eval.samples_per_prompt,
            titles=titles,
        )


def _fmt(metrics: dict[str, float]) -> str:
    return ", ".join(
        f"{k.removeprefix('eval/').removesuffix('_mean')} {v:.2f}" for k, v in metrics.items()
    )


def plot_reward_curve(output_dir: Path, path: Path | None = None, title: str = "") -> Path:
    """PNG of the training reward (mean +- std over the iteration's samples) and every
    evaluation metric ending in ``_mean``, against the iteration."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = read_metrics(output_dir)
    path = Path(path or Path(output_dir) / "reward_curve.png")
    train = [r for r in rows if r.get("train/reward_mean") is not None]
    evals = [r for r in rows if any(k.startswith("eval/") for k in r)]
    eval_keys = sorted(
        {k for r in evals for k in r if k.startswith("eval/") and k.endswith("_mean")}
    )
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    if train:
        it = [r["iteration"] for r in train]
        mean = [r["train/reward_mean"] for r in train]
        std = [r.get("train/reward_std") or 0.0 for r in train]
        axes[0].plot(it, mean, label="rollout reward, mean +- std")
        axes[0].fill_between(
            it, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2
        )
    axes[0].set(xlabel="iteration", ylabel="reward", title="training reward")
    for k in eval_keys:
        pts = [(r["iteration"], r[k]) for r in evals if r.get(k) is not None]
        if pts:
            axes[1].plot(*zip(*pts), marker="o", label=k.removeprefix("eval/"))
    axes[1].set(xlabel="iteration", title="evaluation (fixed prompts and seeds, ODE)")
    for ax in axes:
        ax.grid(alpha=0.3)
        if ax.get_legend_handles_labels()[0]:
            ax.legend()
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


class RawWriter:
    """The media writer of a modality that declares none: the samples as a torch file
    (``<name>.pt``, a list in evaluation order) for ``torch.load``."""

    def save_samples(self, media: list, path: Path, per_row: int, title: str = "") -> Path:
        import torch

        path = Path(path).with_suffix(".pt")
        torch.save({"samples": list(media), "per_row": per_row, "title": title}, path)
        return path

    def save_comparison(
        self,
        before: list,
        after: list,
        path: Path,
        per_row: int,
        titles: tuple[str, str] = ("before", "after"),
    ) -> Path:
        import torch

        path = Path(path).with_suffix(".pt")
        torch.save(
            {"before": list(before), "after": list(after), "per_row": per_row, "titles": titles},
            path,
        )
        return path
