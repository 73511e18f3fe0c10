"""A benchmark's grid: experiments x algorithms x seeds (x any other override axis),
each cell one training job with its own overrides and output folder.

``configs/benchmark/NAME.yaml`` fills :class:`BenchConfig`; :func:`plan` turns it into
:class:`Job` s and composes and validates every job's run config, so that a typo in the
fortieth job stops the benchmark before the first one starts.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass, field
from typing import Any

from alignflow.sdk.config.schema import option
from alignflow.sdk.errors import ConfigError

GOALS = ("max", "min")


@dataclass
class BenchConfig:
    name: str = option("bench", "benchmark name")
    output_dir: str = option("outputs/bench/${name}", "where the jobs, tables and report go")
    experiments: list[str] = option([], "experiment configs (configs/experiment) to run")
    algorithms: list[str] = option(
        [], "algorithm configs (configs/algorithm); empty = each experiment's own"
    )
    seeds: list[int] = option([0], "seeds of every (experiment, algorithm) cell")
    axes: dict[str, Any] = option(
        {}, "more grid axes, {override key: [values]}, e.g. {train.lr: [1.0e-4, 3.0e-4]}"
    )
    overrides: list[str] = option([], "overrides of every job")
    experiment_overrides: dict[str, Any] = option({}, "{experiment: [overrides of its jobs]}")
    algorithm_overrides: dict[str, Any] = option({}, "{algorithm: [overrides of its jobs]}")
    pair_overrides: dict[str, Any] = option(
        {}, "{experiment: {algorithm: [overrides]}}: what one algorithm needs on one experiment"
    )
    iterations: int = option(0, "iterations of every job (0 = each experiment's own)")
    seconds: float = option(
        0.0,
        "wall-clock budget of every job: its training seconds (train.max_seconds; 0 = none; "
        "the iterations still cap). The tables then compare each seed at its own last "
        "evaluation",
    )
    eval_every: int = option(
        0, "evaluate (and checkpoint, for resuming) every this many iterations (0 = at the end)"
    )
    metrics: dict[str, Any] = option(
        {},
        "{experiment: {key: eval/..._mean, goal: max|min, target: float}}: the held-out "
        "metric of the tables and the target of time-to-target (default: eval/reward_mean, max)",
    )
    baseline: str = option("", "the algorithm speed-ups are measured against ('' = none)")
    parallel: int = option(1, "jobs run at a time")
    procs: int = option(1, "processes per job (alignflow train --procs)")


@dataclass(frozen=True)
class Metric:
    key: str = "eval/reward_mean"
    goal: str = "max"
    target: float | None = None

    def better(self, value: float, than: float) -> bool:
        return value >= than if self.goal == "max" else value <= than


@dataclass
class Job:
    """One training run of the grid."""

    id: str
    experiment: str
    algorithm: str
    seed: int
    axes: dict[str, Any]
    overrides: list[str]
    """the run's overrides, output_dir included (resume settings are the runner's)"""
    modality: str = ""
    metric: Metric = field(default_factory=Metric)


def plan(cfg: BenchConfig, extra: list[str] = ()) -> list[Job]:
    """The jobs of ``cfg``, in grid order, each with its composed config checked
    (``extra``: overrides of every job from the command line)."""
    _check(cfg)
    algorithms = cfg.algorithms or [""]
    axes = list(cfg.axes.items())
    jobs = []
    for experiment, algorithm, seed, *values in itertools.product(
        cfg.experiments, algorithms, cfg.seeds, *(v for _, v in axes)
    ):
        chosen = {k: v for (k, _), v in zip(axes, values)}
        id_ = "_".join(
            [_slug(experiment), _slug(algorithm or "default"), f"seed{seed}"]
            + [f"{_slug(k)}={_slug(str(v))}" for k, v in chosen.items()]
        )
        overrides = [
            f"experiment={experiment}",
            *([f"algorithm={algorithm}"] if algorithm else []),
            f"seed={seed}",
            *cfg.overrides,
            *cfg.experiment_overrides.get(experiment, []),
            *cfg.algorithm_overrides.get(algorithm, []),
            *cfg.pair_overrides.get(experiment, {}).get(algorithm, []),
            *(f"{k}={_value(v)}" for k, v in chosen.items()),
            *extra,
            *([f"train.iterations={cfg.iterations}"] if cfg.iterations else []),
            *([f"train.max_seconds={cfg.seconds}"] if cfg.seconds else []),
            *(
                [f"eval.every={cfg.eval_every}", f"checkpoint.every={cfg.eval_every}"]
                if cfg.eval_every
                else []
            ),
            "logging.progress_bar=false",
            f"output_dir='{cfg.output_dir}/jobs/{id_}'",  # quoted: the id may hold '='
        ]
        run = checked_run(id_, overrides)
        if not run.data.eval:
            raise ConfigError(
                f"job {id_}: data.eval",
                run.data.eval,
                "a prompt file: a benchmark compares evaluations",
            )
        jobs.append(
            Job(
                id_,
                experiment,
                algorithm or run.algorithm["name"],
                seed,
                chosen,
                overrides,
                modality=_modality(run, id_),
                metric=_metric(cfg, experiment),
            )
        )
    return jobs


def checked_run(job: str, overrides: list[str]) -> Any:
    """The composed and validated run config of a job; errors name the job."""
    from alignflow.sdk.config import compose, validate

    try:
        run = compose("train", overrides)
        validate(run)
    except ConfigError as e:
        raise ConfigError(f"job {job}: {e.field}", e.value, e.accepted, e.hint) from e
    return run


def sweep(overrides: list[str]) -> tuple[str, list[Job]]:
    """Hydra's sweep syntax (``key=a,b``, ``key=range(0,3)``) -> (the folder of the sweep,
    ``<output_dir>/multirun`` of its first combination; a job per combination of the swept
    values in its ``jobs/<id>``, each composed and checked)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser

    try:
        parsed = OverridesParser.create().parse_overrides(overrides)
    except Exception as e:  # hydra's grammar errors come in several types
        raise ConfigError("overrides", overrides, "hydra override syntax", str(e)) from e
    axes = [
        (o.get_key_element(), list(o.sweep_string_iterator()))
        for o in parsed
        if o.is_sweep_override()
    ]
    if not axes:
        raise ConfigError("-m", overrides, "at least one swept key (key=a,b or key=range(a,b))")
    fixed = [text for text, o in zip(overrides, parsed) if not o.is_sweep_override()]
    combinations = list(itertools.product(*(v for _, v in axes)))
    ids = [
        "_".join(f"{_slug(k.lstrip('+~'))}={_slug(v)}" for (k, _), v in zip(axes, c))
        for c in combinations
    ]
    first = [f"{k}={v}" for (k, _), v in zip(axes, combinations[0])]
    output_dir = f"{checked_run(ids[0], [*fixed, *first]).output_dir}/multirun"
    jobs = []
    for id_, values in zip(ids, combinations):
        chosen = {k.lstrip("+~"): v for (k, _), v in zip(axes, values)}
        job = [
            *fixed,
            *(f"{k}={v}" for (k, _), v in zip(axes, values)),
            "logging.progress_bar=false",
            f"output_dir='{output_dir}/jobs/{id_}'",
        ]
        run = checked_run(id_, job)
        jobs.append(
            Job(id_, run.name, run.algorithm["name"], run.seed, chosen, job, _modality(run, id_))
        )
    return output_dir, jobs


