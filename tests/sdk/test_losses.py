import torch

from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.losses import clipped_policy_loss, kl_to_reference


def test_ratio_is_one_and_gradient_is_advantage_weighted_log_prob_on_policy():
    lp = torch.randn(6, requires_grad=True)
    adv = torch.randn(6)
    out = clipped_policy_loss(lp, lp.detach(), adv, clip_range=1e-4)
    assert torch.equal(out.ratio, torch.ones(6))
    assert not out.clipped.any()
    out.loss.backward()
    torch.testing.assert_close(lp.grad, -adv / 6)


def test_clipping_zeroes_the_gradient_outside_the_trust_region():
    old = torch.zeros(4)
    lp = torch.tensor([0.1, -0.1, 0.1, -0.1], requires_grad=True)
    adv = torch.tensor([1.0, 1.0, -1.0, -1.0])
    out = clipped_policy_loss(lp, old, adv, clip_range=0.01)
    out.loss.backward()
    # A > 0 and ratio above 1 + eps: clipped; A > 0 and ratio below: unclipped (pessimistic bound)
    assert out.clipped.tolist() == [True, False, False, True]
    assert lp.grad[0] == 0 and lp.grad[3] == 0
    assert lp.grad[1] != 0 and lp.grad[2] != 0
    expected = torch.maximum(
        -adv * torch.exp(lp.detach()), -adv * torch.exp(lp.detach()).clamp(0.99, 1.01)
    ).mean()
    torch.testing.assert_close(out.loss.detach(), expected)


def test_kl_is_zero_when_policy_equals_reference():
    mean = torch.randn(3, 2, 4, 4)
    kl = kl_to_reference(
        mean, mean.clone(), std=torch.full((3,), 0.1), diffusion=torch.full((3,), 0.5)
    )
    assert torch.equal(kl, torch.zeros(3))


def test_kl_conventions_relate_by_dt_for_flow_sde():
    sig = torch.linspace(1, 0, 11)
    x, v1, v2 = torch.randn(2, 16), torch.randn(2, 16), torch.randn(2, 16)
    k = KERNELS["flow_sde"]
    a = k(x, v1, sig, 3, noise_level=0.7, x_next=x)
    b = k(x, v2, sig, 3, noise_level=0.7, x_next=x)
    g = k.diffusion(sig, 3, x, 0.7)
    ref = kl_to_reference(a.mean, b.mean, std=a.std, diffusion=g, convention="reference")
    exact = kl_to_reference(a.mean, b.mean, std=a.std, diffusion=g, convention="exact")
    torch.testing.assert_close(ref, exact * 0.1)  # |dt| = 0.1
    # exact = the closed-form KL of two Gaussians with equal std, per element, averaged
    p = torch.distributions.Normal(a.mean, a.std.expand_as(a.mean))
    q = torch.distributions.Normal(b.mean, a.std.expand_as(b.mean))
    torch.testing.assert_close(exact, torch.distributions.kl_divergence(p, q).mean(1))
