"""Every recipe through its declared calls alone, on the analytic toy policy:
rollout -> training items -> loss -> end of iteration, state round trip. No Trainer is
built and nothing is patched: this is exactly the sequence the trainer's phases run."""

import contextlib
import re
from pathlib import Path

import pytest
import torch

from alignflow.sdk.algorithms.base import Algorithm, StepContext
from alignflow.sdk.batching import batch_size, repeat_interleave, select
from alignflow.sdk.components import names, resolve
from tests.sdk.toys import GaussianPolicy

P, G, N = 2, 4, 6
SLOTS = [5, 9]  # global prompt slots, as the trainer passes them
# options that fit 2 prompts x 4 samples over 6 steps (the defaults are the papers')
FIT = {
    "branch_grpo": {"branch_steps": [0, 2], "widths": [2, 2]},
    "tree_grpo": {"branch_steps": [0, 2], "widths": [2, 2]},
    "mixgrpo": {"window": 2},
    "mixgrpo_flash": {"window": 2},
}
RECIPES = names("algorithm")


def build(name: str, **options):
    cls = resolve("algorithm", name, "algorithm.name")
    policy = GaussianPolicy()
    algo = cls(cls.config_from({**FIT.get(name, {}), **options}), list(policy.net.parameters()))
    algo.check(N, G)
    return algo, policy


def one_iteration(
    algo, policy, seed: int = 0, iteration: int = 0, slots=tuple(SLOTS), reference=None
):
    """The trainer's phases on the toy (prompt "k" for slot k): reward = closeness of the
    sample to 1."""
    cond = policy.encode([str(s % 2) for s in slots])
    out = algo.rollout(
        policy,
        cond,
        policy.sigmas(N),
        guidance=1.0,
        group_size=G,
        seed=seed,
        iteration=iteration,
        slots=list(slots),
    )
    out.group = torch.tensor(slots).repeat_interleave(G)
    rewards = -(out.x0 - 1).pow(2).mean(-1)
    peek_rewards = None if out.peeks is None else -(out.peeks - 1).pow(2).mean(-1)
    adv = algo.advantages(rewards, out.group)
    items = algo.training_items(
        out,
        adv.advantages,
        rewards=rewards,
        peek_rewards=peek_rewards,
        seed=seed,
        iteration=iteration,
    )
    ctx = StepContext(
        guidance=1.0,
        on_policy=True,
        reference=reference or contextlib.nullcontext,
        iteration=iteration,
    )
    loss = algo.loss(policy, items, select(repeat_interleave(cond, G), items.sample), ctx)
    return out, items, loss


@pytest.mark.parametrize("name", RECIPES)
def test_a_recipe_runs_through_its_declared_calls_alone(name):
    algo, policy = build(name)
    out, items, loss = one_iteration(algo, policy)
    B = P * G
    assert out.x0.shape == (B, policy.dim) and out.group.tolist() == [5] * G + [9] * G
    E = batch_size(items)
    assert E > 0 and items.sample.shape == items.step.shape == (E,)
    assert 0 <= int(items.sample.min()) and int(items.sample.max()) < B
    assert 0 <= int(items.step.min()) and int(items.step.max()) < N
    assert loss.loss.ndim == 0 and torch.isfinite(loss.loss)
    assert all(v.shape == (E,) for v in loss.stats.values()), {
        k: v.shape for k, v in loss.stats.items()
    }
    loss.loss.backward()
    assert (
        policy.net.shift.weight.grad is not None
        and torch.isfinite(policy.net.shift.weight.grad).all()
    )
    if "ratio" in loss.stats:  # on-policy: the first ratio is exactly 1
        assert torch.equal(loss.stats["ratio"], torch.ones(E))
    if "kl_ref" in loss.stats:  # the reference is the policy itself here
        assert loss.stats["kl_ref"].abs().max() == 0
    assert isinstance(algo.end_iteration(1), dict)


@pytest.mark.parametrize("name", RECIPES)
def test_without_a_kl_term_the_reference_is_never_evaluated(name):
    """needs_reference(config) is what the trainer builds the reference from (full
    fine-tuning keeps no frozen copy without it): the loss must agree with it."""

    def no_reference():
        raise AssertionError(f"{name} evaluated the reference with kl_beta = 0")

    algo, policy = build(name, kl_beta=0.0)
    assert not type(algo).needs_reference(algo.cfg)
    one_iteration(algo, policy, reference=no_reference)
    assert type(algo).needs_reference(build(name, kl_beta=0.1)[0].cfg)


@pytest.mark.parametrize("name", RECIPES)
def test_same_seed_same_rollout_and_items_another_iteration_differs(name):
    algo, policy = build(name)
    a, items_a, _ = one_iteration(algo, policy, seed=3, iteration=2)
    b, items_b, _ = one_iteration(algo, policy, seed=3, iteration=2)
    c, _, _ = one_iteration(algo, policy, seed=3, iteration=4)
    assert torch.equal(a.x0, b.x0) and torch.equal(items_a.sample, items_b.sample)
    assert torch.equal(items_a.step, items_b.step)
    assert not torch.equal(a.x0, c.x0)


@pytest.mark.parametrize("name", RECIPES)
def test_a_sample_and_its_items_are_the_same_wherever_it_is_rolled_out(name):
    """Draws are keyed by (seed, iteration, slot, member): slot 9 rolled out alone (as on
    another process, or in another batch) gives the same samples and trained steps."""
    algo, policy = build(name)
    both, items, _ = one_iteration(algo, policy, seed=1, iteration=3, slots=(5, 9))
    alone, items_alone, _ = one_iteration(algo, policy, seed=1, iteration=3, slots=(9,))
    torch.testing.assert_close(both.x0[G:], alone.x0, rtol=0, atol=1e-6)
    for b in range(G):
        steps_both = sorted(items.step[items.sample == G + b].tolist())
        assert steps_both == sorted(items_alone.step[items_alone.sample == b].tolist()), (name, b)