def _check(cfg: BenchConfig) -> None:
    from alignflow.sdk.components import names

    def need(ok: bool, fld: str, value: Any, accepted: str) -> None:
        if not ok:
            raise ConfigError(fld, value, accepted)

    need(bool(cfg.experiments), "experiments", cfg.experiments, "at least one experiment")
    need(bool(cfg.seeds), "seeds", cfg.seeds, "at least one seed")
    need(
        len(set(cfg.seeds)) == len(cfg.seeds) and all(isinstance(s, int) for s in cfg.seeds),
        "seeds",
        cfg.seeds,
        "distinct ints",
    )
    known = set(available("experiment"))
    for e in cfg.experiments:
        need(
            e in known or _composes(f"experiment={e}"),
            "experiments",
            e,
            f"one of the experiment configs {sorted(known)}",
        )
    known_algorithms = set(available("algorithm")) | set(names("algorithm"))
    for a in cfg.algorithms:
        need(a in known_algorithms, "algorithms", a, f"one of {sorted(known_algorithms)}")
    for k, v in cfg.axes.items():
        need(
            isinstance(v, list) and len(v) > 0,
            f"axes.{k}",
            v,
            "a non-empty list of values (one job per value)",
        )
    # an entry for no experiment or algorithm is a typo, not a no-op (one for a cell that
    # the command line left out of the grid is fine: `experiments=[image_digits]`)
    experiments = known | set(cfg.experiments)
    for fld, entries, keys in (
        ("experiment_overrides", cfg.experiment_overrides, experiments),
        ("metrics", cfg.metrics, experiments),
        ("pair_overrides", cfg.pair_overrides, experiments),
        ("algorithm_overrides", cfg.algorithm_overrides, known_algorithms),
        *(
            (f"pair_overrides.{e}", cfg.pair_overrides[e], known_algorithms)
            for e in cfg.pair_overrides
            if isinstance(cfg.pair_overrides[e], dict)
        ),
    ):
        for k, v in entries.items():
            need(k in keys, f"{fld}.{k}", v, f"a name among {sorted(keys)}")
            if fld == "pair_overrides":
                need(isinstance(v, dict), f"{fld}.{k}", v, "{algorithm: [overrides]}")
            elif fld != "metrics":
                need(
                    isinstance(v, list) and all(isinstance(o, str) for o in v),
                    f"{fld}.{k}",
                    v,
                    "a list of overrides (key=value strings)",
                )
    need(
        isinstance(cfg.overrides, list) and all(isinstance(o, str) for o in cfg.overrides),
        "overrides",
        cfg.overrides,
        "a list of overrides (key=value strings)",
    )
    need(
        not cfg.baseline or cfg.baseline in cfg.algorithms,
        "baseline",
        cfg.baseline,
        f"one of algorithms {cfg.algorithms}",
    )
    need(cfg.iterations >= 0, "iterations", cfg.iterations, "an int >= 0")
    need(cfg.seconds >= 0, "seconds", cfg.seconds, "a float >= 0 (0 = no wall-clock budget)")
    need(cfg.eval_every >= 0, "eval_every", cfg.eval_every, "an int >= 0")
    need(cfg.parallel >= 1, "parallel", cfg.parallel, "an int >= 1")
    need(cfg.procs >= 1, "procs", cfg.procs, "an int >= 1")
    for e in cfg.experiments:
        _metric(cfg, e)


