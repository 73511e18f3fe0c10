"""The run configuration's schema: dataclasses with help text, and validation.

The dataclasses are the schema (registered in hydra's ConfigStore as ``train_schema``);
YAML groups under ``configs/`` (policy, reward, algorithm, experiment) fill them in;
``alignflow train experiment=image_digits train.lr=3e-4`` composes and overrides.
Components are named, torchtune-style: ``policy: {name: pixel_sd3, <its arguments>}``,
``reward: {<term>: {name: digit_classifier, weight: 1.0, <its arguments>}}``,
``algorithm: {name: flow_grpo, <its config>}``.

:func:`validate` checks everything that can be checked without building a model
(types, ranges, component names, component arguments, files) and raises
:class:`~alignflow.sdk.errors.ConfigError` naming the field, the value and what is
accepted.
"""

from __future__ import annotations

import dataclasses
import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from alignflow.sdk.errors import ConfigError


def option(default: Any, help: str) -> Any:
    """A dataclass field with a default and a help text (shown by ``alignflow fields``)."""
    if isinstance(default, (list, dict)):
        return field(default_factory=lambda: type(default)(default), metadata={"help": help})
    return field(default=default, metadata={"help": help})


@dataclass
class SampleConfig:
    num_steps: int = option(10, "denoising steps of a training rollout (N)")
    guidance: float = option(
        1.0, "classifier-free guidance scale w used in rollouts and training (1 = off)"
    )
    group_size: int = option(
        8, "G: samples per prompt; a group is the unit of the advantage statistics"
    )
    prompts_per_iteration: int = option(8, "prompts per iteration over all processes")
    batch_size: int = option(
        32,
        "samples per rollout forward on each process; whole groups, so a multiple of "
        "group_size. Rewards of one batch are computed while the next is sampled",
    )


@dataclass
class OptimConfig:
    iterations: int = option(100, "training iterations (rollout + update)")
    max_seconds: float = option(
        0.0,
        "wall-clock budget: end the run (evaluated, saved, reported as at its last "
        "iteration) once its iterations' rollout, reward and update seconds sum to this, "
        "a resumed run's earlier iterations included (0 = none; train.iterations still caps; "
        "how many iterations that is depends on the machine)",
    )
    lr: float = option(1e-4, "AdamW learning rate")
    weight_decay: float = option(1e-4, "AdamW weight decay")
    betas: list[float] = option([0.9, 0.999], "AdamW betas")
    adam_eps: float = option(1e-8, "AdamW epsilon")
    max_grad_norm: float = option(1.0, "gradient clipping norm (0 = off)")
    inner_epochs: int = option(1, "passes over one iteration's transitions")
    micro_batch_size: int = option(32, "transitions (sample x trained step) per forward/backward")
    optimizer_steps: int = option(
        1,
        "optimizer steps per inner epoch: the epoch's transitions are split into this "
        "many gradient-accumulation windows",
    )
    finetune: str = option(
        "lora",
        "'lora' (peft adapters; reference = adapters off) or 'full' (reference = frozen copy)",
    )
    lora_rank: int = option(8, "LoRA rank r")
    lora_alpha: float = option(16.0, "LoRA alpha (scale alpha / r)")
    lora_targets: list[str] = option(
        [], "layer names LoRA adapts; empty = the adapter's default_lora_targets"
    )
    ema_decay: float = option(
        0.0, "EMA decay of the trained weights used for evaluation (0 = no EMA)"
    )
    mixed_precision: str = option("no", "'no', 'fp16' or 'bf16' autocast (log-probs stay float32)")
    reward_failures: str = option(
        "drop",
        "what a NaN score or a failed reward call (raised, timed out, inf) does: "
        "'drop' (leave the samples out of their groups, count and log them) or "
        "'error' (stop the run)",
    )
    reward_timeout: float = option(
        0.0, "seconds one reward call may take before it counts as failed (0 = no limit)"
    )
    reward_max_failures: int = option(
        10, "with reward_failures=drop, stop the run after this many failed reward calls"
    )


@dataclass
class DataConfig:
    train: str = option(
        "", "training prompts: .txt/.jsonl/.json/.csv/.parquet file or saved dataset folder"
    )
    eval: str = option("", "evaluation prompts (same formats); empty = no evaluation")
    prompt_column: str = option(
        "prompt", "column holding the prompt; other columns reach rewards as metadata"
    )


