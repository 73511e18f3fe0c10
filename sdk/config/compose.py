"""Config composition: YAML groups + command-line overrides -> a checked config dataclass.

``compose("train", ["experiment=image_digits", "train.lr=3e-4"])`` runs hydra's
compose API over the packaged groups (``alignflow.configs``) and returns a
:class:`~alignflow.sdk.config.schema.RunConfig` (or a ``PretrainConfig``, or the
``BenchConfig`` of ``alignflow bench``).

A config is data written by someone else, so composition refuses, with a one-line
:class:`~alignflow.sdk.errors.ConfigError` naming the key, before anything is built:

- a group option that leaves the config search path (``experiment=../../x``, an
  absolute path, a URL); the search path is the packaged configs plus what the
  operator adds with ``hydra.searchpath=[file://DIR]`` (or ``pkg://`` of a package that
  declares components); any other ``hydra.*`` setting, which would do nothing here;
- a key the schema does not know, also one added with ``+`` (``+train.lrr=3e-4``),
  with the close matches;
- ``${pkgfile:PKG,REL}`` outside a package that declares components, or with a REL
  that climbs out of it.

YAML is read with OmegaConf's safe loader (no ``!!python`` tags), nothing is
instantiated from ``_target_`` keys, and components resolve only to declared ones
(:mod:`alignflow.sdk.components`).
"""

from __future__ import annotations

import dataclasses
import difflib
import re
import typing
from importlib import resources
from pathlib import PurePosixPath
from typing import Any

from alignflow.sdk.config.schema import RunConfig
from alignflow.sdk.errors import ConfigError

_OPTION = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.\-]*(/[A-Za-z0-9_][A-Za-z0-9_.\-]*)*$")


def _schema(kind: str) -> type:
    if kind == "train":
        return RunConfig
    if kind == "bench":
        from alignflow.sdk.bench.grid import BenchConfig

        return BenchConfig
    from alignflow.sdk.pretrain import PretrainConfig

    return PretrainConfig


def _pkgfile(pkg: str, rel: str) -> str:
    """``${pkgfile:alignflow.modalities.image,data/digits_train.jsonl}`` -> an absolute path."""
    from alignflow.sdk.components import declared_packages

    if (
        not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", pkg or "")
        or pkg.split(".")[0] not in declared_packages()
    ):
        raise ValueError(
            f"pkgfile package {pkg!r}: expected a package of alignflow or of a package that "
            "declares alignflow components"
        )
    parts = PurePosixPath(rel).parts
    if not rel or rel.startswith("/") or "\\" in rel or ".." in parts:
        raise ValueError(
            f"pkgfile path {rel!r}: expected a relative path inside {pkg}, without '..'"
        )
    return str(resources.files(pkg) / rel)


def register() -> None:
    """The schemas (``train_schema``, ``pretrain_schema``, ``bench_schema``) and the
    ``pkgfile`` resolver."""
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=_schema("train"))
    cs.store(name="pretrain_schema", node=_schema("pretrain"))
    cs.store(name="bench_schema", node=_schema("bench"))
    if not OmegaConf.has_resolver("pkgfile"):
        OmegaConf.register_new_resolver("pkgfile", _pkgfile)


