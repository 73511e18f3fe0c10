"""The ``alignflow`` command.

    alignflow train    experiment=image_digits [key=value ...]
    alignflow eval     experiment=image_digits checkpoint.resume=latest
    alignflow sample   experiment=image_digits checkpoint.resume=latest --prompt "a handwritten digit seven"
    alignflow sample   experiment=speech_tiny --prompt "the cat sat" --meta ref_audio=refs/awb_thank_you.wav \
                       --meta ref_text="thank you"
    alignflow pretrain experiment=image_digits
    alignflow config   [--pretrain] experiment=...           print the composed config
    alignflow fields   [--pretrain]                          every field with its help
    alignflow serve-reward reward=ocr [reward.key=value ...] [--host 127.0.0.1] [--port 8765]
                                                             serve a reward over HTTP (rewards/remote.py)

Arguments after the sub-command are hydra overrides. Several processes: ``--procs N``
runs N local processes itself (torchrun; DDP, gloo on CPU), or run the same command
under ``accelerate launch`` with a file from configs/accelerate/ (DDP, FSDP2, DeepSpeed).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from importlib import resources
from pathlib import Path
from typing import Any

from alignflow.sdk.errors import AlignflowError, ConfigError

log = logging.getLogger("alignflow")


def _register() -> None:
    from hydra.core.config_store import ConfigStore
    from omegaconf import OmegaConf

    from alignflow.sdk.config import RunConfig
    from alignflow.sdk.pretrain import PretrainConfig

    cs = ConfigStore.instance()
    cs.store(name="train_schema", node=RunConfig)
    cs.store(name="pretrain_schema", node=PretrainConfig)
    if not OmegaConf.has_resolver("pkgfile"):
        # ${pkgfile:alignflow.modalities.image,data/digits_train.jsonl} -> an absolute path
        OmegaConf.register_new_resolver("pkgfile", lambda pkg, rel: str(resources.files(pkg) / rel))


def compose(kind: str, overrides: list[str]) -> Any:
    """The validated-by-type config dataclass (RunConfig or PretrainConfig)."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_module
    from hydra.errors import HydraException
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    _register()
    if kind == "pretrain":  # `experiment=` is the friendly name of the pretrain group
        overrides = [o.replace("experiment=", "pretrain_experiment=", 1) if o.startswith("experiment=") else o
                     for o in overrides]
    try:
        with initialize_config_module(config_module="alignflow.configs", version_base="1.3"):
            cfg = hydra_compose(config_name=kind, overrides=overrides)
        return OmegaConf.to_object(cfg)
    except OmegaConfBaseException as e:
        key = getattr(e, "full_key", None) or getattr(e, "key", None) or "?"
        raise ConfigError(str(key), getattr(e, "value", None), "a value of the field's type",
                          hint=str(e).splitlines()[0]) from e
    except HydraException as e:
        raise ConfigError("overrides", overrides, "existing config groups, options and keys",
                          hint=" ".join(str(e).split())) from e