@dataclass
class EvalConfig:
    every: int = option(
        10, "evaluate every this many iterations (0 = only before and after training)"
    )
    num_steps: int = option(20, "ODE steps of evaluation sampling")
    guidance: float = option(1.0, "guidance scale at evaluation")
    samples_per_prompt: int = option(4, "fixed seeds per evaluation prompt")
    batch_size: int = option(64, "samples per evaluation forward")
    seed: int = option(
        20250505, "seed of the evaluation noise, fixed across runs so evaluations compare"
    )


@dataclass
class CheckpointConfig:
    every: int = option(0, "save every this many iterations (0 = only at the end)")
    keep_last: int = option(
        2,
        "checkpoints kept; older ones of this run that verify are deleted (never one "
        "that does not load, or another run's)",
    )
    resume: str = option(
        "",
        "'' or 'none' (start fresh), 'latest' (the newest checkpoint in output_dir that "
        "loads; fresh if there is none; an error if none of them loads) or a checkpoint path",
    )
    overwrite: bool = option(
        False,
        "let a fresh run start in an output_dir holding an earlier run's checkpoints "
        "(they are deleted); without it such a run stops before doing anything",
    )
    allow_config_change: bool = option(
        False,
        "resume even though fields that change the numbers (seed, lr, group "
        "size, prompts...) differ from the checkpoint's; logged in summary.json",
    )
    stop_grace: float = option(
        120.0,
        "seconds a run may take after SIGTERM/SIGINT/SIGHUP to finish or abandon the "
        "iteration and save a checkpoint; past them it exits without one",
    )


@dataclass
class LoggingConfig:
    progress_bar: bool = option(True, "tqdm progress bar with the reward")
    tensorboard: bool = option(True, "write TensorBoard events to <output_dir>/logs")
    wandb: bool = option(False, "log to Weights & Biases (needs wandb installed and configured)")
    project: str = option("alignflow", "tracker project name")
    media: bool = option(
        True, "write evaluation sample grids, a before/after comparison and the reward curve"
    )


@dataclass
class RunConfig:
    name: str = option("run", "run name")
    seed: int = option(0, "seed of everything random in the run")
    output_dir: str = option("outputs/${name}", "where metrics, samples and checkpoints go")
    policy: dict[str, Any] = option(
        {"name": "???"}, "the policy: {name: <registered name or dotted path>, <arguments>}"
    )
    reward: dict[str, Any] = option(
        {}, "reward terms: {<term>: {name: ..., weight: 1.0, <arguments>}}"
    )
    algorithm: dict[str, Any] = option(
        {"name": "flow_grpo"}, "the algorithm: {name: ..., <its config>}"
    )
    gold: dict[str, Any] = option(
        {},
        "held-out rewards, logged as gold/<term> but never optimised (a reward that "
        "rises while gold falls is being hacked): {<term>: {name: ..., <arguments>}}",
    )
    sample: SampleConfig = field(default_factory=SampleConfig)
    train: OptimConfig = field(default_factory=OptimConfig)
    data: DataConfig = field(default_factory=DataConfig)
    eval: EvalConfig = field(default_factory=EvalConfig)
    checkpoint: CheckpointConfig = field(default_factory=CheckpointConfig)
    logging: LoggingConfig = field(default_factory=LoggingConfig)


# ----------------------------------------------------------------------------- checks


def _need(ok: bool, fld: str, value: Any, accepted: str) -> None:
    if not ok:
        raise ConfigError(fld, value, accepted)


def split_component(spec: dict[str, Any], fld: str) -> tuple[str, dict[str, Any]]:
    """``{name: x, a: 1}`` -> ("x", {"a": 1})."""
    if not isinstance(spec, dict) or "name" not in spec:
        raise ConfigError(fld, spec, "a mapping with a 'name' key")
    args = {k: v for k, v in spec.items() if k != "name"}
    return spec["name"], args


