"""The reward contract, output checking and weighted composition.

A reward is a callable with a ``modality`` attribute::

    reward(media, prompts, metadata) -> RewardOutput | Tensor [B] | sequence of B floats

``media`` is a batch of decoded samples of that modality, ``prompts`` the B prompts,
``metadata`` B dicts with the prompt dataset's extra columns (e.g. a target digit or
text). A score may be NaN or None: "not applicable to this sample"; the trainer leaves
such samples out of their group's statistics. Anything else that is not one finite
number per sample is an error that names the reward.

A *groupwise* reward (``groupwise = True``) scores a sample relative to the other
samples of its prompt (Pref-GRPO's win rates, DisCo's duplicate penalties): it is
called with ``groups=`` [B] long prompt-slot ids as well, and the trainer always passes
whole groups in one call.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch

from alignflow.sdk.errors import ConfigError, RewardError, RewardFailure


@dataclass
class RewardOutput:
    """Attributes:
    scores: [B] float32; NaN = not applicable.
    components: named [B] float32 parts or diagnostics (e.g. ``accuracy``), logged
        per component; they do not enter the advantage unless an algorithm asks."""

    scores: torch.Tensor
    components: dict[str, torch.Tensor] = field(default_factory=dict)


class Reward(Protocol):
    modality: str

    def __call__(
        self, media: Any, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> Any: ...


def _as_scores(raw: Any, batch: int, name: str) -> torch.Tensor:
    try:
        if isinstance(raw, torch.Tensor):
            t = raw.detach().cpu().to(torch.float64)
        else:
            t = torch.tensor(
                [math.nan if v is None else float(v) for v in raw], dtype=torch.float64
            )
    except OverflowError as e:  # a Python int beyond any float
        raise RewardError(
            f"reward {name!r} returned a number too large for a float; expected scores within "
            "float32's range (or NaN for 'not applicable')"
        ) from e
    except (TypeError, ValueError, RuntimeError) as e:
        raise RewardError(
            f"reward {name!r} returned {type(raw).__name__}; expected one number per sample"
        ) from e
    big = torch.isfinite(t) & (t.abs() > torch.finfo(torch.float32).max)
    # finite in float64, inf once stored as float32: the reward's scale is wrong, not a failure
    if big.any():
        bad = torch.nonzero(big).flatten().tolist()
        raise RewardError(
            f"reward {name!r} returned {t[bad[0]].item():.3g} for samples {bad[:8]}, beyond "
            "float32's range; expected scores within it (or NaN for 'not applicable')"
        )
    t = t.float()
    if t.shape != (batch,):
        raise RewardError(
            f"reward {name!r} returned shape {tuple(t.shape)} for a batch of {batch}; expected "
            f"[{batch}]"
        )
    if torch.isinf(t).any():
        bad = torch.nonzero(torch.isinf(t)).flatten().tolist()
        raise RewardFailure(
            f"reward {name!r} returned inf for samples {bad[:8]}; return NaN for 'not applicable'"
        )
    return t


def check_output(raw: Any, batch: int, name: str) -> RewardOutput:
    """Normalise what a reward returned to a :class:`RewardOutput`, or raise
    :class:`RewardError` naming the reward, what came and what was expected."""
    if isinstance(raw, RewardOutput):
        comps = {k: _as_scores(v, batch, f"{name}/{k}") for k, v in raw.components.items()}
        return RewardOutput(_as_scores(raw.scores, batch, name), comps)
    return RewardOutput(_as_scores(raw, batch, name))


def score(
    reward: Reward,
    media: Any,
    prompts: Sequence[str],
    metadata: Sequence[Mapping[str, Any]],
    groups: torch.Tensor | None,
    name: str,
) -> RewardOutput:
    """One reward's checked output; groupwise rewards also get the group ids."""
    if getattr(reward, "groupwise", False) and groups is None:
        raise RewardError(
            f"reward {name!r} is groupwise: it needs the samples' group ids (groups=)"
        )
    try:
        if getattr(reward, "groupwise", False):
            raw = reward(media, prompts, metadata, groups=groups)
        else:
            raw = reward(media, prompts, metadata)
    except RewardError:
        raise
    except (
        Exception
    ) as e:  # the model itself failed (out of memory, a server gone...): a run-time failure
        raise RewardFailure(f"reward {name!r} raised {type(e).__name__}: {e}") from e
    return check_output(raw, len(prompts), name)


ANY = "any"
"""The modality of a reward that scores whatever media it is given (a plain function)."""


class FunctionReward:
    """A plain function as a reward: ``fn(media, prompts, metadata) -> scores`` (a
    tensor [B], B numbers, or a RewardOutput), for media of any modality."""

    modality = ANY

    def __init__(self, fn: Any):
        self.fn = fn

    def __call__(
        self, media: Any, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> Any:
        return self.fn(media, prompts, metadata)


class WeightedSum:
    """r = sum_k w_k r_k over named rewards. Components: each term's own components as
    ``name/component`` and, when there are several terms, each term's score under its
    name. If any term is NaN for a sample, the sum is NaN for it."""

    def __init__(self, terms: Mapping[str, tuple[Reward, float]]):
        if not terms:
            raise ConfigError(
                "reward", {}, "at least one reward component {name: {name: ..., weight: ...}}"
            )
        modalities = {n: getattr(r, "modality", None) for n, (r, _) in terms.items()}
        kinds = set(modalities.values()) - {ANY}
        if len(kinds) > 1:
            raise ConfigError("reward", modalities, "rewards of one modality")
        self.terms = dict(terms)
        self.modality = kinds.pop() if kinds else ANY

    def __call__(
        self,
        media: Any,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        groups: torch.Tensor | None = None,
    ) -> RewardOutput:
        batch = len(prompts)
        total = torch.zeros(batch)
        comps: dict[str, torch.Tensor] = {}
        for name, (reward, weight) in self.terms.items():
            out = score(reward, media, prompts, metadata, groups, name)
            total = total + weight * out.scores
            if len(self.terms) > 1:
                comps[name] = out.scores
            missing = [h for h in _heads(reward) if h not in out.components]
            if missing:
                raise RewardError(
                    f"reward {name!r} declares heads {missing} but returned no components of "
                    "those names"
                )
            comps.update({f"{name}/{k}": v for k, v in out.components.items()})
        return RewardOutput(total, comps)

    def advantage_terms(self) -> dict[str, float]:
        """The parts that get their own group advantage when an algorithm aggregates
        advantages (``aggregate: advantage``): each term, or each head of a multi-head
        reward (one with ``heads``: head -> weight, scoring each head as the component
        of that name, e.g. VideoAlign's VQ / MQ / TA), as ``term/head``. Values: the
        weight in the sum (term weight x head weight); keys name components of the output."""
        out: dict[str, float] = {}
        for name, (reward, weight) in self.terms.items():
            heads = _heads(reward)
            if heads:
                out.update({f"{name}/{h}": weight * float(w) for h, w in heads.items()})
            else:
                out[name] = weight
        return out


def _heads(reward: Reward) -> Mapping[str, float]:
    """A multi-head reward's head weights; {} for a reward with one score (a single
    declared head is that score)."""
    heads = getattr(reward, "heads", None) or {}
    return heads if len(heads) > 1 else {}