def compose(kind: str, overrides: list[str]) -> Any:
    """The composed, type-checked config dataclass of ``kind`` ("train", "pretrain" or
    "bench")."""
    import yaml
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra
    from hydra.errors import HydraException
    from omegaconf import OmegaConf, open_dict
    from omegaconf.errors import OmegaConfBaseException

    register()
    schema = _schema(kind)
    if kind == "pretrain":  # `experiment=` is the friendly name of the pretrain group
        overrides = [
            o.replace("experiment=", "pretrain_experiment=", 1)
            if o.startswith("experiment=")
            else o
            for o in overrides
        ]
    elif kind == "train":  # an algorithm's options are its Config's fields: setting one adds it
        overrides = [f"++{o}" if re.match(r"algorithm\.[A-Za-z_]\w*=", o) else o for o in overrides]
    else:  # hydra refuses to override a mapping that is empty ({}): set it instead
        maps = r"(axes|metrics|experiment_overrides|algorithm_overrides|pair_overrides)[.=]"
        overrides = [f"++{o}" if re.match(maps, o) else o for o in overrides]
    overrides = _with_declared_configs(overrides)
    try:
        with initialize_config_module(config_module="alignflow.configs", version_base="1.3"):
            search = tuple(o for o in overrides if o.startswith("hydra.searchpath"))
            # listing the groups scans every config source: once per search path
            if search not in _GROUPS:
                _GROUPS[search] = _groups(GlobalHydra.instance().config_loader())
            _check_overrides(overrides, _GROUPS[search], schema)
            cfg = hydra_compose(config_name=kind, overrides=overrides, return_hydra_config=True)
        for group, option in cfg.hydra.runtime.choices.items():
            if option is not None and not group.startswith("hydra/"):
                _check_option(group, option)
        with open_dict(cfg):
            del cfg["hydra"]
        _check_known(cfg, schema, "", schema)
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
        raise ConfigError(
            str(key),
            getattr(e, "value", None),
            "a value of the field's type",
            hint=" ".join(str(e).split("\n")[0].split()),
        ) from e
    except yaml.YAMLError as e:
        # a tag OmegaConf's safe loader has no constructor for, or broken YAML
        mark = getattr(e, "problem_mark", None)
        where = f"{mark.name}:{mark.line + 1}" if mark else "a config file"
        raise ConfigError(
            where,
            getattr(e, "problem", None) or str(e).splitlines()[0],
            "plain YAML: maps, lists, strings, numbers (no !!python tags)",
        ) from e
    except HydraException as e:
        raise ConfigError(
            "overrides",
            overrides,
            "existing config groups, options and keys",
            hint=" ".join(str(e).split()),
        ) from e


# ------------------------------------------------------------------ checks


_GROUPS: dict[tuple[str, ...], set[str]] = {}


def _groups(loader: Any, parent: str = "") -> set[str]:
    """Every config group in the search path (``reward``, ``experiment``, nested ones)."""
    out = set()
    for name in loader.list_groups(parent):
        path = f"{parent}/{name}" if parent else name
        if path != "hydra":
            out |= {path} | _groups(loader, path)
    return out


def _check_option(group: str, option: Any) -> None:
    options = option if isinstance(option, (list, tuple)) else [option]
    for o in options:
        if not (isinstance(o, str) and _OPTION.match(o) and ".." not in o.split("/")):
            raise ConfigError(
                group, o, f"the name of a config in the {group!r} group (no '..', no absolute path)"
            )


def _check_overrides(overrides: list[str], groups: set[str], schema: type) -> None:
    from hydra.core.override_parser.overrides_parser import OverridesParser

    for o in OverridesParser.create().parse_overrides(overrides):
        key = o.key_or_group
        if key == "hydra.searchpath":
            _check_searchpath(o.value())
        elif key.startswith(("hydra.", "hydra/")) or key == "hydra":
            raise ConfigError(
                key,
                o.value(),
                "no hydra setting but hydra.searchpath (alignflow composes with "
                "hydra's compose API: hydra's run, job, launcher and logging settings do nothing)",
            )
        elif key in groups and not o.is_delete():
            _check_option(key, o.value())
        elif key not in groups and not o.is_delete():
            _check_path(key.split("."), schema, o.value())


