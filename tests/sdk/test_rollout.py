import pytest
import torch

from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.plans import AllSDE, SDEWindow, StepPlan
from alignflow.sdk.random import generator
from alignflow.sdk.rollout import rollout, sample

from .toys import GaussianPolicy


def gens(tag, n):
    return [generator(tag, i) for i in range(n)]


@pytest.mark.parametrize("kernel,a", [("flow_sde", 0.7), ("dance_sde", 0.5)])
def test_sde_with_exact_velocity_keeps_the_data_distribution(kernel, a):
    # The flow SDEs are discretisations of a marginal-preserving SDE: with the exact
    # velocity of N(mu, s0^2) data they sample N(mu, s0^2).
    pol = GaussianPolicy(dim=64, s0=0.5)
    cond = pol.encode([2.0])
    N, G = 100, 300
    traj = rollout(
        pol,
        cond,
        pol.sigmas(N),
        StepPlan((True,) * N, (False,) * N),
        KERNELS[kernel],
        noise_level=a,
        guidance=1.0,
        group_size=G,
        noise_generators=gens("n", G),
        sde_generators=gens("s", G),
    )
    x = traj.x0
    assert abs(x.mean().item() - 2.0) < 0.03
    assert abs(x.std().item() - 0.5) / 0.5 < 0.05


def test_cps_preserves_the_noise_coefficient_given_the_true_x0_and_eps():
    # CPS is not an SDE discretisation (its noise does not vanish with dt); its
    # invariant is that x' = (1 - s') x0 + s' * (unit noise) when v = eps - x0 exactly.
    x0, eps = torch.randn(20000, 4), torch.randn(20000, 4)
    sig = torch.linspace(1, 0, 11)
    for i in (0, 4, 8):
        s, s1 = sig[i], sig[i + 1]
        x = (1 - s) * x0 + s * eps
        out = KERNELS["cps"](x, eps - x0, sig, i, noise_level=0.8, generator=generator("cps", i))
        noise = (out.x_next - (1 - s1) * x0) / s1
        assert abs(noise.std().item() - 1) < 0.02 and abs(noise.mean().item()) < 0.02


def test_ode_sample_reaches_the_data_distribution():
    pol = GaussianPolicy(dim=64, s0=0.5)
    x = sample(pol, pol.encode([-1.0] * 200), 50, guidance=1.0, noise_generators=gens("n", 200))
    assert abs(x.mean().item() + 1.0) < 0.02 and abs(x.std().item() - 0.5) < 0.02


def test_trajectory_layout_and_recorded_log_probs():
    pol = GaussianPolicy()
    cond = pol.encode([0.0, 1.0, 2.0])
    sig = pol.sigmas(6)
    traj = rollout(
        pol,
        cond,
        sig,
        AllSDE()(6, 0, 0),
        KERNELS["flow_sde"],
        noise_level=0.7,
        guidance=1.0,
        group_size=4,
        noise_generators=gens("n", 12),
        sde_generators=gens("s", 12),
    )
    assert traj.group.tolist() == [0] * 4 + [1] * 4 + [2] * 4
    assert traj.steps.tolist() == [0, 1, 2, 3, 4]
    assert traj.x.shape == (12, 5, 8) and traj.log_prob.shape == (12, 5)
    # each recorded transition's log-prob equals the kernel's density of it under the same policy
    c = pol.encode([0.0] * 4 + [1.0] * 4 + [2.0] * 4)
    for k, i in enumerate(traj.steps.tolist()):
        v = pol.velocity(traj.x[:, k], sig[i], c)
        again = KERNELS["flow_sde"](
            traj.x[:, k], v, sig, i, noise_level=0.7, x_next=traj.x_next[:, k]
        )
        torch.testing.assert_close(again.log_prob, traj.log_prob[:, k])
        if k + 1 < len(traj.steps):
            assert torch.equal(traj.x_next[:, k], traj.x[:, k + 1])


def test_a_sample_does_not_depend_on_its_batch():
    pol = GaussianPolicy()
    plan = AllSDE()(5, 0, 0)
    kw = dict(noise_level=0.7, guidance=1.0, group_size=2)
    both = rollout(
        pol,
        pol.encode([0.0, 1.0]),
        pol.sigmas(5),
        plan,
        KERNELS["flow_sde"],
        **kw,
        noise_generators=gens("n", 4),
        sde_generators=gens("s", 4),
    )
    alone = rollout(
        pol,
        pol.encode([1.0]),
        pol.sigmas(5),
        plan,
        KERNELS["flow_sde"],
        **kw,
        noise_generators=gens("n", 4)[2:],
        sde_generators=gens("s", 4)[2:],
    )
    torch.testing.assert_close(both.x0[2:], alone.x0)


def test_group_members_get_distinct_noise_unless_shared():
    pol = GaussianPolicy()
    kw = dict(noise_level=0.7, guidance=1.0, group_size=3)
    plan = AllSDE()(4, 0, 0)
    t = rollout(
        pol,
        pol.encode([0.0]),
        pol.sigmas(4),
        plan,
        KERNELS["flow_sde"],
        **kw,
        noise_generators=gens("n", 3),
        sde_generators=gens("s", 3),
    )
    assert len({tuple(x.tolist()) for x in t.x[:, 0]}) == 3
    t = rollout(
        pol,
        pol.encode([0.0]),
        pol.sigmas(4),
        plan,
        KERNELS["flow_sde"],
        **kw,
        share_noise=True,
        noise_generators=gens("n", 1),
        sde_generators=gens("s", 3),
    )
    assert len({tuple(x.tolist()) for x in t.x[:, 0]}) == 1
    assert len({tuple(x.tolist()) for x in t.x0}) == 3


def test_shared_prefix_runs_once_per_prompt_then_branches():
    pol = GaussianPolicy()
    plan = SDEWindow(window=2)(10, 7, 0)
    k = plan.shared_prefix
    pol.calls.clear()
    t = rollout(
        pol,
        pol.encode([0.0, 1.0]),
        pol.sigmas(10),
        plan,
        KERNELS["flow_sde"],
        noise_level=0.7,
        guidance=1.0,
        group_size=4,
        noise_generators=gens("n", 2),
        sde_generators=gens("s", 8),
    )
    assert pol.calls == [2] * k + [8] * (10 - k)
    assert t.steps.tolist() == [k, k + 1]
    first = t.x[:, 0]  # the window's start: identical within a group
    assert torch.equal(first[0], first[3]) and not torch.equal(first[0], first[4])
    assert not torch.equal(t.x_next[0, 0], t.x_next[1, 0])


def test_wrong_generator_counts_are_rejected():
    pol = GaussianPolicy()
    with pytest.raises(ValueError, match="noise generators"):
        rollout(
            pol,
            pol.encode([0.0]),
            pol.sigmas(4),
            AllSDE()(4, 0, 0),
            KERNELS["flow_sde"],
            noise_level=0.7,
            guidance=1.0,
            group_size=2,
            noise_generators=gens("n", 1),
            sde_generators=gens("s", 2),
        )
