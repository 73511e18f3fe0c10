"""Explicit randomness.

Every random draw in alignflow comes from a :class:`torch.Generator` whose seed is a
hash of *what* is drawn: (run seed, iteration, prompt slot, group member, purpose).
Never the rank alone, never the global RNG. So a sample's noise does not depend on
the batch it is in, the number of processes, or whether the run was resumed.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

Generators = torch.Generator | Sequence[torch.Generator] | None


def derive_seed(*keys: object) -> int:
    """A 63-bit seed from any tuple of ints and strings, stable across processes
    and Python versions (unlike ``hash``)."""
    digest = hashlib.blake2b(repr(keys).encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") & ((1 << 63) - 1)


def generator(*keys: object) -> torch.Generator:
    """A CPU generator seeded by :func:`derive_seed` of ``keys``."""
    return torch.Generator().manual_seed(derive_seed(*keys))


def randn(
    shape: Sequence[int],
    generator: Generators = None,
    *,
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Standard normal noise of ``shape`` drawn on the CPU and moved to ``device``.

    ``generator`` may be one generator for the whole tensor or a sequence of
    ``shape[0]`` generators, one per sample (diffusers' ``randn_tensor`` convention),
    in which case sample ``b`` is the same whatever batch it is drawn in.
    Drawing on the CPU makes the numbers the same on every device.
    """
    shape = tuple(shape)
    if generator is None or isinstance(generator, torch.Generator):
        out = torch.randn(shape, generator=generator, dtype=torch.float32)
    else:
        if len(generator) != shape[0]:
            raise ValueError(
                f"randn: got {len(generator)} generators for a batch of {shape[0]}; "
                "pass one generator per sample or a single generator"
            )
        out = torch.stack(
            [torch.randn(shape[1:], generator=g, dtype=torch.float32) for g in generator]
        )
    return out.to(device=device, dtype=dtype)
