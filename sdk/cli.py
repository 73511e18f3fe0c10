"""The ``alignflow`` command.

    alignflow train    experiment=image_digits [key=value ...]
    alignflow train -m experiment=image_digits seed=0,1,2    one run per swept value
    alignflow eval     experiment=image_digits checkpoint.resume=latest
    alignflow sample   experiment=image_digits checkpoint.resume=latest \
                       --prompt "a handwritten digit seven"
    alignflow sample   experiment=speech_tiny --prompt "the cat sat" \
                       --meta ref_audio=refs/awb_thank_you.wav --meta ref_text="thank you"
    alignflow pretrain experiment=image_digits
    alignflow bench    benchmark=cross_modal [seeds=[0]] [parallel=2] [--dry-run]
    alignflow report   OUTPUT_DIR [--to DEST [--per N]]      report.html of a run or benchmark
    alignflow export   OUTPUT_DIR --format diffusers-lora --out DIR [--checkpoint best]
    alignflow config   [--pretrain] experiment=...           print the composed config
    alignflow fields   [--pretrain | --algorithm NAME]       every field with its help
    alignflow serve-reward reward=ocr [reward.key=value ...] [--host 127.0.0.1] [--port 8765]
                       [token=T]                             serve a reward over HTTP (server.py)

Arguments after the sub-command are hydra overrides. ``--debug`` (or ALIGNFLOW_DEBUG=1)
shows the traceback behind an error line. Several processes: ``--procs N``
runs N local processes itself (torchrun; DDP, gloo on CPU), or run the same command
under ``accelerate launch`` with a file from configs/accelerate/ (DDP, FSDP2, DeepSpeed).
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import os
import sys
from pathlib import Path
from typing import Any

from alignflow.sdk.config import compose
from alignflow.sdk.errors import AlignflowError, ConfigError

log = logging.getLogger("alignflow")


def print_fields(cls: type, prefix: str = "") -> None:
    docs = _attribute_docs(cls)
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(f.type) or (
            isinstance(f.type, str) and f.type.endswith("Config")
        ):
            sub = f.default_factory if f.default_factory is not dataclasses.MISSING else None
            if sub is not None:
                print_fields(type(sub()), prefix + f.name + ".")
                continue
        default = f.default if f.default is not dataclasses.MISSING else f.default_factory()
        print(
            f"{prefix + f.name:32s} {default!r:24s} {f.metadata.get('help', docs.get(f.name, ''))}"
        )


def _attribute_docs(cls: type) -> dict[str, str]:
    """{field: the string literal under it} of a dataclass and its bases (the algorithm
    configs document their fields this way)."""
    import ast
    import inspect

    docs: dict[str, str] = {}
    for klass in reversed(cls.__mro__[:-1]):
        try:
            body = ast.parse(inspect.getsource(klass)).body[0].body
        except (OSError, TypeError, IndexError, AttributeError):
            continue
        for a, b in zip(body, body[1:]):
            if (
                isinstance(a, ast.AnnAssign)
                and isinstance(a.target, ast.Name)
                and isinstance(b, ast.Expr)
                and isinstance(b.value, ast.Constant)
                and isinstance(b.value.value, str)
            ):
                docs[a.target.id] = " ".join(b.value.value.split())
    return docs


def main(argv: list[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--debug",
        action="store_true",
        default=argparse.SUPPRESS,
        help="show the traceback of expected errors too (or set ALIGNFLOW_DEBUG=1)",
    )
    parser = argparse.ArgumentParser(
        prog="alignflow",
        description=__doc__,
        parents=[common],
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for name in ("train", "eval", "pretrain"):
        p = sub.add_parser(name, parents=[common])
        p.add_argument(
            "--procs",
            type=int,
            default=1,
            help="run N local processes (torchrun, DDP; gloo on CPU); else use `accelerate launch`",
        )
        if name == "train":
            p.add_argument(
                "-m",
                "--multirun",
                action="store_true",
                help="one run per combination of swept values (key=a,b; hydra's syntax), "
                "under <output_dir>/multirun; `alignflow bench` is the fuller way",
            )
        p.add_argument("overrides", nargs="*")
    p_sample = sub.add_parser("sample", parents=[common])
    p_sample.add_argument(
        "--prompt", action="append", default=[], help="prompt (repeatable); default: eval prompts"
    )
    p_sample.add_argument("--num", type=int, default=4, help="samples per prompt")
    p_sample.add_argument(
        "--meta",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a metadata column for every --prompt (repeatable), e.g. speech's "
        "--meta ref_audio=voice.wav --meta ref_text='what the voice says'",
    )
    p_sample.add_argument("overrides", nargs="*")
    p_bench = sub.add_parser(
        "bench",
        parents=[common],
        help="run a benchmark grid (configs/benchmark): one training job per cell, resumable",
    )
    p_bench.add_argument(
        "--dry-run", action="store_true", help="list the jobs and their overrides, run nothing"
    )
    p_bench.add_argument(
        "overrides",
        nargs="*",
        help="benchmark=NAME, then benchmark fields (seeds=[0], parallel=2) and overrides of "
        "every job (train.lr=1e-4)",
    )
    p_report = sub.add_parser(
        "report",
        parents=[common],
        help="write report.html of a run or benchmark folder (static, opens from disk)",
    )
    p_report.add_argument("folder", help="a run's output_dir or a benchmark's")
    p_report.add_argument(
        "--to",
        default=None,
        help="publish: a folder with the page and everything it shows (plots, gallery "
        "media, tables), and nothing else, to commit or send",
    )
    p_report.add_argument(
        "--per", type=int, default=8, help="gallery prompts per experiment (published pages)"
    )
    p_export = sub.add_parser(
        "export",
        parents=[common],
        help="write a run's trained weights in the format their users load (sdk/export.py)",
    )
    p_export.add_argument("run", help="the run's output_dir")
    p_export.add_argument(
        "--format",
        required=True,
        dest="fmt",
        help="diffusers-lora (SD3, FLUX, Wan), diffusers (LoRA merged; also the toys), f5-tts",
    )
    p_export.add_argument("--out", required=True, help="the folder to write")
    p_export.add_argument(
        "--checkpoint", default="latest", help="latest (default), best or an iteration"
    )
    p_export.add_argument(
        "--no-ema", action="store_true", help="the trained weights, not the EMA ones"
    )
    p_export.add_argument("--overwrite", action="store_true", help="replace what --out holds")
    p_config = sub.add_parser("config", parents=[common])
    p_config.add_argument(
        "--pretrain", action="store_true", help="the pretraining config instead of training's"
    )
    p_config.add_argument("overrides", nargs="*")
    p_serve = sub.add_parser(
        "serve-reward",
        parents=[common],
        help="serve a reward for `reward=remote` (rewards/remote.py)",
    )
    p_serve.add_argument(
        "--host", default="127.0.0.1", help="interface to bind (default: this machine only)"
    )
    p_serve.add_argument("--port", type=int, default=8765, help="0 = any free port (printed)")
    p_serve.add_argument("--max-mb", type=float, default=64.0, help="largest request body accepted")
    p_serve.add_argument(
        "--token",
        default=None,
        help="require 'Authorization: Bearer TOKEN' (or token=TOKEN; default: the "
        "ALIGNFLOW_REWARD_TOKEN environment variable, which keeps it out of `ps`; none if unset)",
    )
    p_serve.add_argument(
        "overrides", nargs="*", help="reward=NAME (a configs/reward file), then reward.key=value"
    )
    p_fields = sub.add_parser("fields", parents=[common])
    p_fields.add_argument(
        "--pretrain", action="store_true", help="the pretraining fields instead of training's"
    )
    p_fields.add_argument(
        "--algorithm", default=None, help="the options of algorithm NAME (algorithm.*)"
    )
    args = parser.parse_args(argv)
    debug = getattr(args, "debug", False) or os.environ.get("ALIGNFLOW_DEBUG", "0") not in ("", "0")
    if "ALIGNFLOW_LAUNCHER_PID" in os.environ:  # started by `--procs N` or by `alignflow bench`
        _stop_when_orphaned(int(os.environ["ALIGNFLOW_LAUNCHER_PID"]))
    # -m: composed here, once; each run is its own process, launched with --procs itself
    multirun = getattr(args, "multirun", False)
    if getattr(args, "procs", 1) > 1 and "LOCAL_RANK" not in os.environ and not multirun:
        return _launch(args.procs, [args.command, *args.overrides])
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        return _run(args)
    except (Exception, KeyboardInterrupt) as e:
        code, line = explain(e)
        # an unexpected error is a bug: its traceback is what a developer needs
        if debug or line is None:
            raise
        print(f"alignflow: {line}", file=sys.stderr)
        return code


def explain(e: BaseException) -> tuple[int, str | None]:
    """(exit code, one line) for an expected failure; (1, None) for anything else."""
    import errno

    from alignflow.sdk.stopping import Stopped

    if isinstance(e, Stopped):
        return e.exit_code, f"stopped: {e}"
    if isinstance(e, AlignflowError):
        return 2, f"error: {e}"
    if isinstance(e, KeyboardInterrupt):
        return 130, "interrupted"
    if isinstance(e, OSError) and e.errno == errno.ENOSPC:
        return 1, (
            f"error: disk full while writing {e.filename or 'a file'}: free space there or set "
            "output_dir to another disk (the checkpoints already saved are intact)"
        )
    if isinstance(e, OSError) and e.errno in (errno.EACCES, errno.EROFS, errno.EPERM):
        return (
            1,
            f"error: cannot write {e.filename or 'a file'} ({e.strerror}): choose a writable "
            "output_dir",
        )
    # torch.OutOfMemoryError, without importing torch here
    if type(e).__name__ == "OutOfMemoryError":
        return 1, (
            "error: out of accelerator memory: lower sample.batch_size, train.micro_batch_size or "
            f"eval.batch_size ({str(e).splitlines()[0][:200]})"
        )
    return 1, None


def _stop_when_orphaned(launcher: int) -> None:
    """A worker of ``--procs N`` (or a job of ``alignflow bench``) whose launcher died
    (killed, its terminal closed) SIGTERMs itself, so that it stops as a pre-empted run
    does instead of writing on as an orphan."""
    import signal
    import threading
    import time

    def watch() -> None:
        while os.getppid() == launcher:
            time.sleep(0.5)
        os.kill(os.getpid(), signal.SIGTERM)

    if os.getppid() == launcher:
        threading.Thread(target=watch, daemon=True, name="orphan-watch").start()


def _launch(procs: int, argv: list[str]) -> int:
    """Re-run this command as ``procs`` local processes with torchrun (standalone
    rendezvous on a free port); each process gets an equal share of the CPU threads
    unless OMP_NUM_THREADS is set."""
    from torch.distributed.elastic.multiprocessing.errors import ChildFailedError
    from torch.distributed.run import main as torchrun

    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // procs)))
    os.environ["ALIGNFLOW_LAUNCHER_PID"] = str(os.getpid())  # the workers stop if this process dies
    try:
        torchrun(["--standalone", "--nproc_per_node", str(procs), "-m", "alignflow.sdk.cli", *argv])
    except ChildFailedError as e:
        codes = {rank: f.exitcode for rank, f in e.failures.items()}
        print(
            f"alignflow: error: processes {codes} exited with these codes (their own lines are "
            "above)",
            file=sys.stderr,
        )
        return max(codes.values(), default=1) if all(c > 0 for c in codes.values()) else 1
    return 0


def _run(args: argparse.Namespace) -> int:
    import json

    if args.command == "fields":
        from alignflow.sdk.config import RunConfig
        from alignflow.sdk.pretrain import PretrainConfig

        if args.algorithm:
            from alignflow.sdk.components import resolve

            print_fields(resolve("algorithm", args.algorithm, "--algorithm").Config, "algorithm.")
            return 0
        print_fields(PretrainConfig if args.pretrain else RunConfig)
        return 0
    if args.command == "config":
        from omegaconf import OmegaConf

        cfg = compose("pretrain" if args.pretrain else "train", args.overrides)
        # the algorithm's options as it will run them: its defaults and the config's values
        if not args.pretrain:
            from alignflow.sdk.components import resolve
            from alignflow.sdk.config import split_component

            name, options = split_component(cfg.algorithm, "algorithm")
            resolved = resolve("algorithm", name, "algorithm.name").config_from(options)
            cfg.algorithm = {"name": name, **dataclasses.asdict(resolved)}
        print(OmegaConf.to_yaml(cfg))
        return 0
    if args.command == "serve-reward":
        from alignflow.rewards.server import serve

        names = [o.split("=", 1)[1] for o in args.overrides if o.startswith("reward=")]
        if len(names) != 1:
            raise ConfigError(
                "reward", names or None, "one reward=NAME naming a configs/reward file"
            )
        # token=... as --token
        tokens = [o.split("=", 1)[1] for o in args.overrides if o.startswith("token=")]
        rest = [o for o in args.overrides if not o.startswith(("reward=", "token="))]
        serve(names[0], rest, args.host, args.port, args.max_mb, token=(tokens or [args.token])[-1])
        return 0
    if getattr(args, "multirun", False):
        from alignflow.sdk.bench import multirun

        multirun(args.overrides, procs=args.procs)
        return 0
    if args.command == "report":
        from alignflow.sdk.report_html import write_report_page

        print(f"written: {write_report_page(args.folder, args.to, args.per)}")
        return 0
    if args.command == "export":
        from alignflow.sdk.export import export

        out = export(
            args.run,
            args.out,
            args.fmt,
            args.checkpoint,
            ema=not args.no_ema,
            overwrite=args.overwrite,
        )
        print(f"written: {out} (how to load it: {out / 'README.md'})")
        return 0
    if args.command == "bench":
        from alignflow.sdk.bench import bench

        bench(args.overrides, dry_run=args.dry_run)
        return 0
    if args.command == "pretrain":
        from alignflow.sdk.pretrain import pretrain

        cfg = compose("pretrain", args.overrides)
        print(json.dumps(pretrain(cfg), indent=2))
        return 0

    from alignflow.sdk.trainer import Trainer

    cfg = compose("train", args.overrides)
    if args.command != "train":  # what can be refused before any model loads
        _check_evaluation(args, cfg)
    trainer = Trainer(cfg)
    try:
        return _command(args, cfg, trainer)
    finally:
        trainer.close()


def _check_evaluation(args: argparse.Namespace, cfg: Any) -> None:
    from alignflow.sdk.checkpoint import list_checkpoints

    if args.command == "eval" and not cfg.data.eval:
        raise ConfigError("data.eval", cfg.data.eval, "a prompt file to evaluate on")
    if cfg.checkpoint.resume == "latest" and not list_checkpoints(Path(cfg.output_dir)):
        raise ConfigError(
            "checkpoint.resume",
            "latest",
            f"a checkpoint in {cfg.output_dir} (there is none); "
            "leave checkpoint.resume empty to use the base model, or name a checkpoint folder",
        )
    bad = [m for m in getattr(args, "meta", []) if "=" not in m]
    if bad:
        raise ConfigError("--meta", bad[0], "KEY=VALUE")


def _command(args: argparse.Namespace, cfg: Any, trainer: Any) -> int:
    import json

    say = print if trainer.acc.is_main_process else (lambda *a, **k: None)
    if args.command == "train":
        summary = trainer.train()
        say(
            json.dumps(
                {k: summary[k] for k in ("iterations", "seconds", "before", "after")}, indent=2
            )
        )
        return 0
    if args.command == "eval":
        metrics = trainer.evaluate(name=f"eval-{trainer.iteration:05d}")
        say(json.dumps(metrics, indent=2))
        return 0
    from alignflow.sdk.data import PromptSet

    trainer.cfg.eval.samples_per_prompt = args.num
    meta = dict(m.split("=", 1) for m in args.meta)
    prompts = (
        PromptSet(list(args.prompt), [dict(meta) for _ in args.prompt]) if args.prompt else None
    )
    trainer.evaluate(prompts, score=False, name=f"sample-{trainer.iteration:05d}")
    say(
        "samples written to "
        f"{Path(cfg.output_dir) / 'samples' / f'sample-{trainer.iteration:05d}.png'}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
