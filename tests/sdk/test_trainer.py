"""The trainer on the real tiny digits policy (diffusers SD3 transformer + CLIP text
encoder), CPU, a few iterations each."""

import pytest
import torch

from alignflow.sdk.tracking import read_metrics, train_seconds
from alignflow.sdk.trainer import Trainer
from tests.helpers import digits_cfg, strip_times


def test_first_inner_step_is_on_policy_ratio_one_and_kl_zero(tmp_path):
    # One optimizer step per iteration: every micro-batch is evaluated before it.
    tr = Trainer(digits_cfg(tmp_path, "train.optimizer_steps=1", "train.micro_batch_size=5"))
    m = tr.train_iteration(0)
    assert m["train/ratio_min"] == 1.0 and m["train/ratio_max"] == 1.0
    assert m["train/clipfrac"] == 0.0
    assert m["train/kl_ref"] == 0.0  # LoRA starts at B = 0: the policy is the reference
    # The rollout's stored log-probs equal the training forward's although the batches
    # differ (8 samples per rollout forward, 5 transitions per training forward).
    assert m["train/logprob_mismatch"] < 1e-5


def test_after_the_first_optimizer_step_the_stored_log_probs_are_used(tmp_path):
    tr = Trainer(digits_cfg(tmp_path, "train.optimizer_steps=3", "train.lr=1e-2"))
    m = tr.train_iteration(0)
    assert m["train/ratio_min"] < 1.0 < m["train/ratio_max"]
    assert m["train/kl_ref"] > 0


def test_iteration_metrics_are_complete_and_finite(tmp_path):
    tr = Trainer(digits_cfg(tmp_path))
    m = tr.train_iteration(0)
    for key in (
        "train/reward_mean",
        "train/reward_std",
        "train/digit/accuracy_mean",
        "train/clipfrac",
        "train/approx_kl",
        "train/kl_ref",
        "train/ratio",
        "train/ratio_min",
        "train/ratio_max",
        "train/zero_std_groups",
        "train/grad_norm",
        "train/diversity",
        "train/kl_base",
        "time/rollout",
        "time/reward",
        "time/train",
    ):
        assert key in m and torch.isfinite(torch.tensor(m[key])), key


@pytest.mark.parametrize(
    "algorithm, per_item",
    # forwards per trained (sample, step): the policy's and the reference's (KL > 0),
    # and DiffusionNFT's old policy
    [("flow_grpo", 2), ("diffusion_nft", 3)],
)
def test_nfe_counts_the_denoiser_rows_of_rollout_and_update(tmp_path, algorithm, per_item):
    """FAST: 2 prompts x 4 samples, 4 steps, 3 of them trained (fraction 0.99)."""
    extra = ["algorithm.kl_beta=0.04"] if algorithm == "diffusion_nft" else []
    tr = Trainer(digits_cfg(tmp_path, f"algorithm={algorithm}", *extra))
    B, N, K = 8, 4, 3
    assert tr.train_iteration(0)["train/nfe"] == B * N + B * K * per_item
    tr.evaluate()  # evaluation and the KL-drift probes are not the algorithm's compute
    assert tr.train_iteration(1)["train/nfe"] == B * N + B * K * per_item


def test_same_seed_same_numbers_and_another_seed_differs(tmp_path):
    def run(name, *extra):
        Trainer(digits_cfg(tmp_path / name, "train.iterations=3", "data.eval=", *extra)).train()
        return strip_times(read_metrics(tmp_path / name))

    a, b, c = run("a"), run("b"), run("c", "seed=1")
    assert a == b
    assert a != c


def test_full_finetuning_with_a_frozen_reference_copy(tmp_path):
    tr = Trainer(
        digits_cfg(tmp_path, "train.finetune=full", "train.lr=1e-4", "train.optimizer_steps=3")
    )
    n_trained = sum(p.numel() for p in tr.params)
    assert n_trained == sum(p.numel() for p in tr.policy.transformer.parameters())
    m = tr.train_iteration(0)
    assert m["train/kl_ref"] > 0  # the frozen copy stays behind while the policy moves
    frozen = tr.finetune.frozen["transformer"]
    assert all(not p.requires_grad for p in frozen.parameters())


def test_ema_and_outputs(tmp_path):
    cfg = digits_cfg(
        tmp_path,
        "train.ema_decay=0.9",
        "logging.media=true",
        "eval.every=1",
        "logging.tensorboard=true",
    )
    summary = Trainer(cfg).train()
    assert summary["before"] and summary["after"]
    for f in (
        "reward_curve.png",
        "samples/before_after.png",
        "samples/eval-00000.png",
        "summary.json",
        "checkpoint-2/ema.safetensors",
    ):
        assert (tmp_path / f).is_file(), f
    assert list((tmp_path / "tensorboard").rglob("events.out.tfevents*"))
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [0, 1, 2]


def test_bf16_autocast_keeps_log_probs_in_float32(tmp_path):
    tr = Trainer(digits_cfg(tmp_path, "train.mixed_precision=bf16", "train.optimizer_steps=1"))
    seen = {}
    block = tr.models["transformer"].transformer_blocks[0].ff.net[2]  # a Linear inside the denoiser
    block.register_forward_hook(lambda mod, inp, out: seen.setdefault("inside", out.dtype) and None)
    kernel = tr.algo.kernel

    class Spy:
        name, stochastic = kernel.name, kernel.stochastic
        diffusion = staticmethod(kernel.diffusion)

        def __call__(self, *a, **k):
            out = kernel(*a, **k)
            seen.setdefault("log_prob", out.log_prob.dtype)
            seen.setdefault("mean", out.mean.dtype)
            return out

    tr.algo.kernel = Spy()
    m = tr.train_iteration(0)
    assert seen == {"inside": torch.bfloat16, "log_prob": torch.float32, "mean": torch.float32}
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0


