"""Declared components: the only code a config can name.

A config names a policy builder, a reward, an algorithm, a media writer or a
pretraining dataset by name (``policy.name=pixel_sd3``), or by the dotted path of a
declared component (``reward.q.name=mypkg.rewards:Sharpness``). Nothing else resolves,
however it is spelt: a config is data, and it cannot make alignflow import a module or
call a function that nobody declared.

A component is declared in one of two ways:

- an entry point of an installed package, in the group ``alignflow.components``, named
  ``<kind>.<name>``::

      [project.entry-points."alignflow.components"]
      "reward.sharpness" = "mypkg.rewards:Sharpness"

  alignflow declares its own adapters, rewards, algorithms, writers and datasets this
  way (its pyproject.toml), so ``alignflow.sdk`` names none of them. A module is
  imported only when a run asks for one of its components.
- the :func:`component` decorator, in code that is already running (a script that
  builds a :class:`~alignflow.sdk.trainer.Trainer`, a notebook, a test)::

      @component("reward", "sharpness")
      class Sharpness: ...

  For the command line, ``ALIGNFLOW_PLUGINS`` (comma-separated module names) lists
  modules to import before the first lookup, as ``PYTEST_PLUGINS`` does for pytest.
  The environment and the installed packages are the operator's; configs are not.
"""

from __future__ import annotations

import functools
import importlib
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import entry_points
from typing import Any

from alignflow.sdk.errors import ConfigError

log = logging.getLogger(__name__)

GROUP = "alignflow.components"
KINDS = {
    "policy": "a FlowPolicy builder",
    "reward": "a reward",
    "algorithm": "an algorithm recipe",
    "writer": "a media writer (named after its modality)",
    "dataset": "a pretraining dataset",
}


@dataclass
class Declaration:
    """One declared component: ``target`` is ``"module:attr"``; ``source`` says who
    declared it (a distribution's entry point, or the decorator)."""

    kind: str
    name: str
    target: str
    source: str
    obj: Any = None  # the object itself, for the decorator; entry points are looked up on use


_DECORATED: dict[tuple[str, str], Declaration] = {}


def component(kind: str, name: str | None = None) -> Callable[[Any], Any]:
    """Declare a class or factory as a component of ``kind`` called ``name`` (default:
    its ``__name__``). Returns the object unchanged."""
    _check_kind(kind)

    def declare(obj: Any) -> Any:
        key = (kind, name or obj.__name__)
        target = f"{obj.__module__}:{obj.__qualname__}"
        old = _DECORATED.get(key)
        if old is not None and old.target != target:
            raise ConfigError(
                f"{kind}.name",
                key[1],
                "a name declared once",
                hint=f"already declared for {old.target}, now for {target}",
            )
        _DECORATED[key] = Declaration(kind, key[1], target, "the @component decorator", obj)
        return obj

    return declare


def names(kind: str) -> list[str]:
    """The names a config may use for ``kind``."""
    return sorted(_declarations(kind))


def resolve(kind: str, name: Any, field: str | None = None) -> Any:
    """The declared component of ``kind`` called ``name`` (a declared name, or the
    ``module:attr`` / ``module.attr`` path of a declared component)."""
    field = field or f"{kind}.name"
    decls = _declarations(kind)
    accepted = f"one of {sorted(decls)} (declared {kind} components)"
    if not isinstance(name, str) or not name:
        raise ConfigError(field, name, accepted)
    found = decls.get(name) or _by_path(decls.values(), name)
    if found is None:
        hint = (
            (
                "a dotted path resolves only to a declared component; declare it with "
                f"@alignflow.sdk.components.component({kind!r}) or an entry point "
                f"'{kind}.<name>' in the {GROUP!r} group"
            )
            if ("." in name or ":" in name)
            else ""
        )
        raise ConfigError(field, name, accepted, hint=hint)
    if isinstance(found, list):
        raise ConfigError(
            field,
            name,
            "a name declared once",
            hint="declared as " + " and ".join(f"{d.target} ({d.source})" for d in found),
        )
    return _load(found, field)