def check_arguments(fn: Any, args: dict[str, Any], fld: str) -> None:
    """Unknown keyword arguments and simple type mismatches, before anything is built."""
    target = fn.__init__ if inspect.isclass(fn) else fn
    params = {n: p for n, p in inspect.signature(target).parameters.items() if n != "self"}
    if any(p.kind is p.VAR_KEYWORD for p in params.values()):
        return
    accepted = [n for n, p in params.items() if p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)]
    for key, value in args.items():
        if key not in accepted:
            raise ConfigError(f"{fld}.{key}", value, f"one of the arguments {accepted}")
        ann = params[key].annotation
        kind = {"int": int, "float": (int, float), "str": str, "bool": bool}.get(
            ann if isinstance(ann, str) else getattr(ann, "__name__", "")
        )
        if (
            kind is not None
            and value is not None
            and (not isinstance(value, kind) or (kind is int and isinstance(value, bool)))
        ):
            raise ConfigError(
                f"{fld}.{key}",
                value,
                f"a value of type {ann if isinstance(ann, str) else ann.__name__}",
            )
    missing = [
        n
        for n, p in params.items()
        if p.default is p.empty and p.kind is not p.VAR_POSITIONAL and n not in args
    ]
    if missing:
        raise ConfigError(f"{fld}", args, f"values for the required arguments {missing}")


def validate(cfg: RunConfig) -> None:
    """Everything that can be wrong without building a model, in one pass."""
    from alignflow.sdk.components import builder, resolve

    s, t, e, c = cfg.sample, cfg.train, cfg.eval, cfg.checkpoint
    _need(s.num_steps >= 2, "sample.num_steps", s.num_steps, "an int >= 2")
    _need(
        s.group_size >= 2,
        "sample.group_size",
        s.group_size,
        "an int >= 2 (a group needs two samples to compare)",
    )
    _need(
        s.prompts_per_iteration >= 1,
        "sample.prompts_per_iteration",
        s.prompts_per_iteration,
        "an int >= 1",
    )
    _need(s.guidance > 0, "sample.guidance", s.guidance, "a float > 0 (1 = no guidance)")
    _need(
        s.batch_size >= s.group_size and s.batch_size % s.group_size == 0,
        "sample.batch_size",
        s.batch_size,
        f"a positive multiple of sample.group_size = {s.group_size}",
    )
    _need(t.iterations >= 0, "train.iterations", t.iterations, "an int >= 0")
    _need(t.max_seconds >= 0, "train.max_seconds", t.max_seconds, "a float >= 0 (0 = no budget)")
    _need(t.lr > 0, "train.lr", t.lr, "a float > 0")
    _need(
        len(t.betas) == 2 and all(0 <= b < 1 for b in t.betas),
        "train.betas",
        t.betas,
        "two floats in [0, 1)",
    )
    _need(t.weight_decay >= 0, "train.weight_decay", t.weight_decay, "a float >= 0")
    _need(
        t.max_grad_norm >= 0,
        "train.max_grad_norm",
        t.max_grad_norm,
        "a float >= 0 (0 = no clipping)",
    )
    _need(t.inner_epochs >= 1, "train.inner_epochs", t.inner_epochs, "an int >= 1")
    _need(t.micro_batch_size >= 1, "train.micro_batch_size", t.micro_batch_size, "an int >= 1")
    _need(t.optimizer_steps >= 1, "train.optimizer_steps", t.optimizer_steps, "an int >= 1")
    _need(t.finetune in ("lora", "full"), "train.finetune", t.finetune, "'lora' or 'full'")
    _need(t.lora_rank >= 1, "train.lora_rank", t.lora_rank, "an int >= 1")
    _need(0 <= t.ema_decay < 1, "train.ema_decay", t.ema_decay, "a float in [0, 1) (0 = off)")
    _need(
        t.mixed_precision in ("no", "fp16", "bf16"),
        "train.mixed_precision",
        t.mixed_precision,
        "'no', 'fp16' or 'bf16'",
    )
    _need(
        t.reward_failures in ("drop", "error"),
        "train.reward_failures",
        t.reward_failures,
        "'drop' or 'error'",
    )
    _need(
        t.reward_timeout >= 0,
        "train.reward_timeout",
        t.reward_timeout,
        "seconds >= 0 (0 = no limit)",
    )
    _need(
        t.reward_max_failures >= 0,
        "train.reward_max_failures",
        t.reward_max_failures,
        "an int >= 0",
    )
    _need(e.every >= 0, "eval.every", e.every, "an int >= 0")
    _need(e.num_steps >= 1, "eval.num_steps", e.num_steps, "an int >= 1")
    _need(e.samples_per_prompt >= 1, "eval.samples_per_prompt", e.samples_per_prompt, "an int >= 1")
    _need(e.batch_size >= 1, "eval.batch_size", e.batch_size, "an int >= 1")
    _need(c.every >= 0, "checkpoint.every", c.every, "an int >= 0")
    _need(c.keep_last >= 1, "checkpoint.keep_last", c.keep_last, "an int >= 1")
    _need(bool(cfg.output_dir), "output_dir", cfg.output_dir, "a folder path")
    if cfg.logging.wandb:
        import importlib.util

        _need(
            importlib.util.find_spec("wandb") is not None,
            "logging.wandb",
            True,
            "false, or wandb installed (pip install wandb) and logged in",
        )

    for fld, path in (("data.train", cfg.data.train), ("data.eval", cfg.data.eval)):
        if fld == "data.train" or path:
            _need(bool(path), fld, path, "a prompt file or a saved dataset folder")
            _need(Path(path).expanduser().exists(), fld, path, "an existing prompt file or folder")
    _need(c.stop_grace > 0, "checkpoint.stop_grace", c.stop_grace, "seconds > 0")
    if c.resume not in ("", "none", "latest"):
        _need(
            Path(c.resume).expanduser().is_dir(),
            "checkpoint.resume",
            c.resume,
            "'', 'none', 'latest' or the path of a checkpoint folder",
        )

    name, args = split_component(cfg.policy, "policy")
    check_arguments(builder("policy", name, "policy.name"), args, "policy")

    _need(
        isinstance(cfg.reward, dict) and len(cfg.reward) > 0,
        "reward",
        cfg.reward,
        "at least one term {<term>: {name: ..., weight: ...}}",
    )
    for term, spec in cfg.reward.items():
        rname, rargs = split_component(spec, f"reward.{term}")
        weight = rargs.pop("weight", 1.0)
        _need(
            isinstance(weight, (int, float)) and not isinstance(weight, bool),
            f"reward.{term}.weight",
            weight,
            "a number",
        )
        check_reward(rname, rargs, f"reward.{term}")

    for term, spec in cfg.gold.items():
        gname, gargs = split_component(spec, f"gold.{term}")
        gargs.pop("weight", None)
        check_reward(gname, gargs, f"gold.{term}")

    aname, aargs = split_component(cfg.algorithm, "algorithm")
    algo_cls = resolve("algorithm", aname, "algorithm.name")
    algo_cls.config_from(aargs)  # raises ConfigError on unknown keys, bad types, bad ranges