def test_under_bf16_the_rewards_score_outside_autocast_in_training_and_evaluation(tmp_path):
    """Autocast is the policy's precision, not the rewards': a reward model run under it
    would score evaluation samples differently from training ones (and a numpy-backed
    reward fails on bfloat16)."""
    tr = Trainer(digits_cfg(tmp_path, "train.mixed_precision=bf16", "eval.samples_per_prompt=1"))
    digit, weight = tr.reward.terms["digit"]
    autocast = []

    def spy(media, prompts, metadata, **kw):
        autocast.append(torch.is_autocast_enabled("cpu"))
        return digit(media, prompts, metadata, **kw)

    tr.reward.terms["digit"] = (spy, weight)
    tr.train_iteration(0)
    trained = len(autocast)
    tr.evaluate()
    assert trained > 0 and len(autocast) > trained
    assert not any(autocast)


def test_flow_grpo_fast_trains_only_its_window(tmp_path):
    tr = Trainer(
        digits_cfg(
            tmp_path, "algorithm=flow_grpo_fast", "sample.num_steps=8", "train.optimizer_steps=1"
        )
    )
    m = tr.train_iteration(0)
    assert m["train/trained_steps"] == 2.0
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0


def test_group_diversity_is_zero_for_copies_and_grows_with_spread():
    from alignflow.sdk.diagnostics import group_diversities

    g = torch.tensor([0, 0, 1, 1])
    same = torch.ones(4, 3)
    assert group_diversities(same, g).tolist() == [0.0, 0.0]
    x = torch.tensor([[0.0, 0.0], [2.0, 0.0], [0.0, 0.0], [0.0, 4.0]])
    # RMS distances: group 0 = 2 / sqrt(2), group 1 = 4 / sqrt(2)
    torch.testing.assert_close(group_diversities(x, g), torch.tensor([2.0, 4.0]) / 2**0.5)
    assert len(group_diversities(x[:1], g[:1])) == 0


def test_kl_drift_is_zero_for_the_base_and_grows_with_training(tmp_path):
    import contextlib

    from alignflow.sdk.diagnostics import kl_drift
    from alignflow.sdk.random import generator

    # no KL term
    tr = Trainer(digits_cfg(tmp_path, "algorithm=mixgrpo", "algorithm.window=2", "train.lr=1e-2"))
    cond = tr.policy.encode(["3", "7"])
    x0 = torch.randn(2, *tr.policy.noise(1, [generator(0)]).shape[1:], generator=generator(1))
    sigmas, kernel = tr.policy.sigmas(8), tr.algo.kernel

    def drift(reference):
        return kl_drift(
            tr.policy, reference, x0, cond, sigmas, kernel, 0.7, 1.0, [generator(2), generator(3)]
        )

    assert drift(tr.finetune.reference).abs().max() == 0.0  # LoRA B = 0: the policy is the base
    first = tr.train_iteration(0)["train/kl_base"]
    second = tr.train_iteration(1)["train/kl_base"]
    assert 0 < first < second
    moved = drift(tr.finetune.reference)
    assert (
        drift(contextlib.nullcontext).abs().max() == 0.0
        and (moved > 0).all()
        and moved.shape == (2,)
    )


def test_gold_reward_is_logged_and_not_optimised(tmp_path):
    cfg = digits_cfg(tmp_path, "+gold.judge.name=digit_classifier", "train.optimizer_steps=1")
    tr = Trainer(cfg)
    m = tr.train_iteration(0)
    assert "train/gold/judge_mean" in m and "train/digit/accuracy_mean" in m
    # the same model as the optimised reward here, so the same numbers; not in the advantage
    assert abs(m["train/gold/judge_mean"] - m["train/reward_mean"]) < 1e-6
    assert "gold" not in tr.reward.terms


def test_a_bad_gold_reward_is_named_before_anything_is_built(tmp_path):
    import pytest

    from alignflow.sdk.errors import ConfigError

    with pytest.raises(ConfigError, match="gold.judge.name"):
        Trainer(digits_cfg(tmp_path, "+gold.judge.name=no_such_reward"))


def test_a_wall_clock_budget_ends_the_run_evaluated_and_counts_earlier_iterations(tmp_path):
    """train.max_seconds: the iteration that spends the budget is the last (evaluated,
    saved); a resumed run counts the seconds of the iterations before it."""
    one = Trainer(digits_cfg(tmp_path, "train.iterations=1", "eval.every=0")).train()
    assert one["iterations"] == 1
    spent = sum(train_seconds(r) for r in read_metrics(tmp_path))
    # a budget just above what iteration 1 spent: one more iteration, not one more run's
    resumed = digits_cfg(
        tmp_path,
        "train.iterations=6",
        f"train.max_seconds={spent * 1.01}",
        "eval.every=0",
        "checkpoint.resume=latest",
    )
    summary = Trainer(resumed).train()
    assert summary["iterations"] == 2 and summary["after"]
    assert (tmp_path / "checkpoint-2").is_dir()
    rows = read_metrics(tmp_path)
    assert [r["iteration"] for r in rows] == [0, 1, 2] and "eval/reward_mean" in rows[-1]
    # spent already: a resume runs nothing more
    assert Trainer(resumed).train()["iterations"] == 2
    assert [r["iteration"] for r in read_metrics(tmp_path)] == [0, 1, 2]
