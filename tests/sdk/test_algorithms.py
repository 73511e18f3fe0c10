"""The Flow-GRPO family's recipes on the fast digits run: each trains what its paper
says and nothing else."""

import pytest

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.trainer import Trainer
from tests.helpers import digits_cfg


def test_mixgrpo_trains_its_window_and_the_window_slides(tmp_path):
    tr = Trainer(
        digits_cfg(
            tmp_path,
            "algorithm=mixgrpo",
            "sample.num_steps=8",
            "algorithm.window=2",
            "algorithm.every=1",
            "train.optimizer_steps=1",
        )
    )
    starts = [tr.algo.plan(8, it, 0).shared_prefix for it in range(7)]
    assert starts == [0, 1, 2, 3, 4, 5, 0]  # N - 1 - w = 5, then back to the start
    m = tr.train_iteration(3)
    assert m["train/trained_steps"] == 2.0
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0


def test_mixgrpo_config_is_checked(tmp_path):
    with pytest.raises(ConfigError, match="algorithm.slide"):
        Trainer(digits_cfg(tmp_path, "algorithm=mixgrpo", "algorithm.slide=backwards"))
    with pytest.raises(
        ConfigError, match="sample.num_steps.*window of 4"
    ):  # at build time, not at iteration 0
        Trainer(digits_cfg(tmp_path, "algorithm=mixgrpo", "sample.num_steps=4"))


def test_dance_grpo_trains_a_random_subset_of_steps_per_sample(tmp_path):
    tr = Trainer(
        digits_cfg(
            tmp_path, "algorithm=dance_grpo", "sample.num_steps=6", "train.optimizer_steps=1"
        )
    )
    assert tr.algo.kernel.name == "dance_sde"
    seen = {}
    real = tr.algo.training_items

    def spy(traj, adv, **kw):
        items = real(traj, adv, **kw)
        seen["items"], seen["B"], seen["again"] = items, len(traj.x0), real(traj, adv, **kw)
        return items

    tr.algo.training_items = spy
    m = tr.train_iteration(0)
    items, B = seen["items"], seen["B"]
    assert m["train/trained_steps"] == 5.0  # recorded: all but the last
    assert len(items.sample) == B * 3  # floor(0.6 x 5) steps per sample
    assert items.sample.bincount().tolist() == [3] * B
    per_sample = {tuple(items.step[items.sample == b].tolist()) for b in range(B)}
    assert len(per_sample) > 1  # not the same steps for every sample
    assert items.step.equal(seen["again"].step)  # drawn from (seed, iteration, slot, member)
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0


def test_diffusion_nft_trains_clean_samples_with_a_lagging_old_policy(tmp_path):
    import torch

    tr = Trainer(
        digits_cfg(
            tmp_path,
            "algorithm=diffusion_nft",
            "sample.num_steps=5",
            "train.optimizer_steps=2",
            "train.lr=1e-2",
            "algorithm.old_decay_rate=0.25",
            "train.iterations=2",
            "checkpoint.every=1",
        )
    )
    seen = {}
    real = tr.algo.training_items
    tr.algo.training_items = lambda traj, adv, **kw: seen.setdefault("items", real(traj, adv, **kw))
    m = tr.train_iteration(0)
    items = seen["items"]
    B = len(items.sample.unique())
    assert len(items.sample) == B * 4  # floor(0.99 x 5) timesteps per sample
    assert set(items.sigma.tolist()) <= set(tr.policy.sigmas(5)[:5].tolist())
    assert ((items.r >= 0) & (items.r <= 1)).all()
    assert m["train/trained_steps"] == len(items.step.unique())  # distinct timesteps trained
    torch.testing.assert_close(items.sigma, tr.policy.sigmas(5)[items.step].float())
    assert m["train/old_decay"] == 0.5  # 2 optimizer steps x 0.25
    # the old policy is half way between the start and the trained weights
    old = tr.algo.old.shadow
    assert any(not torch.equal(o, p.detach().float()) for o, p in zip(old, tr.params))
    tr.iteration = 1
    tr.save()
    again = Trainer(
        digits_cfg(
            tmp_path,
            "algorithm=diffusion_nft",
            "sample.num_steps=5",
            "train.optimizer_steps=2",
            "train.lr=1e-2",
            "algorithm.old_decay_rate=0.25",
            "checkpoint.resume=latest",
        )
    )
    assert again.algo.optimizer_steps == 2
    assert all(torch.equal(a, b) for a, b in zip(again.algo.old.shadow, old))


