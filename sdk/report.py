"""What a finished run leaves for people: summary.json and config.json, the reward
curve from the metrics file, the before/after comparison of the evaluation samples, the
same samples one file each with their prompts and scores (samples/gallery.json), and
the HTML page of it all (report_html.py)."""

from __future__ import annotations

import json
from dataclasses import asdict
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
    atomic_write_text(out / "config.json", json.dumps(asdict(cfg), indent=1, default=str))
    if not cfg.logging.media:
        return
    plot_reward_curve(out, title=cfg.name)
    if evaluator.base_media is not None and summary["after"] is not None:
        titles = (
            f"base: {_fmt(summary['before'])}",
            f"iteration {iteration}: {_fmt(summary['after'])}",
        )
        edits = {}
        sources = evaluator.sources()
        if sources is not None:  # an editing policy: its sources and instructions
            edits = {"sources": sources, "prompts": evaluator.prompts.prompts}
        writer.save_comparison(
            evaluator.base_media,
            evaluator.last_media,
            out / "samples" / "before_after",
            per_row=cfg.eval.samples_per_prompt,
            titles=titles,
            **edits,
        )
        write_gallery(out, writer, evaluator, iteration)
    from alignflow.sdk.report_html import write_run_report

    write_run_report(out)


GALLERY = "gallery.json"


def write_gallery(out: Path, writer: Any, evaluator: Any, iteration: int, limit: int = 48) -> Path:
    """``samples/gallery/{before,after}/NNN.<ext>``, one file per held-out sample (the
    first seed of every prompt first, at most ``limit``), and ``samples/gallery.json``:
    each pair's prompt, seed, files and scores, for the HTML report to label."""
    # a writer from a plugin that predates save_item: its samples as torch files
    save = getattr(writer, "save_item", None) or RawWriter().save_item
    before, after = evaluator.base_samples, evaluator.last_samples
    order = sorted(range(len(before)), key=lambda i: (before[i]["seed"], i))[:limit]
    folder, items = Path(out) / "samples" / "gallery", []
    for n, i in enumerate(order):
        pair = {"prompt": before[i]["prompt"], "seed": before[i]["seed"]}
        for side, media, scores in (
            ("before", evaluator.base_media, before),
            ("after", evaluator.last_media, after),
        ):
            path = save(media[i], folder / side / f"{n:03d}")
            scores = {k: v for k, v in scores[i].items() if k not in ("prompt", "seed")}
            pair[side] = {"file": path.relative_to(out).as_posix(), "scores": scores}
        items.append(pair)
    path = Path(out) / "samples" / GALLERY
    atomic_write_text(path, json.dumps({"iteration": iteration, "items": items}, indent=1))
    return path


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

    def save_item(self, item: Any, path: Path) -> Path:
        import torch

        path = Path(path).with_suffix(".pt")
        path.parent.mkdir(parents=True, exist_ok=True)
        torch.save(item, path)
        return path

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
