"""A config can name declared components and nothing else: not a function of
alignflow's own, not the stdlib, however the path is spelt, through whatever route a
config has (component names, nested reward names, group options, resolvers, YAML
tags, ``_target_``)."""

import importlib
import inspect
import pkgutil
import re
from importlib.metadata import entry_points
from pathlib import Path

import pytest

from alignflow.sdk import components
from alignflow.sdk.cli import main
from alignflow.sdk.components import GROUP, KINDS, component, names, resolve
from alignflow.sdk.config import compose
from alignflow.sdk.errors import ConfigError
from tests.helpers import FAST

ROOT = Path(__file__).resolve().parents[2]


def _declared_targets() -> set[tuple[str, str]]:
    out = set()
    for ep in entry_points(group=GROUP):
        kind, _, _ = ep.name.partition(".")
        out.add((kind, ep.value))
    out |= {(k, d.target) for (k, _), d in components._DECORATED.items()}
    return out


def _every_callable_in_alignflow() -> list[str]:
    """``module:attr`` of every class and function defined in alignflow's modules."""
    found = []
    for top in ("alignflow.sdk", "alignflow.adapters", "alignflow.rewards", "alignflow.modalities"):
        pkg = importlib.import_module(top)
        for info in pkgutil.walk_packages(pkg.__path__, top + "."):
            module = importlib.import_module(info.name)
            for attr, obj in vars(module).items():
                if callable(obj) and getattr(obj, "__module__", None) == info.name:
                    found.append(f"{info.name}:{attr}")
    return found


def test_no_callable_of_alignflow_resolves_unless_declared():
    declared = _declared_targets()
    tried = refused = 0
    for path in _every_callable_in_alignflow():
        for kind in KINDS:
            for spelling in (path, path.replace(":", ".")):
                tried += 1
                if (kind, path) in declared:
                    assert resolve(kind, spelling) is not None
                    continue
                with pytest.raises(ConfigError, match=rf"^{kind}\.name = .*expected one of"):
                    resolve(kind, spelling)
                refused += 1
    assert tried > 3000 and refused > 0.9 * tried, (tried, refused)


@pytest.mark.parametrize(
    "path",
    [
        "os:system",
        "os.system",
        "subprocess:run",
        "builtins:eval",
        "builtins.exec",
        "importlib:import_module",
        "runpy:run_path",
        "pickle:loads",
        "alignflow.sdk.cli:main",
        "alignflow.sdk.cli:_launch",
        "alignflow.rewards.server:serve",
        "alignflow.sdk.components:component",
        "alignflow.sdk.config.compose:compose",
        "alignflow.sdk.pretrain:pretrain",
        "alignflow.sdk.trainer:Trainer",
        "tests.sdk.bad_rewards:Raises:x",
        "alignflow.rewards.remote:RemoteReward.__init__",
        "alignflow",
        ":",
        ".",
        "reward.remote",
    ],
)
def test_undeclared_or_malformed_paths_are_refused_for_every_kind(path):
    for kind in KINDS:
        with pytest.raises(ConfigError, match=rf"^{kind}\.name = "):
            resolve(kind, path)


def test_every_entry_point_of_alignflow_loads_and_is_a_component():
    eps = [ep for ep in entry_points(group=GROUP) if ep.value.startswith("alignflow.")]
    assert len(eps) >= 40
    for ep in eps:
        kind, _, name = ep.name.partition(".")
        assert kind in KINDS, ep.name
        assert name in names(kind)
        assert callable(resolve(kind, name)), ep.name


def test_sdk_names_no_adapter_reward_or_modality():
    """The declarations live in the packages' entry points, not in sdk/ (the CLI's
    serve-reward command is the one place that starts the reward server)."""
    pattern = re.compile(r"alignflow\.(adapters|rewards|modalities)\b")
    for path in (ROOT / "sdk").rglob("*.py"):
        for n, line in enumerate(path.read_text().splitlines(), 1):
            if (
                pattern.search(line)
                and not line.lstrip().startswith(("#", '"""', "``"))
                and "``" not in line
            ):
                assert (path.name, line.strip()) == (
                    "cli.py",
                    "from alignflow.rewards.server import serve",
                ), f"{path.relative_to(ROOT)}:{n}: {line.strip()}"


def test_the_decorator_declares_and_a_clash_is_refused(monkeypatch):
    # forgotten after the test
    monkeypatch.setattr(components, "_DECORATED", dict(components._DECORATED))

    @component("reward", "test_constant")
    class Constant:
        modality = "image"

    assert resolve("reward", "test_constant") is Constant
    assert (
        resolve(
            "reward",
            f"{__name__}:test_the_decorator_declares_and_a_clash_is_refused.<locals>.Constant",
        )
        is Constant
    )
    with pytest.raises(ConfigError, match="a name declared once"):
        component("reward", "test_constant")(type("Other", (), {}))
    with pytest.raises(ConfigError, match="policy.name = 'test_constant'"):
        resolve("policy", "test_constant")  # declared for another kind only


