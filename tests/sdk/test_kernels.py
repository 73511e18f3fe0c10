"""The kernels against MATH.md, written out again here in float64."""

import math

import pytest
import torch

from alignflow.sdk.kernels import CPS, KERNELS, FlowSDE
from alignflow.sdk.random import generator


def shifted_sigmas(n: int, shift: float = 3.0) -> torch.Tensor:
    s = torch.linspace(1, 0, n + 1, dtype=torch.float64)
    return shift * s / (1 + (shift - 1) * s)


def ref_flow_sde(x, v, sig, i, a):
    s, s1 = sig[i].item(), sig[i + 1].item()
    s_t = sig[1].item() if s == 1 else s
    g = a * math.sqrt(s / (1 - s_t))
    dt = s1 - s
    mean = x + (v + g**2 / (2 * s) * (x + (1 - s) * v)) * dt
    return mean, g * math.sqrt(-dt), g


def ref_dance(x, v, sig, i, eta):
    s, s1 = sig[i].item(), sig[i + 1].item()
    dt = s1 - s
    mean = x + (v + eta**2 / (2 * s) * (x + (1 - s) * v)) * dt
    return mean, eta * math.sqrt(-dt)


def ref_cps(x, v, sig, i, a):
    s, s1 = sig[i].item(), sig[i + 1].item()
    g = s1 * math.sin(a * math.pi / 2)
    x0, x1 = x - s * v, x + (1 - s) * v
    return (1 - s1) * x0 + math.sqrt(s1**2 - g**2) * x1, g


def gauss_lp(xp, mean, std):
    return (
        (-((xp - mean) ** 2) / (2 * std**2) - math.log(std) - 0.5 * math.log(2 * math.pi))
        .flatten(1)
        .mean(1)
    )


@pytest.fixture
def xv():
    x = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    v = torch.randn(4, 3, 5, 6, dtype=torch.float64)
    return x, v


def assert_rel(actual, expected, rtol=1e-5):
    torch.testing.assert_close(
        actual.double(), expected.double().expand_as(actual), rtol=rtol, atol=1e-6
    )


def test_registry_has_the_four_kernels():
    assert set(KERNELS) == {"ode", "flow_sde", "dance_sde", "cps"}


@pytest.mark.parametrize("i", [0, 1, 4, 8])
def test_flow_sde_matches_math(xv, i):
    x, v = xv
    sig = shifted_sigmas(10)
    out = KERNELS["flow_sde"](
        x.float(), v.float(), sig.float(), i, noise_level=0.7, generator=generator(1)
    )
    mean, std, _ = ref_flow_sde(x, v, sig, i, 0.7)
    assert_rel(out.mean, mean)
    assert_rel(out.std.flatten(), torch.tensor(std))
    assert_rel(out.log_prob, gauss_lp(out.x_next.double(), mean, std))


def test_flow_sde_first_step_uses_second_sigma():
    sig = shifted_sigmas(10).float()
    x = torch.zeros(1, 2)
    g = FlowSDE().diffusion(sig, 0, x, 0.7)
    assert torch.isfinite(g).all()
    torch.testing.assert_close(
        g.flatten(), torch.tensor([0.7 * math.sqrt(1 / (1 - sig[1].item()))])
    )


@pytest.mark.parametrize("i", [0, 3, 9])
def test_dance_sde_matches_math(xv, i):
    x, v = xv
    sig = shifted_sigmas(10)
    out = KERNELS["dance_sde"](
        x.float(), v.float(), sig.float(), i, noise_level=0.3, generator=generator(2)
    )
    mean, std = ref_dance(x, v, sig, i, 0.3)
    assert_rel(out.mean, mean)
    assert_rel(out.log_prob, gauss_lp(out.x_next.double(), mean, std))


@pytest.mark.parametrize("i", [0, 5, 8])
def test_cps_matches_math_with_reference_log_prob(xv, i):
    x, v = xv
    sig = shifted_sigmas(10)
    out = KERNELS["cps"](
        x.float(), v.float(), sig.float(), i, noise_level=0.8, generator=generator(3)
    )
    mean, g = ref_cps(x, v, sig, i, 0.8)
    assert_rel(out.mean, mean)
    assert_rel(out.std.flatten(), torch.tensor(g))
    assert_rel(out.log_prob, -((out.x_next.double() - mean) ** 2).flatten(1).mean(1))
    norm = CPS(normalized=True)(
        x.float(), v.float(), sig.float(), i, noise_level=0.8, x_next=out.x_next
    )
    assert_rel(norm.log_prob, gauss_lp(out.x_next.double(), mean, g))