@pytest.mark.parametrize("name", RECIPES)
def test_state_round_trip(name):
    algo, policy = build(name)
    one_iteration(algo, policy)
    with torch.no_grad():
        policy.net.shift.weight.add_(0.1)  # an optimizer step
    algo.end_iteration(2)
    state = algo.state_dict()
    again, policy2 = build(name)
    again.load_state_dict(state)
    restored = again.state_dict()
    assert restored.keys() == state.keys() and all(
        torch.equal(restored[k], state[k]) for k in state
    )


def test_recipes_keep_what_their_papers_say():
    # Flow-GRPO: every step SDE, the first floor(0.99 N) trained, independent initial noise
    out, items, _ = one_iteration(*build("flow_grpo"))
    assert out.steps.tolist() == [0, 1, 2, 3, 4] and not torch.equal(out.x[0, 0], out.x[1, 0])
    # DanceGRPO: a group shares its initial noise; each sample trains floor(0.6 K) of its K steps
    out, items, _ = one_iteration(*build("dance_grpo"))
    assert torch.equal(out.x[0, 0], out.x[G - 1, 0]) and not torch.equal(out.x[0, 0], out.x[G, 0])
    assert items.sample.bincount().tolist() == [3] * (P * G)
    # MixGRPO: only the window is SDE and trained
    out, _, _ = one_iteration(*build("mixgrpo"))
    assert out.steps.tolist() == [0, 1]
    # DiffusionNFT: ODE rollouts, floor(0.99 N) timesteps per sample, r in [0, 1]
    out, items, _ = one_iteration(*build("diffusion_nft"))
    assert out.log_prob.shape == (P * G, 0) and items.sample.bincount().tolist() == [5] * (P * G)
    assert ((items.r >= 0) & (items.r <= 1)).all()
    # DenseGRPO: a peek before and after each of the floor(0.6 N) trained steps
    out, items, _ = one_iteration(*build("dense_grpo"))
    assert out.steps.tolist() == [0, 1, 2] and out.peeks.shape == (P * G, 4, 8)
    # BranchGRPO: a 2 x 2 tree per prompt, two edges kept per tree and depth
    out, items, _ = one_iteration(*build("branch_grpo"))
    assert batch_size(items) == P * 2 * 2 and set(items.step.tolist()) == {0, 2}


def test_diffusion_nft_old_policy_lags_the_trained_weights():
    algo, policy = build("diffusion_nft", old_decay_rate=0.25)
    start = policy.net.shift.weight.detach().clone()
    with torch.no_grad():
        policy.net.shift.weight.add_(1.0)
    assert algo.end_iteration(2) == {"train/old_decay": 0.5}  # 2 optimizer steps x 0.25
    torch.testing.assert_close(algo.old.shadow[0], start + 0.5)  # half way


def test_recipes_subclass_the_protocol_once_and_the_trainer_probes_nothing():
    for name in RECIPES:
        cls = resolve("algorithm", name, "algorithm.name")
        assert cls.__bases__ == (Algorithm,), f"{name}: {cls.__mro__}"  # shared code is functions
    sdk = Path(__file__).parents[2] / "sdk"
    probes = [
        f"{p.name}: {line.strip()}"
        for p in sdk.rglob("*.py")
        for line in p.read_text().splitlines()
        if re.search(r"(hasattr|getattr)\((self\.)?(algo|algorithm)\b", line)
    ]
    assert not probes


# options that fit the fast digits run (4 samples a prompt, 4 steps)
ON_DIGITS = {
    "branch_grpo": ["algorithm.branch_steps=[0,2]", "algorithm.widths=[2,2]"],
    "tree_grpo": ["algorithm.branch_steps=[0,2]", "algorithm.widths=[2,2]"],
    "mixgrpo": ["algorithm.window=2", "algorithm.every=1"],
    "mixgrpo_flash": ["algorithm.window=2", "algorithm.every=1"],
    "flow_grpo_fast": ["algorithm.window=1"],
}


@pytest.mark.parametrize("name", RECIPES)
def test_each_recipe_trains_and_resumes_exactly(name, tmp_path):
    """The Trainer smoke test of each recipe: two iterations straight, and one, a
    checkpoint, a new process's worth of state and the second; the metrics and weights
    are the same (the algorithm's own state goes through the checkpoint)."""
    from alignflow.sdk.tracking import read_metrics
    from alignflow.sdk.trainer import Trainer
    from tests.helpers import digits_cfg, strip_times

    options = [
        f"algorithm={name}",
        "train.lr=1e-2",
        "checkpoint.every=1",
        "data.eval=",
        *ON_DIGITS.get(name, []),
    ]
    straight = Trainer(digits_cfg(tmp_path / "straight", *options))
    straight.train()
    Trainer(digits_cfg(tmp_path / "split", *options, "train.iterations=1")).train()
    resumed = Trainer(digits_cfg(tmp_path / "split", *options, "checkpoint.resume=latest"))
    assert resumed.iteration == 1
    resumed.train()
    assert strip_times(read_metrics(tmp_path / "split")) == strip_times(
        read_metrics(tmp_path / "straight")
    )
    for a, b in zip(straight.params, resumed.params):
        assert torch.equal(a, b)