def test_grpo_guard_ratio_is_centred_and_scaled_per_step():
    """RatioNorm on hand-made Gaussian steps: a policy whose mean moved by delta has a raw
    log-ratio of mean -b, which the guard's centring removes."""
    import torch

    from alignflow.sdk.algorithms.grpo_guard import GRPOGuard, GuardTransitions, ratio_norm_loss
    from alignflow.sdk.kernels import StepOutput, gaussian_log_prob

    torch.manual_seed(0)
    E, D, s, delta = 4, 20000, 0.3, 0.05
    mu_old = torch.zeros(E, D)
    x_next = mu_old + s * torch.randn(E, D)
    mu_new = (mu_old + delta).requires_grad_(True)
    std = torch.full((E, 1), s)
    out = StepOutput(x_next, gaussian_log_prob(x_next, mu_new, std), mu_new, std)
    old_lp = gaussian_log_prob(x_next, mu_old, std)
    raw = out.log_prob - old_lp
    b = delta**2 / (2 * s**2)
    torch.testing.assert_close(raw.detach().mean(), torch.tensor(-b), atol=5e-4, rtol=0)
    sigmas = torch.tensor([1.0, 0.8, 0.5, 0.0])
    items = GuardTransitions(
        x=x_next,
        x_next=x_next,
        log_prob=old_lp,
        step=torch.tensor([0, 1, 0, 1]),
        sample=torch.arange(E),
        advantage=torch.tensor([1.0, 1.0, -1.0, -1.0]),
        sigmas=sigmas,
        mean=mu_old,
    )
    pg = ratio_norm_loss(out, old_lp, items, clip_range=1.0, on_policy=False)
    torch.testing.assert_close(pg.ratio.log(), ((raw + b) * s).detach())
    assert pg.ratio.log().abs().max() < 1e-3  # centred: no systematic shift below 1
    # each transition weighted by 1 / |dt| (0.2 for step 0, 0.3 for step 1)
    expected = (-items.advantage * pg.ratio / torch.tensor([0.2, 0.3, 0.2, 0.3])).mean()
    torch.testing.assert_close(pg.loss.detach(), expected)
    with pytest.raises(ConfigError, match="algorithm.kernel"):
        GRPOGuard(GRPOGuard.Config(kernel="cps"))


def test_branch_grpo_trains_tree_edges_with_depth_advantages_and_pruning(tmp_path):
    # the fast config has G = 4: a 2 x 2 tree branching at steps 0 and 2
    tr = Trainer(
        digits_cfg(
            tmp_path,
            "algorithm=branch_grpo",
            "sample.num_steps=6",
            "train.optimizer_steps=1",
            "algorithm.keep_per_depth=1",
            "algorithm.branch_steps=[0,2]",
            "algorithm.widths=[2,2]",
        )
    )
    seen = {}
    real = tr.algo.training_items
    tr.algo.training_items = lambda traj, adv, **kw: seen.setdefault("items", real(traj, adv, **kw))
    m = tr.train_iteration(0)
    items = seen["items"]
    P = tr.cfg.sample.prompts_per_iteration
    assert len(items.step) == P * 2 * 1  # 2 depths x 1 kept edge per tree
    assert set(items.step.tolist()) <= {0, 2}
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0


def test_tree_shape_must_give_group_size_leaves(tmp_path):
    with pytest.raises(ConfigError, match="algorithm.widths"):  # when the trainer is built
        Trainer(digits_cfg(tmp_path, "algorithm=tree_grpo", "algorithm.widths=[2,2,2]"))
    with pytest.raises(ConfigError, match="algorithm.branch_steps"):
        Trainer(
            digits_cfg(
                tmp_path,
                "algorithm=tree_grpo",
                "algorithm.branch_steps=[0,9]",
                "algorithm.widths=[2,2]",
            )
        )


