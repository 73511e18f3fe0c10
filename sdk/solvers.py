"""Deterministic multi-step solvers for the probability-flow ODE of a flow-matching
policy (x_s = (1 - s) x0 + s eps, velocity v = eps - x0).

The Euler step is the ``ode`` kernel (:mod:`alignflow.sdk.kernels`); here are the
higher-order solvers that MixGRPO-Flash uses for the untrained tail of a rollout and
that DenseGRPO-style peeks may use to reach a clean sample in few evaluations.

DPM-Solver++(2M) (Lu et al., arXiv 2211.01095) in the flow parametrisation: with
alpha = 1 - s, sigma = s, lambda = log(alpha / sigma) and the data prediction
x0_hat = x - s v, one step s -> s' (h = lambda' - lambda) is

    D  = x0_hat                                         (the first step)
    D  = (1 + 1 / (2 r)) x0_hat - 1 / (2 r) x0_hat_prev,   r = h_prev / h   (otherwise)
    x' = (s' / s) x - (1 - s') (exp(-h) - 1) D

The step to s' = 0 (h infinite) returns D, with r = 1 (the previous step's h in place
of the infinite one). diffusers falls back to first order there (D = x0_hat); on the
analytic Gaussian policy of the tests the second-order D is 12x more accurate over a
shifted 12-step schedule (error 0.013 vs 0.158) and 2x over 6 linear steps, but 4x
less accurate over 12 linear steps (0.075 vs 0.019); shifted schedules are the norm.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from alignflow.sdk.policy import FlowPolicy


def _lambda(s: float) -> float:
    return math.log((1 - s) / s)


@torch.no_grad()
def dpm_solver_2m(
    policy: FlowPolicy, x: torch.Tensor, cond: Any, sigmas: torch.Tensor, guidance: float
) -> torch.Tensor:
    """Integrate the ODE from ``sigmas[0]`` to ``sigmas[-1]`` (decreasing, ending at 0 or
    above) with DPM-Solver++(2M): len(sigmas) - 1 velocity evaluations. ``sigmas[0]``
    may be 1 (pure noise); the first step is then first order."""
    s_all = [float(s) for s in sigmas]
    if any(b >= a for a, b in zip(s_all, s_all[1:])):
        raise ValueError(f"dpm_solver_2m: sigmas must decrease strictly, got {s_all}")
    prev_x0, h_prev = None, None
    for s, s_next in zip(s_all, s_all[1:]):
        v = policy.velocity(x, torch.full((x.shape[0],), s, device=x.device), cond, guidance)
        x0_hat = x.float() - s * v.float()
        last = s_next == 0.0
        d, h = x0_hat, None
        if s < 1.0:  # at s = 1, lambda = -inf: the first step is first order
            # the last step to s' = 0 has h = inf: its r is taken with the previous step's h
            h = _lambda(s_next) - _lambda(s) if not last else h_prev
            if prev_x0 is not None and h_prev is not None and h is not None:
                r = h_prev / h
                d = (1 + 1 / (2 * r)) * x0_hat - prev_x0 / (2 * r)
        if last:
            x = d.to(x.dtype)
        elif s == 1.0:
            x = (s_next * x.float() + (1 - s_next) * d).to(x.dtype)  # x = eps at s = 1
        else:
            x = ((s_next / s) * x.float() - (1 - s_next) * math.expm1(-h) * d).to(x.dtype)
        prev_x0, h_prev = x0_hat, h
    return x


def compress(sigmas: torch.Tensor, ratio: float) -> torch.Tensor:
    """A sub-schedule of ``sigmas`` (same ends) with max(1, ceil(ratio x steps)) steps,
    taken at evenly spaced indices so the schedule's shape (shift, sway) is kept."""
    if not 0 < ratio <= 1:
        raise ValueError(f"compress: ratio must be in (0, 1], got {ratio}")
    n = len(sigmas) - 1
    m = max(1, math.ceil(ratio * n))
    idx = torch.linspace(0, n, m + 1).round().long()
    return sigmas[idx]