def _composes(override: str) -> bool:
    """Whether a config from elsewhere on the search path (a package that ships configs)
    is there."""
    from alignflow.sdk.config import compose

    try:
        compose("train", [override])
    except ConfigError:
        return False
    return True


def _metric(cfg: BenchConfig, experiment: str) -> Metric:
    spec = cfg.metrics.get(experiment, {})
    fld = f"metrics.{experiment}"
    if not isinstance(spec, dict) or set(spec) - {"key", "goal", "target"}:
        raise ConfigError(fld, spec, "a mapping with key, goal (max|min) and target")
    m = Metric(**spec)
    if not (isinstance(m.key, str) and m.key.startswith("eval/")):
        raise ConfigError(f"{fld}.key", m.key, "an evaluation metric, eval/<name>")
    if m.goal not in GOALS:
        raise ConfigError(f"{fld}.goal", m.goal, f"one of {GOALS}")
    if m.target is not None and not isinstance(m.target, (int, float)):
        raise ConfigError(f"{fld}.target", m.target, "a number")
    return m


def _modality(run: Any, job: str) -> str:
    """The media the job's rewards (and gold rewards) score: they must agree."""
    from alignflow.sdk.components import resolve
    from alignflow.sdk.config.schema import split_component

    found = {}
    for section in ("reward", "gold"):
        for term, spec in getattr(run, section).items():
            name, _ = split_component(spec, f"{section}.{term}")
            modality = getattr(resolve("reward", name, f"{section}.{term}.name"), "modality", None)
            if modality not in (None, "any"):
                found[f"{section}.{term}"] = modality
    if len(set(found.values())) > 1:
        raise ConfigError(
            f"job {job}: reward",
            found,
            "rewards that all score the same modality (the experiment's media)",
        )
    return next(iter(found.values()), "")


def available(group: str) -> list[str]:
    """The configs of a group on the search path (``experiment``, ``algorithm``)."""
    from hydra import initialize_config_module
    from hydra.core.global_hydra import GlobalHydra

    from alignflow.sdk.config.compose import register

    register()
    with initialize_config_module(config_module="alignflow.configs", version_base="1.3"):
        return sorted(GlobalHydra.instance().config_loader().get_group_options(group))


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-")


def _value(v: Any) -> str:
    return "[" + ",".join(map(str, v)) + "]" if isinstance(v, list) else str(v)