def check_reward(name: str, args: dict[str, Any], fld: str) -> None:
    """A reward's name and arguments, and those of the rewards it wraps: an argument that
    is a mapping with a ``name`` (``per_frame``'s ``reward``, ``pref_winrate``'s ``judge``)
    names a reward too, checked here before anything is built."""
    from alignflow.sdk.components import builder

    check_arguments(builder("reward", name, f"{fld}.name"), args, fld)
    for key, value in args.items():
        if isinstance(value, dict) and "name" in value:
            inner, inner_args = split_component(value, f"{fld}.{key}")
            check_reward(inner, inner_args, f"{fld}.{key}")


def reward_terms(
    cfg: RunConfig, key: str = "reward"
) -> dict[str, tuple[str, float, dict[str, Any]]]:
    """{term: (name, weight, arguments)} from ``cfg.reward`` (or ``cfg.gold``)."""
    out = {}
    for term, spec in getattr(cfg, key).items():
        name, args = split_component(spec, f"{key}.{term}")
        weight = float(args.pop("weight", 1.0))
        out[term] = (name, weight, args)
    return out


def dataclass_from(cls: type, values: dict[str, Any], fld: str) -> Any:
    """Build config dataclass ``cls`` from a dict with OmegaConf's type checking;
    unknown keys and values of the wrong type raise :class:`ConfigError`."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    known = [f.name for f in dataclasses.fields(cls)]
    for key in values:
        if key not in known:
            raise ConfigError(f"{fld}.{key}", values[key], f"one of the keys {known}")
    try:
        merged = OmegaConf.merge(OmegaConf.structured(cls), values)
        return OmegaConf.to_object(merged)
    except OmegaConfBaseException as e:
        key = getattr(e, "key", None) or "?"
        ftype = {f.name: f.type for f in dataclasses.fields(cls)}.get(key, "?")
        raise ConfigError(
            f"{fld}.{key}", values.get(key), f"a value of type {ftype}", hint=str(e).splitlines()[0]
        ) from e