def test_plugins_come_from_the_environment_not_from_a_config(tmp_path):
    """ALIGNFLOW_PLUGINS is read by the process; a config cannot set it."""
    with pytest.raises(ConfigError, match="one of the keys|field"):
        compose("train", [*FAST, "+ALIGNFLOW_PLUGINS=os"])


# ------------------------------------------------------------------ chains through the CLI


CHAINS = {
    # the old registry's prefix-widening chain, then a server, then the CLI itself
    "policy.name=alignflow.sdk.registry:trust": "policy.name",
    "reward.digit.name=alignflow.rewards.server:serve": "reward.digit.name",
    "+gold.x.name=alignflow.sdk.cli:main": "gold.x.name",
    "algorithm.name=alignflow.sdk.components:component": "algorithm.name",
    "+reward.f.name=per_frame": None,  # declared: its nested reward is checked below
    # hydra's instantiate convention is data here, and an unknown argument
    "+policy._target_=os.system": "policy._target_",
    # group options that leave the search path
    "experiment=../../../../tmp/x": "experiment",
    "reward@reward.y=/etc/passwd": "reward",
    "policy=..": "policy",
    # resolvers
    "data.train=${pkgfile:antigravity,x}": "data.train",
    "data.train=${pkgfile:alignflow.configs,../../../etc/passwd}": "data.train",
    "data.train=${pkgfile:os,x}": "data.train",
    # hydra settings: a pkg:// search path imports its package; the rest would do nothing
    "hydra.searchpath=[pkg://antigravity]": "hydra.searchpath",
    "hydra.job.env_set={ALIGNFLOW_PLUGINS: os}": "hydra.job.env_set",
    "hydra/launcher=basic": "hydra/launcher",
    # keys the schema does not know, however they are added
    "+train.lrr=3e-4": "train.lrr",
    "+hydra_target=1": "hydra_target",
}


@pytest.mark.parametrize("override", [k for k, v in CHAINS.items() if v])
def test_each_route_is_refused_in_one_line_naming_the_key(tmp_path, override, capsys):
    assert main(["train", *FAST, f"output_dir={tmp_path}", override]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"alignflow: error: {CHAINS[override]}"), err
    assert len(err.splitlines()) == 1 and "Traceback" not in err
    assert not (tmp_path / "metrics.jsonl").exists()


def test_a_nested_reward_name_is_refused_too(tmp_path, capsys):
    """By the config check, before any model is built."""
    for nested in (
        ("+reward.f.name=per_frame", "+reward.f.reward={name: 'os:system'}"),
        ("+reward.f.name=pref_winrate", "+reward.f.judge={name: 'alignflow.sdk.cli:main'}"),
    ):
        code = main(["train", *FAST, f"output_dir={tmp_path}", "~reward.digit", *nested])
        err = capsys.readouterr().err
        assert (
            code == 2 and err.startswith("alignflow: error: reward.f.") and "Traceback" not in err
        ), err


def test_yaml_tags_that_construct_objects_are_refused(tmp_path, capsys):
    """An experiment YAML from another search path (the operator's hydra.searchpath)
    is read with the safe loader: a python tag is an error, not a call."""
    marker = tmp_path / "pwned"
    (tmp_path / "experiment").mkdir()
    (tmp_path / "experiment" / "evil.yaml").write_text(
        "# @package _global_\nseed: !!python/object/apply:os.system ['touch " + str(marker) + "']\n"
    )
    code = main(
        [
            "train",
            *FAST,
            f"output_dir={tmp_path / 'out'}",
            f"hydra.searchpath=[file://{tmp_path}]",
            "experiment=evil",
        ]
    )
    assert code == 2 and not marker.exists()
    assert "Traceback" not in capsys.readouterr().err


def test_serve_reward_refuses_a_config_outside_its_group(capsys):
    for name in ("../experiment/image_digits", "/etc/passwd", "ocr/../../train"):
        assert main(["serve-reward", f"reward={name}", "--port", "0"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("alignflow: error: reward = ") and "Traceback" not in err


def test_a_signature_of_a_declared_component_is_what_a_config_can_pass():
    """What a config may do with a declared component is call it with the keyword
    arguments its signature declares: no component takes a callable or a module."""
    for kind in ("policy", "reward", "dataset"):
        for name in names(kind):
            obj = resolve(kind, name)
            target = obj.__init__ if inspect.isclass(obj) else obj
            for p in inspect.signature(target).parameters.values():
                ann = str(p.annotation)
                assert "Callable" not in ann and "ModuleType" not in ann, (kind, name, p.name, ann)