def print_fields(cls: type, prefix: str = "") -> None:
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or (isinstance(f.type, str) and f.type.endswith("Config")):
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if sub is not None:
                print_fields(type(sub()), prefix + f.name + ".")
                continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        print(f"{prefix + f.name:32s} {default!r:24s} {f.metadata.get('help', '')}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="alignflow", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "eval", "pretrain"):
        p = sub.add_parser(name)
        p.add_argument("--procs", type=int, default=1,
                       help="run N local processes (torchrun, DDP; gloo on CPU); else use `accelerate launch`")
        p.add_argument("overrides", nargs="*")
    p_sample = sub.add_parser("sample")
    p_sample.add_argument("--prompt", action="append", default=[], help="prompt (repeatable); default: eval prompts")
    p_sample.add_argument("--num", type=int, default=4, help="samples per prompt")
    p_sample.add_argument("--meta", action="append", default=[], metavar="KEY=VALUE",
                          help="a metadata column for every --prompt (repeatable), e.g. speech's "
                               "--meta ref_audio=voice.wav --meta ref_text='what the voice says'")
    p_sample.add_argument("overrides", nargs="*")
    p_config = sub.add_parser("config")
    p_config.add_argument("--pretrain", action="store_true", help="the pretraining config instead of training's")
    p_config.add_argument("overrides", nargs="*")
    p_serve = sub.add_parser("serve-reward", help="serve a reward for `reward=remote` (rewards/remote.py)")
    p_serve.add_argument("--host", default="127.0.0.1", help="interface to bind (default: this machine only)")
    p_serve.add_argument("--port", type=int, default=8765, help="0 = any free port (printed)")
    p_serve.add_argument("--max-mb", type=float, default=64.0, help="largest request body accepted")
    p_serve.add_argument("overrides", nargs="*", help="reward=NAME (a configs/reward file), then reward.key=value")
    p_fields = sub.add_parser("fields")
    p_fields.add_argument("--pretrain", action="store_true", help="the pretraining fields instead of training's")
    args = parser.parse_args(argv)
    if getattr(args, "procs", 1) > 1 and "LOCAL_RANK" not in os.environ:
        return _launch(args.procs, [args.command, *args.overrides])
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return _run(args)
    except AlignflowError as e:
        print(f"alignflow: error: {e}", file=sys.stderr)
        return 2


def _launch(procs: int, argv: list[str]) -> int:
    """Re-run this command as ``procs`` local processes with torchrun (standalone
    rendezvous on a free port); each process gets an equal share of the CPU threads
    unless OMP_NUM_THREADS is set."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // procs)))
    try:
        torchrun(["--standalone", "--nproc_per_node", str(procs), "-m", "alignflow.sdk.cli", *argv])
    except ChildFailedError as e:
        print(f"alignflow: error: a process failed: {e}", file=sys.stderr)
        return 1
    return 0


def _run(args: argparse.Namespace) -> int:
    import json

    if args.command == "fields":
        from alignflow.sdk.config import RunConfig
        from alignflow.sdk.pretrain import PretrainConfig

        print_fields(PretrainConfig if args.pretrain else RunConfig)
        return 0
    if args.command == "config":
        from omegaconf import OmegaConf

        print(OmegaConf.to_yaml(compose("pretrain" if args.pretrain else "train", args.overrides)))
        return 0
    if args.command == "serve-reward":
        from alignflow.rewards.remote import serve

        names = [o.split("=", 1)[1] for o in args.overrides if o.startswith("reward=")]
        if len(names) != 1:
            raise ConfigError("reward", names or None, "one reward=NAME naming a configs/reward file")
        serve(names[0], [o for o in args.overrides if not o.startswith("reward=")], args.host, args.port, args.max_mb)
        return 0
    if args.command == "pretrain":
        from alignflow.sdk.pretrain import pretrain

        cfg = compose("pretrain", args.overrides)
        print(json.dumps(pretrain(cfg), indent=2))
        return 0

    from alignflow.sdk.trainer import Trainer

    cfg = compose("train", args.overrides)
    trainer = Trainer(cfg)
    say = print if trainer.acc.is_main_process else (lambda *a, **k: None)
    if args.command == "train":
        summary = trainer.train()
        say(json.dumps({k: summary[k] for k in ("iterations", "seconds", "before", "after")}, indent=2))
        return 0
    if args.command == "eval":
        if trainer.eval_set is None:
            raise ConfigError("data.eval", cfg.data.eval, "a prompt file to evaluate on")
        metrics = trainer.evaluate(name=f"eval-{trainer.iteration:05d}")
        say(json.dumps(metrics, indent=2))
        return 0
    from alignflow.sdk.data import PromptSet

    trainer.cfg.eval.samples_per_prompt = args.num
    bad = [m for m in args.meta if "=" not in m]
    if bad:
        raise ConfigError("--meta", bad[0], "KEY=VALUE")
    meta = dict(m.split("=", 1) for m in args.meta)
    prompts = PromptSet(list(args.prompt), [dict(meta) for _ in args.prompt]) if args.prompt else None
    trainer.evaluate(prompts, score=False, name=f"sample-{trainer.iteration:05d}")
    say(f"samples written to {Path(cfg.output_dir) / 'samples' / f'sample-{trainer.iteration:05d}.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
