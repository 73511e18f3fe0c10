"""Source media named by prompt metadata: the image an edit starts from, the reference
audio whose voice a TTS model copies, the first frame of an image-to-video clip.

A prompt row names its source by a path in one metadata column (``source`` for
images; ``ref_audio`` for speech). :class:`SourceMedia` resolves it against a root
folder, reads it once with the modality's reader and keeps it. An adapter encodes
what it returns into its condition (reference latents), once per prompt: the trainer
repeats a prompt's condition for each member of its group, so kernels, plans, rollouts
and algorithms never see that a condition holds media.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from alignflow.sdk.errors import DataError


class SourceMedia:
    """``meta[column]`` -> the media ``read(path)`` returns, read once per path.
    Relative paths resolve against ``root``. ``required`` names the columns a row must
    have (``column`` and, e.g., the reference transcript of a speech prompt). With
    ``inline``, a row may hold the media itself instead of a path."""

    def __init__(
        self,
        column: str,
        read: Callable[[Path], Any],
        root: str = "",
        required: Sequence[str] = (),
        what: str = "prompt",
        inline: Callable[[Any], Any] | None = None,
        root_field: str = "policy.source_root",
    ):
        """``inline``: how a row that carries the media itself (not a path: an array, a
        PIL image from a ``datasets`` image column) becomes what ``read`` returns; None
        accepts paths only. ``root_field``: the config field that sets ``root`` (named
        when a relative path is not found without one)."""
        self.column, self.read, self.what, self.inline = column, read, what, inline
        self.root_field = root_field
        self.root = Path(root).expanduser() if root else None
        self.required = tuple(dict.fromkeys((column, *required)))
        self._cache: dict[Path, Any] = {}

    def path(self, meta: Mapping[str, Any]) -> Path:
        self._require(meta, [self.column])
        path = Path(meta[self.column]).expanduser()
        return path if path.is_absolute() or self.root is None else self.root / path

    def _require(self, meta: Mapping[str, Any], paths: Sequence[str]) -> None:
        """The required columns are there; those in ``paths`` hold a path."""
        missing = [
            c
            for c in self.required
            if meta.get(c) is None
            or (isinstance(meta[c], str) and not meta[c])
            or (c in paths and not isinstance(meta[c], str))
        ]
        if missing:
            raise DataError(
                f"{self.what} {dict(meta)!r}: missing or empty column(s) {missing}; such a "
                f"prompt row needs {list(self.required)} besides the prompt"
            )

    def __call__(self, meta: Mapping[str, Any]) -> Any:
        value = meta.get(self.column)
        if self.inline is not None and value is not None and not isinstance(value, str):
            self._require(meta, [])
            try:
                return self.inline(value)
            except (TypeError, ValueError) as e:
                raise DataError(
                    f"{self.what} source {self.column}: {type(value).__name__} is neither a "
                    f"path nor media this policy reads ({e})"
                ) from e
        path = self.path(meta)
        if path not in self._cache:
            if not path.is_file():
                raise DataError(
                    f"{self.what} source {self.column}={meta[self.column]!r}: no file {path}"
                    + ("" if self.root else f" (relative paths resolve against {self.root_field})")
                )
            self._cache[path] = self.read(path)
        return self._cache[path]

    def batch(self, metadata: Sequence[Mapping[str, Any]] | None, n: int) -> list[Any]:
        """The sources of ``n`` prompts' metadata rows (one row per prompt, or a
        one-line data error)."""
        if metadata is None or len(metadata) != n:
            got = 0 if metadata is None else len(metadata)
            raise DataError(
                f"a policy that starts from source media needs one metadata row with its "
                f"{self.column!r} per prompt; got {got} rows for {n} prompts"
            )
        return [self(meta) for meta in metadata]