def _with_declared_configs(overrides: list[str]) -> list[str]:
    """A package that declares alignflow components and ships a ``configs`` folder (with
    an ``__init__.py``) is on the config search path, after any ``hydra.searchpath``
    the overrides give: its experiments are found by name."""
    from alignflow.sdk.components import declared_packages

    extra = [
        f"pkg://{p}.configs"
        for p in sorted(declared_packages() - {"alignflow"})
        if _ships_configs(p)
    ]
    if not extra:
        return overrides
    given = [o for o in overrides if o.startswith("hydra.searchpath=")]
    entries = [
        e.strip() for o in given for e in o.split("=", 1)[1].strip("[]").split(",") if e.strip()
    ]
    rest = [o for o in overrides if not o.startswith("hydra.searchpath=")]
    return [
        *rest,
        f"hydra.searchpath=[{','.join(entries + [e for e in extra if e not in entries])}]",
    ]


def _ships_configs(package: str) -> bool:
    import importlib.util

    try:
        spec = importlib.util.find_spec(f"{package}.configs")
    except (ImportError, ValueError):
        return False
    return spec is not None


def _check_searchpath(value: Any) -> None:
    """Config folders the operator adds: ``file://`` folders, and ``pkg://`` packages
    that declare components (a ``pkg://`` entry imports its package)."""
    from alignflow.sdk.components import declared_packages

    for entry in value if isinstance(value, (list, tuple)) else [value]:
        ok = isinstance(entry, str) and (
            entry.startswith("file://")
            or (entry.startswith("pkg://") and entry[6:].split(".")[0] in declared_packages())
        )
        if not ok:
            raise ConfigError(
                "hydra.searchpath",
                entry,
                "file://FOLDER, or pkg://PACKAGE of a package that declares alignflow components",
            )


def _check_path(parts: list[str], schema: type, value: Any) -> None:
    """``train.lrr`` against the schema: a key inside a dataclass must be one of its
    fields; inside a free-form mapping (``policy``, ``reward``) anything goes here and
    the component's own arguments are checked by :func:`~alignflow.sdk.config.schema.validate`."""
    cls, done = schema, []
    for part in parts:
        hints = typing.get_type_hints(cls)
        if part not in hints:
            _unknown(".".join([*done, part]), value, cls, schema)
        done.append(part)
        cls = hints[part]
        if not dataclasses.is_dataclass(cls):
            return


def _check_known(node: Any, cls: type, prefix: str, schema: type) -> None:
    """Every key of the composed config is a field of the schema (keys a YAML or a
    ``+key`` override added included)."""
    hints = typing.get_type_hints(cls)
    for key in node.keys():
        if key not in hints:
            _unknown(prefix + str(key), node._get_node(key)._value(), cls, schema)
        elif dataclasses.is_dataclass(hints[key]):
            _check_known(node[key], hints[key], f"{prefix}{key}.", schema)


def _unknown(key: str, value: Any, cls: type, schema: type) -> None:
    """Refuse ``key``, suggesting the fields it was probably meant to be: close names
    in the same section, or the same name in another section (``sample.group_size``
    for ``train.group_size``)."""
    leaf, parent = key.rsplit(".", 1)[-1], key.rsplit(".", 1)[0] + "." if "." in key else ""
    close = [
        parent + c
        for c in difflib.get_close_matches(leaf, list(typing.get_type_hints(cls)), n=3, cutoff=0.6)
    ]
    everywhere = _fields(schema)
    close += [f for f in everywhere if f.rsplit(".", 1)[-1] == leaf and f not in close]
    close += [
        f for f in difflib.get_close_matches(key, everywhere, n=2, cutoff=0.8) if f not in close
    ]
    hint = (
        ("did you mean " + " or ".join(close[:3]) + "?")
        if close
        else "`alignflow fields` lists every field"
    )
    raise ConfigError(key, value, f"a field of {cls.__name__}", hint=hint)


def _fields(cls: type, prefix: str = "") -> list[str]:
    """Every dotted field name of a schema: ``["name", ..., "train.lr", ...]``."""
    out = []
    for name, hint in typing.get_type_hints(cls).items():
        out += (
            _fields(hint, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else [prefix + name]
        )
    return out
