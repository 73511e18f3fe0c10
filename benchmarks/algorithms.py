"""The Flow-GRPO family head to head on the image_digits default.

    .venv/bin/python benchmarks/algorithms.py [--iterations 100] [--every 10] [--only a,b]
        [--out DIR] [overrides]

Every recipe runs the same experiment (tiny SD3 over 8x8 digits, digit-classifier
reward), seed, prompts, group size (8 prompts x 8 samples) and iteration budget, with the
recipe's own structure (which steps are SDE and trained, topology, credit, loss) and the
experiment's task scaling of the noise level and clip range (docs/algorithms.md says
why: D = 64 here). Measured per recipe, evaluation excluded:

- wall-clock seconds and model evaluations (NFEs: per-sample denoiser forwards, rollout
  and training alike; a forward with backward counts once) until the held-out accuracy
  first reaches 90%, evaluated every ``--every`` iterations (ODE, 20 steps, 16 fixed
  seeds per prompt);
- the final held-out accuracy;
- the gold reward: an OCR model (rapidocr's recogniser, character likelihood of the
  digit) never optimised, scored on the same held-out samples, change from the base;
- the within-group diversity of the training samples, change from the first to the
  last iterations (mean of 5).

Prints a table and writes ``algorithms.png`` (accuracy vs wall-clock and vs NFEs) and
``algorithms.json`` to ``--out``. Everything runs in one process, one recipe after the
other, so ratios between recipes are comparable on a noisy machine; the absolute
seconds are this machine's.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path

import torch

from alignflow.rewards.image.ocr import OCRReward
from alignflow.sdk.config import compose
from alignflow.sdk.trainer import Trainer

# The experiment's algorithm block (noise 1.0, clip 2e-3, KL 0.04) applies to every
# recipe; these restore what each paper changes about it.
RECIPES: dict[str, list[str]] = {
    "flow_grpo": [],
    "flow_grpo_fast": ["algorithm.window=2", "algorithm.clip_range=2e-3"],
    "mixgrpo": ["algorithm.kl_beta=0", "algorithm.window=4"],
    "mixgrpo_flash": ["algorithm.kl_beta=0", "algorithm.window=4"],
    "dance_grpo": [
        "algorithm.kl_beta=0",
        "algorithm.noise_level=0.5",
    ],  # eta: 1.0 never learned here, 0.3 slower
    "diffusion_nft": ["algorithm.kl_beta=1e-4"],
    "grpo_guard": [],
    "tempflow_grpo": [],
    "branch_grpo": [],
    "tree_grpo": ["algorithm.branch_steps=[0,1,2]"],
    "dense_grpo": [],
}
ACCURACY, TARGET = "eval/digit/accuracy_mean", 0.9


class NFECounter:
    """Counts per-sample velocity evaluations of a policy while ``on``."""

    def __init__(self, policy):
        self.n, self.on, self._velocity = 0, False, policy.velocity
        policy.velocity = self

    def __call__(self, x, *args, **kwargs):
        if self.on:
            self.n += x.shape[0]
        return self._velocity(x, *args, **kwargs)


def recipe_schedule(name: str, iterations: int) -> list[str]:
    """Overrides that depend on the budget: MixGRPO's window moves at the paper's pace,
    over about half of its possible starts in the budget (paper: 12 of 23 starts in 300
    iterations, one move every 25; here 3 of 6 starts over the 10-step schedule)."""
    return [f"algorithm.every={max(1, iterations // 3)}"] if name.startswith("mixgrpo") else []


def run(
    name: str, iterations: int, every: int, out: Path, gold: OCRReward, overrides: list[str]
) -> dict:
    cfg = compose(
        "train",
        [
            "experiment=image_digits",
            f"algorithm={name}",
            f"output_dir={out / name}",
            f"train.iterations={iterations}",
            "eval.every=0",
            "checkpoint.every=0",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            "logging.media=false",
            "checkpoint.overwrite=true",
            *RECIPES[name],
            *recipe_schedule(name, iterations),
            *overrides,
        ],
    )
    tr = Trainer(cfg)
    counter = NFECounter(tr.policy)

    def evaluate() -> tuple[float, float]:
        m = tr.evaluate()
        prompts = [
            tr.eval_set.prompts[p]
            for p in range(len(tr.eval_set))
            for _ in range(cfg.eval.samples_per_prompt)
        ]
        meta = [
            tr.eval_set.metadata[p]
            for p in range(len(tr.eval_set))
            for _ in range(cfg.eval.samples_per_prompt)
        ]
        g = gold(torch.stack(tr.evaluator.last_media), prompts, meta).scores
        return m[ACCURACY], float(g[torch.isfinite(g)].mean())

    acc, g = evaluate()
    curve = [{"iteration": 0, "seconds": 0.0, "nfe": 0, "accuracy": acc, "gold": g}]
    wall, diversity = 0.0, []
    for it in range(iterations):
        start = time.perf_counter()
        counter.on = True
        m = tr.train_iteration(it)
        counter.on = False
        wall += time.perf_counter() - start
        tr.iteration = it + 1
        diversity.append(m["train/diversity"])
        if (it + 1) % every == 0 or it + 1 == iterations:
            acc, g = evaluate()
            curve.append(
                {"iteration": it + 1, "seconds": wall, "nfe": counter.n, "accuracy": acc, "gold": g}
            )
            print(f"  {name} it {it + 1}: acc {acc:.3f} gold {g:.3f} {wall:.0f} s", flush=True)
    hit = next((c for c in curve if c["accuracy"] >= TARGET), None)
    k = min(5, len(diversity))
    return {
        "recipe": name,
        "curve": curve,
        "seconds_to_target": hit["seconds"] if hit else None,
        "nfe_to_target": hit["nfe"] if hit else None,
        "base_accuracy": curve[0]["accuracy"],
        "final_accuracy": curve[-1]["accuracy"],
        "gold_change": curve[-1]["gold"] - curve[0]["gold"],
        "diversity_change": statistics.mean(diversity[-k:]) - statistics.mean(diversity[:k]),
        "seconds_per_iteration": wall / iterations,
        "nfe_per_iteration": counter.n / iterations,
    }


def table(results: list[dict]) -> str:
    ref = next((r for r in results if r["recipe"] == "flow_grpo" and r["seconds_to_target"]), None)
    head = (
        f"{'recipe':<15}{'s/it':>6}{'NFE/it':>8}{'s to 90%':>10}{'NFE to 90%':>12}{'speed-up':>10}"
        f"{'final acc':>10}{'gold chg':>10}{'div chg':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in results:
        s, n = r["seconds_to_target"], r["nfe_to_target"]
        speed = f"{ref['seconds_to_target'] / s:.2f}x" if ref and s else "-"
        lines.append(
            f"{r['recipe']:<15}{r['seconds_per_iteration']:6.2f}{r['nfe_per_iteration']:8.0f}"
            f"{(f'{s:.0f}' if s is not None else 'never'):>10}"
            f"{(f'{n:,}' if n is not None else 'never'):>12}"
            f"{speed:>10}{r['final_accuracy']:10.3f}"
            f"{r['gold_change']:+10.3f}{r['diversity_change']:+9.3f}"
        )
    lines.append(
        "speed-up: Flow-GRPO's wall-clock to 90% / the recipe's; base accuracy "
        f"{results[0]['base_accuracy']:.3f}"
    )
    return "\n".join(lines)


def plot(results: list[dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
    colors = plt.cm.tab20.colors
    for k, r in enumerate(results):
        xs = [c["seconds"] for c in r["curve"]]
        ns = [c["nfe"] / 1e3 for c in r["curve"]]
        ys = [c["accuracy"] for c in r["curve"]]
        style = (
            "--"
            if r["recipe"] in ("branch_grpo", "tree_grpo", "tempflow_grpo", "dense_grpo")
            else "-"
        )
        axes[0].plot(
            xs, ys, style, marker=".", color=colors[2 * k % 20 + k // 10], label=r["recipe"]
        )
        axes[1].plot(
            ns, ys, style, marker=".", color=colors[2 * k % 20 + k // 10], label=r["recipe"]
        )
    for ax, xlabel in zip(
        axes, ("training wall-clock (s, this CPU)", "model evaluations (thousands)")
    ):
        ax.axhline(TARGET, color="grey", lw=0.8)
        ax.set_xlabel(xlabel)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("held-out digit accuracy")
    axes[1].legend(fontsize=8, ncol=2)
    fig.suptitle("The Flow-GRPO family on image_digits (same seed, prompts and budget)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=100)
    ap.add_argument("--every", type=int, default=10)
    ap.add_argument("--only", default="", help="comma-separated recipes (default: all)")
    ap.add_argument("--out", default="outputs/benchmark_algorithms")
    ap.add_argument("overrides", nargs="*", help="hydra overrides applied to every recipe's run")
    args = ap.parse_args()
    names = [n for n in args.only.split(",") if n] or list(RECIPES)
    unknown = sorted(set(names) - set(RECIPES))
    if unknown:
        raise SystemExit(f"--only: unknown recipes {unknown}; accepted: {sorted(RECIPES)}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    gold = OCRReward(
        engine="rapidocr",
        detect=False,
        target_key="digit",
        min_height=32,
        scoring="likelihood",
        pad_lines=False,
    )
    results = []
    for name in names:
        print(f"{name} ...", flush=True)
        results.append(run(name, args.iterations, args.every, out, gold, args.overrides))
        (out / "algorithms.json").write_text(json.dumps(results, indent=1))
    print(f"\n{args.iterations} iterations each, {torch.get_num_threads()} threads")
    print(table(results))
    plot(results, out / "algorithms.png")
    print(f"plot: {out / 'algorithms.png'}")


if __name__ == "__main__":
    main()
