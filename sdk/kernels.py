"""Step kernels: one transition x_s -> x_s' of a flow-matching sampler.

Every kernel has the same signature (k-diffusion style)::

    step(x, v, sigmas, i, *, noise_level, x_next=None, generator=None) -> StepOutput

- ``x``: [B, ...] the sample at sigma ``s = sigmas[i]`` (any dtype, any number of dims).
- ``v``: [B, ...] the velocity predicted at (x, s), convention v = eps - x0.
- ``sigmas``: [N+1] the whole schedule, ``sigmas[0] = 1 > ... > sigmas[N] = 0``.
- ``i``: the step index (int), or a LongTensor [B] of per-sample step indices so that
  one batch may mix steps (the trainer evaluates shuffled transitions this way).
- ``noise_level``: the kernel's noise parameter ``a`` (ignored by ``ode``).
- ``x_next``: when given, the kernel draws nothing and evaluates ``log_prob`` of
  this sample (training); otherwise it draws x' with ``generator`` (rollout).

Conventions (see docs/math.md and the papers cited per kernel):
- all arithmetic is float32 whatever the input dtype; ``x_next`` keeps x's dtype;
- ``log_prob`` [B] is a *mean* over the D elements of a sample, not a sum: the
  reference implementations do this and their clip ranges (~1e-4) assume it;
- ``log_prob`` is evaluated at ``x_next.detach()``: gradients reach the
  parameters through ``mean`` only;
- ``std`` [B, 1, ..., 1] is the standard deviation of the noise actually added.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Protocol

import torch

from alignflow.sdk.random import Generators, randn

_LOG_SQRT_2PI = 0.5 * math.log(2 * math.pi)


@dataclass
class StepOutput:
    """Result of one kernel step.

    Attributes:
        x_next: [B, ...] x at ``sigmas[i + 1]``, in the dtype of ``x``.
        log_prob: [B] float32 log-density of ``x_next`` under the step's Gaussian
            (per-element mean); ``None`` for the deterministic ``ode`` kernel.
        mean: [B, ...] float32 mean of the step's Gaussian.
        std: [B, 1, ..., 1] float32 std of the noise added (0 for ``ode``).
    """

    x_next: torch.Tensor
    log_prob: torch.Tensor | None
    mean: torch.Tensor
    std: torch.Tensor


def _sigma(
    sigmas: torch.Tensor, i: int | torch.Tensor, x: torch.Tensor, offset: int = 0
) -> torch.Tensor:
    """sigmas[i + offset] as float32 [B, 1, ..., 1] broadcastable against x."""
    sigmas = sigmas.to(device=x.device, dtype=torch.float32)
    index = torch.as_tensor(i, device=x.device, dtype=torch.long) + offset
    s = sigmas[index].expand(x.shape[0]) if index.ndim == 0 else sigmas[index]
    if s.shape != (x.shape[0],):
        raise ValueError(
            f"step index: expected an int or a LongTensor [{x.shape[0]}], got shape "
            f"{tuple(index.shape)}"
        )
    return s.view(-1, *([1] * (x.ndim - 1)))


def _check(x: torch.Tensor, v: torch.Tensor, sigmas: torch.Tensor) -> None:
    if x.shape != v.shape:
        raise ValueError(
            f"step: x has shape {tuple(x.shape)} but v has {tuple(v.shape)}; they must match"
        )
    if sigmas.ndim != 1 or sigmas.numel() < 2:
        raise ValueError(
            f"step: sigmas must be a 1-D schedule [N+1], got shape {tuple(sigmas.shape)}"
        )


def gaussian_log_prob(sample: torch.Tensor, mean: torch.Tensor, std: torch.Tensor) -> torch.Tensor:
    """mean over D of log N(sample; mean, std^2): [B]. ``sample`` is detached."""
    sample = sample.detach().to(torch.float32)
    lp = -((sample - mean) ** 2) / (2 * std**2) - torch.log(std) - _LOG_SQRT_2PI
    return lp.flatten(1).mean(1)


def _sample(mean, std, x, x_next, generator) -> torch.Tensor:
    if x_next is not None:
        if x_next.shape != x.shape:
            raise ValueError(
                f"step: x_next has shape {tuple(x_next.shape)}, expected {tuple(x.shape)}"
            )
        return x_next
    eps = randn(x.shape, generator, device=x.device)
    return (mean + std * eps).to(x.dtype)


def _flow_sde_step(x, v, sigmas, i, g, x_next, generator) -> StepOutput:
    """Euler-Maruyama step of the flow SDE with noise scale g [B, 1, ..., 1]:
    mean = x + [v + g^2 / (2 s) * (x + (1 - s) v)] dt,  std = g * sqrt(-dt).
    With the score of x_s equal to -(x + (1 - s) v) / s, the drift is v - g^2 / 2 * score."""
    _check(x, v, sigmas)
    s, s_next = _sigma(sigmas, i, x), _sigma(sigmas, i, x, 1)
    dt = s_next - s
    x32, v32 = x.float(), v.float()
    mean = x32 + (v32 + g**2 / (2 * s) * (x32 + (1 - s) * v32)) * dt
    std = g * torch.sqrt(-dt)
    out = _sample(mean, std, x, x_next, generator)
    return StepOutput(out, gaussian_log_prob(out, mean, std), mean, std)


class Kernel(Protocol):
    """What a kernel provides: the step (``__call__``, signature above) and
    ``diffusion``, the SDE's noise scale g [B, 1, ..., 1] at step i, which the
    reference KL convention divides by (:func:`alignflow.sdk.losses.kl_to_reference`)."""

    name: str
    stochastic: bool

    def __call__(
        self,
        x: torch.Tensor,
        v: torch.Tensor,
        sigmas: torch.Tensor,
        i: int | torch.Tensor,
        *,
        noise_level: float,
        x_next: torch.Tensor | None = None,
        generator: Generators = None,
    ) -> StepOutput: ...

    def diffusion(
        self, sigmas: torch.Tensor, i: int | torch.Tensor, x: torch.Tensor, noise_level: float
    ) -> torch.Tensor: ...


class ODE:
    """Euler step of the probability-flow ODE: x' = x + v (s' - s). No log_prob."""

    name, stochastic = "ode", False

    def __repr__(self) -> str:
        return "ODE()"

    def diffusion(self, sigmas, i, x, noise_level):
        return torch.zeros_like(_sigma(sigmas, i, x))

    def __call__(
        self, x, v, sigmas, i, *, noise_level=0.0, x_next=None, generator=None
    ) -> StepOutput:
        _check(x, v, sigmas)
        s, s_next = _sigma(sigmas, i, x), _sigma(sigmas, i, x, 1)
        mean = x.float() + v.float() * (s_next - s)
        out = mean.to(x.dtype) if x_next is None else x_next
        return StepOutput(out, None, mean, torch.zeros_like(s))


class FlowSDE:
    """The Flow-GRPO SDE (Liu et al., arXiv 2505.05470, eq. 9 discretised).

    g = a * sqrt(s / (1 - s~)) with s~ = s except s~ = sigmas[1] where s = 1 (keeps the
    first step finite, as the reference code does);
    mean = x + [v + g^2 / (2 s) * (x + (1 - s) v)] dt,  std = g * sqrt(-dt),  dt = s' - s.
    With a = 0 this is exactly the Euler step.
    """

    name, stochastic = "flow_sde", True

    def __repr__(self) -> str:
        return "FlowSDE()"

    def diffusion(self, sigmas, i, x, noise_level):
        s = _sigma(sigmas, i, x)
        s_tilde = torch.where(s == 1, sigmas[1].to(s), s)
        return noise_level * torch.sqrt(s / (1 - s_tilde))

    def __call__(self, x, v, sigmas, i, *, noise_level, x_next=None, generator=None) -> StepOutput:
        return _flow_sde_step(
            x, v, sigmas, i, self.diffusion(sigmas, i, x, noise_level), x_next, generator
        )


class DanceSDE:
    """The DanceGRPO SDE (Xue et al., arXiv 2505.07818): the Flow-GRPO drift with a
    constant noise scale g = eta = ``noise_level``.

    mean = x + [v + eta^2 / (2 s) * (x + (1 - s) v)] dt,  std = eta * sqrt(-dt).
    """

    name, stochastic = "dance_sde", True

    def __repr__(self) -> str:
        return "DanceSDE()"

    def diffusion(self, sigmas, i, x, noise_level):
        return torch.full_like(_sigma(sigmas, i, x), float(noise_level))

    def __call__(self, x, v, sigmas, i, *, noise_level, x_next=None, generator=None) -> StepOutput:
        return _flow_sde_step(
            x, v, sigmas, i, self.diffusion(sigmas, i, x, noise_level), x_next, generator
        )


class CPS:
    """Coefficients-preserving sampling (Wang & Yu, arXiv 2509.05952).

    g = s' * sin(a * pi / 2);  x0_hat = x - s v;  x1_hat = x + (1 - s) v;
    mean = (1 - s') x0_hat + sqrt(s'^2 - g^2) x1_hat;  x' = mean + g * eps  (std = g).

    ``log_prob`` follows the reference code by default: -mean over D of (x' - mean)^2,
    all constants and the 1/(2 g^2) scale dropped (so the published clip range 1e-5
    applies). ``CPS(normalized=True)`` gives the normalised Gaussian log-density.
    """

    name, stochastic = "cps", True

    def __init__(self, normalized: bool = False):
        self.normalized = normalized

    def __repr__(self) -> str:
        return f"CPS(normalized={self.normalized})"

    def diffusion(self, sigmas, i, x, noise_level):
        return _sigma(sigmas, i, x, 1) * math.sin(noise_level * math.pi / 2)

    def __call__(self, x, v, sigmas, i, *, noise_level, x_next=None, generator=None) -> StepOutput:
        _check(x, v, sigmas)
        s, s_next = _sigma(sigmas, i, x), _sigma(sigmas, i, x, 1)
        g = self.diffusion(sigmas, i, x, noise_level)
        x32, v32 = x.float(), v.float()
        x0_hat, x1_hat = x32 - s * v32, x32 + (1 - s) * v32
        mean = (1 - s_next) * x0_hat + torch.sqrt((s_next**2 - g**2).clamp_min(0)) * x1_hat
        out = _sample(mean, g, x, x_next, generator)
        if self.normalized:
            log_prob = gaussian_log_prob(out, mean, g)
        else:
            log_prob = -((out.detach().float() - mean) ** 2).flatten(1).mean(1)
        return StepOutput(out, log_prob, mean, g)


KERNELS: dict[str, Kernel] = {k.name: k for k in (ODE(), FlowSDE(), DanceSDE(), CPS())}
"""The built-in kernels by name: ``ode``, ``flow_sde``, ``dance_sde``, ``cps``."""


def get_kernel(name: str) -> Kernel:
    """The kernel registered as ``name``, with an error listing the accepted names."""
    try:
        return KERNELS[name]
    except KeyError:
        from alignflow.sdk.errors import ConfigError

        raise ConfigError("kernel", name, f"one of {sorted(KERNELS)}") from None