def test_tempflow_branches_once_per_iteration_with_noise_aware_weights(tmp_path):
    tr = Trainer(
        digits_cfg(
            tmp_path, "algorithm=tempflow_grpo", "sample.num_steps=6", "train.optimizer_steps=1"
        )
    )
    seen = {}
    real = tr.algo.training_items
    tr.algo.training_items = lambda traj, adv, **kw: seen.setdefault("items", real(traj, adv, **kw))
    m = tr.train_iteration(0)
    items = seen["items"]
    # P x G edges at one step
    assert len(set(items.step.tolist())) == 1 and len(items.step) == 2 * 4
    assert m["train/trained_steps"] == 1.0
    assert items.weight is not None and items.weight.unique().numel() == 1 and items.weight[0] > 0
    ks = {tr.algo.tree_spec(6, it, 0, 4).steps[0] for it in range(40)}
    assert ks == {0, 1, 2, 3, 4}  # every step but the last


def _count_rollout_calls(tr):
    """Batch sizes of the policy's velocity calls made inside the algorithm's rollout."""
    calls, inside = [], []
    velocity, rollout_hook = tr.policy.velocity, tr.algo.rollout

    def counted(*a, **kw):
        if inside:
            calls.append(a[0].shape[0])
        return velocity(*a, **kw)

    def hooked(*a, **kw):
        inside.append(True)
        try:
            return rollout_hook(*a, **kw)
        finally:
            inside.clear()

    tr.policy.velocity, tr.algo.rollout = counted, hooked
    return calls


def test_mixgrpo_flash_finishes_the_tail_with_fewer_second_order_steps(tmp_path):
    tr = Trainer(
        digits_cfg(
            tmp_path,
            "algorithm=mixgrpo_flash",
            "sample.num_steps=10",
            "algorithm.window=2",
            "algorithm.every=1",
            "train.optimizer_steps=1",
        )
    )
    calls = _count_rollout_calls(tr)
    m = tr.train_iteration(3)  # window at steps 3-4; tail: 5 steps compressed to ceil(0.4 x 5) = 2
    P, G = 2, 4
    assert calls == [P] * 3 + [P * G] * 2 + [P * G] * 2
    assert m["train/trained_steps"] == 2.0 and m["train/ratio_min"] == m["train/ratio_max"] == 1.0
    # the compressed tail still gives digits the classifier reads
    assert m["train/reward_mean"] > 0.05


def test_dense_grpo_credits_each_step_with_its_reward_gain(tmp_path):
    import torch

    tr = Trainer(
        digits_cfg(
            tmp_path, "algorithm=dense_grpo", "sample.num_steps=6", "train.optimizer_steps=1"
        )
    )
    seen = {}
    real_items = tr.algo.training_items
    tr.algo.training_items = lambda traj, adv, **kw: seen.setdefault(
        "items", (traj, kw, real_items(traj, adv, **kw))
    )[2]
    m = tr.train_iteration(0)
    traj, kw, items = seen["items"]
    P, G, K = 2, 4, 3  # floor(0.6 x 6) trained steps
    assert traj.steps.tolist() == [0, 1, 2] and m["train/trained_steps"] == 3.0
    # peeks at steps 0, 1, 2, 3, scored by the trainer like the final samples
    assert traj.peeks.shape[:2] == (P * G, K + 1) and kw["peek_rewards"].shape == (P * G, K + 1)
    assert torch.isfinite(kw["peek_rewards"]).all()
    values = kw["peek_rewards"]  # V_0 .. V_3: step i's gain is V_(i+1) - V_i
    gains = values[:, 1:] - values[:, :-1]
    adv = items.advantage.view(P * G, K)
    for j in range(K):  # z-scored per step within each group
        for g in range(P):
            a, d = adv[g * G : (g + 1) * G, j], gains[g * G : (g + 1) * G, j]
            if d.std() > 1e-6:
                assert abs(float(a.mean())) < 1e-4 and torch.equal(a.argsort(), d.argsort())
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0
