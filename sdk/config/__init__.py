"""Run configuration: the schema and its composition.

- :mod:`~alignflow.sdk.config.schema`: the dataclasses with their help text, and
  :func:`validate`, which checks a composed config before anything is built;
- :mod:`~alignflow.sdk.config.compose`: YAML groups plus command-line overrides ->
  a checked config (``compose("train", ["experiment=image_digits"])``).
"""

from alignflow.sdk.config.compose import compose
from alignflow.sdk.config.schema import (
    RunConfig,
    check_arguments,
    dataclass_from,
    option,
    reward_terms,
    split_component,
    validate,
)

__all__ = [
    "RunConfig",
    "check_arguments",
    "compose",
    "dataclass_from",
    "option",
    "reward_terms",
    "split_component",
    "validate",
]
