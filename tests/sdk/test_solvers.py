"""DPM-Solver++(2M) in the flow parametrisation, on the analytic Gaussian policy."""

import pytest
import torch

from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.solvers import compress, dpm_solver_2m
from tests.sdk.toys import GaussianPolicy


def euler(policy, x, cond, sigmas):
    for i in range(len(sigmas) - 1):
        x = KERNELS["ode"](x, policy.velocity(x, sigmas[i], cond), sigmas, i).x_next
    return x


def test_exact_when_the_data_is_a_point():
    # s0 = 0: the clean-sample prediction x - s v is the point itself at every s
    policy = GaussianPolicy(dim=4, s0=0.0)
    cond = policy.encode(["1.5", "-2"])
    x = torch.randn(2, 4, generator=torch.Generator().manual_seed(0))
    out = dpm_solver_2m(policy, x, cond, torch.tensor([1.0, 0.7, 0.3, 0.0]), 1.0)
    torch.testing.assert_close(out, cond.mu)


def test_second_order_beats_euler_at_the_same_cost():
    policy = GaussianPolicy(dim=8, s0=0.5)
    cond = policy.encode(["1"] * 16)
    x = torch.randn(16, 8, generator=torch.Generator().manual_seed(1)) * 0.9
    start = torch.linspace(0.9, 0, 1001)  # from an intermediate state, as MixGRPO-Flash's tail does
    truth = euler(policy, x, cond, start)
    coarse = compress(start, 6 / 1000)
    assert len(coarse) == 7 and coarse[0] == 0.9 and coarse[-1] == 0
    err_dpm = (dpm_solver_2m(policy, x, cond, coarse, 1.0) - truth).abs().max()
    err_euler = (euler(policy, x, cond, coarse) - truth).abs().max()
    assert err_dpm < 0.25 * err_euler, (err_dpm, err_euler)
    assert len(policy.calls) == 1000 + 6 + 6  # one velocity evaluation per step


def test_schedule_is_checked():
    policy = GaussianPolicy()
    with pytest.raises(ValueError, match="decrease"):
        dpm_solver_2m(
            policy, torch.zeros(1, 8), policy.encode(["0"]), torch.tensor([0.5, 0.5, 0.0]), 1.0
        )
    with pytest.raises(ValueError, match="ratio"):
        compress(torch.linspace(1, 0, 5), 0.0)