@pytest.mark.parametrize("name", ["flow_sde", "dance_sde", "cps"])
def test_noise_level_zero_is_euler(xv, name):
    x, v = xv
    sig = shifted_sigmas(10).float()
    for i in range(9):  # cps with a = 0 is Euler too: sqrt(s'^2) x1_hat + (1 - s') x0_hat
        out = KERNELS[name](x.float(), v.float(), sig, i, noise_level=0.0, generator=generator(4))
        euler = KERNELS["ode"](x.float(), v.float(), sig, i)
        torch.testing.assert_close(out.x_next, euler.x_next, rtol=1e-6, atol=1e-6)
        expected = x + v * (sig[i + 1] - sig[i]).double()
        assert_rel(euler.x_next, expected)


@pytest.mark.parametrize("name", ["flow_sde", "dance_sde"])
def test_log_prob_is_the_gaussian_density(name):
    x, v = torch.randn(3, 16), torch.randn(3, 16)
    sig = shifted_sigmas(8).float()
    out = KERNELS[name](x, v, sig, 2, noise_level=0.5, generator=generator(5))
    dist = torch.distributions.Normal(out.mean, out.std.expand_as(out.mean))
    torch.testing.assert_close(out.log_prob, dist.log_prob(out.x_next).mean(1))


def test_samples_follow_mean_and_std():
    x, v = torch.randn(1, 4).expand(20000, 4), torch.randn(1, 4).expand(20000, 4)
    sig = shifted_sigmas(10).float()
    out = KERNELS["flow_sde"](x, v, sig, 3, noise_level=0.7, generator=generator(6))
    resid = (out.x_next - out.mean) / out.std
    assert abs(resid.mean().item()) < 0.02
    assert abs(resid.std().item() - 1) < 0.02


def test_per_sample_step_index_equals_per_step_calls(xv):
    x, v = (t.float() for t in xv)
    sig = shifted_sigmas(10).float()
    steps = torch.tensor([0, 3, 3, 7])
    kern = KERNELS["flow_sde"]
    mixed = kern(x, v, sig, steps, noise_level=0.7, generator=generator(7))
    for b, i in enumerate(steps.tolist()):
        single = kern(
            x[b : b + 1],
            v[b : b + 1],
            sig,
            i,
            noise_level=0.7,
            x_next=mixed.x_next[b : b + 1],
        )
        torch.testing.assert_close(single.mean, mixed.mean[b : b + 1])
        torch.testing.assert_close(single.log_prob, mixed.log_prob[b : b + 1])


def test_prev_sample_draws_nothing_and_grad_flows_through_mean_only():
    x = torch.randn(2, 8)
    v = torch.randn(2, 8, requires_grad=True)
    target = torch.randn(2, 8, requires_grad=True)
    sig = shifted_sigmas(10).float()
    g = generator(8)
    state = g.get_state()
    out = KERNELS["flow_sde"](x, v, sig, 2, noise_level=0.7, x_next=target, generator=g)
    assert torch.equal(g.get_state(), state)
    assert out.x_next is target
    out.log_prob.sum().backward()
    assert v.grad is not None and v.grad.abs().sum() > 0
    assert target.grad is None


def test_low_precision_input_is_computed_in_float32():
    x, v = torch.randn(2, 8), torch.randn(2, 8)
    sig = shifted_sigmas(10).float()
    out16 = KERNELS["flow_sde"](
        x.bfloat16(), v.bfloat16(), sig, 2, noise_level=0.7, generator=generator(9)
    )
    assert out16.x_next.dtype == torch.bfloat16
    assert out16.mean.dtype == out16.log_prob.dtype == torch.float32
    ref = KERNELS["flow_sde"](
        x.bfloat16().float(),
        v.bfloat16().float(),
        sig,
        2,
        noise_level=0.7,
        x_next=out16.x_next.float(),
    )
    torch.testing.assert_close(out16.log_prob, ref.log_prob)


def test_per_sample_generators_make_noise_independent_of_batch():
    x, v = torch.randn(3, 8), torch.randn(3, 8)
    sig = shifted_sigmas(10).float()
    gens = [generator("s", b) for b in range(3)]
    full = KERNELS["flow_sde"](x, v, sig, 1, noise_level=0.7, generator=gens)
    alone = KERNELS["flow_sde"](
        x[2:], v[2:], sig, 1, noise_level=0.7, generator=[generator("s", 2)]
    )
    torch.testing.assert_close(full.x_next[2:], alone.x_next)


def test_shape_errors_name_what_was_expected():
    sig = shifted_sigmas(4).float()
    with pytest.raises(ValueError, match="v has"):
        KERNELS["ode"](torch.zeros(2, 3), torch.zeros(2, 4), sig, 0)
    with pytest.raises(ValueError, match="LongTensor"):
        KERNELS["flow_sde"](
            torch.zeros(2, 3), torch.zeros(2, 3), sig, torch.tensor([0, 1, 2]), noise_level=0.5
        )
