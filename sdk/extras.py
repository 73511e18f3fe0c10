"""Which ``pip install 'alignflow[EXTRA]'`` brings a missing module.

Read from alignflow's own package metadata (the ``Requires-Dist: ...; extra == "x"``
lines pyproject.toml's optional-dependencies become), so the hint cannot drift from
what the extras really install.
"""

from __future__ import annotations

import functools
import re
from importlib.metadata import PackageNotFoundError, requires
from typing import Any

from alignflow.sdk.errors import ConfigError

# import name -> distribution name, where the two differ
_DISTRIBUTION = {
    "cv2": "opencv-python-headless",
    "sklearn": "scikit-learn",
    "webrtcvad": "webrtcvad-wheels",
    "faster_whisper": "faster-whisper",
    "PIL": "pillow",
}


def _normal(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


@functools.lru_cache(maxsize=1)
def _extras() -> dict[str, list[str]]:
    """distribution name -> the extras that install it (smallest first, ``all`` last)."""
    try:
        lines = requires("alignflow") or []
    except PackageNotFoundError:
        return {}
    out: dict[str, list[str]] = {}
    for line in lines:
        m = re.match(r"^\s*([A-Za-z0-9_.\-]+).*;\s*extra\s*==\s*['\"]([^'\"]+)['\"]", line)
        if m:
            out.setdefault(_normal(m.group(1)), []).append(m.group(2))
    return out


def extra_for(module: str | None) -> str | None:
    """The extra that installs the top-level package of ``module`` (``"soundfile"``,
    ``"faster_whisper.transcribe"``), or None if no extra does."""
    if not module:
        return None
    top = module.split(".")[0]
    extras = _extras().get(_normal(_DISTRIBUTION.get(top, top)), [])
    return next((e for e in extras if e != "all"), None)


def install_hint(error: ImportError) -> str:
    """``"pip install 'alignflow[speech]'"`` for the module an ImportError misses,
    or a plain ``pip install NAME`` when no extra brings it."""
    missing = getattr(error, "name", None) or ""
    extra = extra_for(missing)
    if extra:
        return f"pip install 'alignflow[{extra}]'"
    return (
        f"pip install {_DISTRIBUTION.get(missing.split('.')[0], missing.split('.')[0])}"
        if missing
        else ""
    )


def require(module: str, field: str, value: Any, needed_for: str) -> Any:
    """``importlib.import_module(module)``, or a ConfigError on ``field`` that says what
    to install: the extra that brings ``module`` (or what it failed to import)."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        extra = extra_for(module) or extra_for(getattr(e, "name", None))
        command = f"pip install 'alignflow[{extra}]'" if extra else install_hint(e)
        raise ConfigError(
            field,
            value,
            f"{module.split('.')[0]} installed for {needed_for}",
            hint=f"{command}; import failed: {e}",
        ) from e