def builder(kind: str, name: Any, field: str) -> Callable[..., Any]:
    """:func:`resolve`, checked to be callable (a class or a factory)."""
    obj = resolve(kind, name, field)
    if not callable(obj):
        raise ConfigError(
            field, name, f"{KINDS[kind]}: a class or factory, got {type(obj).__name__}"
        )
    return obj


def declared_packages() -> set[str]:
    """Top-level packages that declare components: the only packages whose files a
    config may name (``${pkgfile:...}``)."""
    _import_plugins()
    mods = [d.target.partition(":")[0] for d in _DECORATED.values()]
    mods += [ep.value.partition(":")[0] for ep in _entry_points()]
    return {m.split(".")[0] for m in mods}


# ------------------------------------------------------------------ internals


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ValueError(f"component kind {kind!r}: expected one of {sorted(KINDS)}")


@functools.lru_cache(maxsize=1)
def _entry_points() -> tuple[Any, ...]:
    return tuple(entry_points(group=GROUP))


@functools.lru_cache(maxsize=1)
def _import_plugins() -> None:
    """Import the modules the operator listed in ``ALIGNFLOW_PLUGINS`` (once)."""
    for module in filter(
        None, (m.strip() for m in os.environ.get("ALIGNFLOW_PLUGINS", "").split(","))
    ):
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(
                "ALIGNFLOW_PLUGINS", module, "importable module names, comma-separated", hint=str(e)
            ) from e


def _declarations(kind: str) -> dict[str, Declaration | list[Declaration]]:
    """name -> its declaration (a list when two sources disagree on the target)."""
    _check_kind(kind)
    _import_plugins()
    out: dict[str, Declaration | list[Declaration]] = {}

    def add(d: Declaration) -> None:
        old = out.get(d.name)
        if old is None:
            out[d.name] = d
        elif (old if isinstance(old, list) else [old])[0].target != d.target:
            out[d.name] = [*(old if isinstance(old, list) else [old]), d]

    for d in _entry_point_declarations(kind):
        add(d)
    for (k, _), d in _DECORATED.items():
        if k == kind:
            add(d)
    return out


@functools.cache
def _entry_point_declarations(kind: str) -> tuple[Declaration, ...]:
    """The entry points of ``kind``, read once (a distribution's name is parsed from its
    metadata)."""
    out = []
    for ep in _entry_points():
        ep_kind, _, ep_name = ep.name.partition(".")
        if ep_kind == kind and ep_name:
            dist = getattr(getattr(ep, "dist", None), "name", None) or "an installed package"
            out.append(
                Declaration(kind, ep_name, ep.value.replace(" ", ""), f"entry point of {dist}")
            )
    return tuple(out)


def _by_path(decls: Any, path: str) -> Declaration | list[Declaration] | None:
    """The declaration whose target is ``path`` (``a.b:C`` or ``a.b.C``)."""
    want = {path, path.replace(":", ".")}
    for d in decls:
        first = d[0] if isinstance(d, list) else d
        if first.target in want or first.target.replace(":", ".") in want:
            return d
    return None


def _load(d: Declaration, field: str) -> Any:
    """The declared object: a decorated one as it is, an entry point's looked up in its
    module (imported once by Python; looked up each time, as a monkeypatch expects)."""
    if d.obj is not None:
        return d.obj
    module, _, attr = d.target.partition(":")
    try:
        obj = importlib.import_module(module)
        for part in attr.split(".") if attr else []:
            obj = getattr(obj, part)
    except ImportError as e:
        raise ConfigError(
            field,
            d.name,
            f"a {d.kind} whose module imports",
            hint=f"{d.target} ({d.source}): {e}{_install_hint(e)}",
        ) from e
    except AttributeError as e:
        raise ConfigError(
            field, d.name, f"a {d.kind} that exists", hint=f"{d.target} ({d.source}): {e}"
        ) from e
    return obj


def _install_hint(e: ImportError) -> str:
    from alignflow.sdk.extras import install_hint

    hint = install_hint(e)
    return f"; install it with: {hint}" if hint else ""
