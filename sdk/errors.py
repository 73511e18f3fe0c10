"""Errors that tell the user what to change."""

from __future__ import annotations

from typing import Any


class AlignflowError(Exception):
    """Base class of the errors alignflow raises on purpose."""


class ConfigError(AlignflowError, ValueError):
    """A config field has a value alignflow cannot use.

    The message names the field, the value it had and what would be accepted, e.g.
    ``algorithm.noise_level = -0.1: expected a float >= 0``.
    """

    def __init__(self, field: str, value: Any, accepted: str, hint: str = ""):
        self.field, self.value, self.accepted, self.hint = field, value, accepted, hint
        msg = f"{field} = {value!r}: expected {accepted}"
        if hint:
            msg += f" ({hint})"
        super().__init__(msg)


class DataError(AlignflowError, ValueError):
    """A data file (prompts, media) is missing, empty or malformed."""


class CheckpointError(AlignflowError, RuntimeError):
    """A checkpoint is missing, incomplete, corrupt or does not fit the run."""


class RewardError(AlignflowError, RuntimeError):
    """A reward returned something that is not one finite score per sample."""


class RewardFailure(RewardError):
    """A reward call failed at run time: it raised, timed out or returned inf. The
    trainer applies ``train.reward_failures`` (drop the batch, or stop)."""
