"""The modality-agnostic core of alignflow.

Importing this package is cheap: it imports no diffusers pipeline, transformers model
or torchaudio. Components are reached through their modules, e.g.
``from alignflow.sdk.kernels import KERNELS``.
"""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("alignflow")
except PackageNotFoundError:  # a source tree that is not installed
    __version__ = "0+unknown"
