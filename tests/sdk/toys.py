"""A FlowPolicy with an analytic velocity field, for testing samplers and rollouts.

Data x0 ~ N(mu_c, s0^2 I) where the condition c picks the mean mu_c. Then
x_s = (1 - s) x0 + s eps ~ N((1 - s) mu, (1 - s)^2 s0^2 + s^2), and the exact
velocity E[eps - x0 | x_s] is linear in x_s:
    v = -mu + k(s) (x_s - (1 - s) mu),  k(s) = (s - (1 - s) s0^2) / ((1 - s)^2 s0^2 + s^2)
"""

from dataclasses import dataclass

import torch
from torch import nn

from alignflow.sdk.random import randn


@dataclass
class ToyCond:
    mu: torch.Tensor  # [B, D]


class GaussianPolicy:
    modality = "image"
    default_lora_targets = ("shift",)

    def __init__(self, dim: int = 8, s0: float = 0.5):
        self.dim, self.s0 = dim, s0
        self.net = nn.Module()
        # a trainable perturbation of v, zero at start
        self.net.shift = nn.Linear(1, dim, bias=False)
        nn.init.zeros_(self.net.shift.weight)
        self.calls: list[int] = []

    def encode(self, prompts, metadata=None):
        return ToyCond(torch.tensor([[float(p)] * self.dim for p in prompts]))

    def noise(self, batch_size, generator):
        return randn((batch_size, self.dim), generator)

    def sigmas(self, num_steps):
        return torch.linspace(1, 0, num_steps + 1)

    def velocity(self, x, sigma, cond, guidance=1.0):
        self.calls.append(x.shape[0])
        s = torch.as_tensor(sigma, dtype=torch.float32).expand(x.shape[0]).view(-1, 1)
        mu, s0 = cond.mu, self.s0
        k = (s - (1 - s) * s0**2) / ((1 - s) ** 2 * s0**2 + s**2)
        return -mu + k * (x - (1 - s) * mu) + self.net.shift(s)

    def decode(self, latents):
        return latents

    def to_latents(self, media):
        return media

    def trainable_modules(self):
        return {"net": self.net}

    def to(self, device):
        return self
