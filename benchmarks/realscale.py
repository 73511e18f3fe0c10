"""Proof at real scale: the product adapters' full-size architectures, built from their
published configs with random bf16 weights (nothing downloaded), on one GPU.

    python benchmarks/realscale.py [--out realscale.json]   # CUDA; < 8 min on an H200
    python benchmarks/realscale.py --only sd35_medium f5_v1_base
    python benchmarks/realscale.py --smoke                  # tiny sizes, CPU: same code path

Per model (SD3.5-medium, FLUX.1-dev, Wan2.1-T2V-1.3B, F5-TTS v1 Base), each in its own
process with its own timeout:

1. Size: the denoiser's config built on the meta device; its checkpoint's tensor count
   (parameters and saved buffers) against the model card's figure.
2. Rollout throughput: the adapter's rollout (ODE, the same noise) + decode against the
   stock diffusers pipeline call making the same samples (max |difference| reported),
   median of repeats in one process; for F5, its sampler against a plain Euler loop over
   the same velocity. Ratio = adapter / stock (target <= 1.05).
3. One Flow-GRPO iteration and one DiffusionNFT iteration with LoRA through the
   trainer, with the product config's memory controls, rollout batch and micro-batch
   (one rollout batch per iteration, few trained steps; the settings are in the JSON):
   seconds per phase, peak GPU memory, and on the first micro-batch the ratio (exactly
   1), the KL to the reference (0: LoRA's B starts at zero) and the rollout/training
   log-prob mismatch in bf16.

Then SD3.5-medium under FSDP2 (``accelerate launch --config_file
configs/accelerate/fsdp2.yaml --num_processes 1``): the LoRA Flow-GRPO iteration on the
sharded transformer (reference forward included) and, when memory allows, a full
fine-tuning iteration.

Prints one table and writes JSON (``--out``). ``--smoke`` builds the tiny test
pipelines instead and runs every step on the CPU, in this process, one repeat
(accelerate runs FSDP on GPUs only:
there the FSDP2 job goes through _fsdp_cpu.py, which opens that gate in one gloo
process); tests/test_benchmarks.py runs it so that this script cannot rot.

The models are declared in _realscale_models.py, step 2 is _realscale_throughput.py,
the table and its checks are _realscale_report.py.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _architectures import (  # noqa: E402
    checkpoint_size,
    f5_folder,
    full_pipeline,
    tiny_pipeline,
)
from _realscale_models import F5, MODELS, PROMPTS, SD35, SPEECH, Model  # noqa: E402
from _realscale_report import checks, table  # noqa: E402
from _realscale_throughput import sync, throughput  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------------- the steps


def mean_reward(media: Any, prompts: Any, metadata: Any) -> torch.Tensor:
    """A reward of any modality at no cost (the reward models are not the question)."""
    frames = getattr(media, "frames", getattr(media, "samples", media))
    return frames.float().flatten(1).abs().mean(1)


def declare(model: Model, source: Callable[[], Any]) -> None:
    """The policy (from ``source``: a pipeline in memory or an F5 folder) and the reward
    as components the trainer resolves by name (realscale_policy, realscale_reward)."""
    from alignflow.adapters.image.flux import load_flux_policy
    from alignflow.adapters.image.sd3 import load_sd3_policy
    from alignflow.adapters.speech.f5 import load_f5_policy
    from alignflow.adapters.video.wan import load_wan_policy
    from alignflow.sdk.components import component
    from alignflow.sdk.rewards import FunctionReward

    loader = {
        "sd35_medium": load_sd3_policy,
        "flux1_dev": load_flux_policy,
        "wan21_1_3b": load_wan_policy,
        "f5_v1_base": load_f5_policy,
    }[model.name]

    def realscale_policy(path: str = "", **kwargs: Any) -> Any:
        return loader(source(), **kwargs)

    def realscale_reward() -> FunctionReward:
        return FunctionReward(mean_reward)

    # declared again for each model (the same target: the newest one is the component)
    component("policy", "realscale_policy")(realscale_policy)
    component("reward", "realscale_reward")(realscale_reward)


def run_config(model: Model, smoke: bool, out: Path, *extra: str) -> Any:
    from alignflow.sdk.config import compose

    prompts = out.parent / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    data = [f"data.train={prompts}"]
    if model is F5:
        rows = [
            {"prompt": SPEECH, "ref_audio": "refs/slt_good_morning.wav", "ref_text": "good morning"}
        ]
        (out.parent / "speech.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
        data = [f"data.train={out.parent / 'speech.jsonl'}", "policy.vocoder=griffin_lim"]
        data.append("policy.vocoder_path=")
        data.append("policy.audio_root=${pkgfile:alignflow.modalities.speech,data}")
    nft = "algorithm=diffusion_nft" in extra  # the GRPO runs' algorithm.* do not apply
    overrides = [
        *model.experiment,
        *data,
        "data.eval=",
        "policy.name=realscale_policy",
        "policy.path=in-memory",
        *(f"~reward.{r}" for r in model.remove_rewards),
        "+reward.mean.name=realscale_reward",
        *(o for o in model.bench if not (nft and o.startswith("algorithm."))),
        *(model.smoke if smoke else ()),
        "train.mixed_precision=no" if smoke else "train.mixed_precision=bf16",
        *(("policy.dtype=float32",) if smoke else ()),
        f"output_dir={out}",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
        "logging.media=false",
        "checkpoint.every=0",
        "train.iterations=1",
        *extra,
    ]
    return compose("train", overrides)


def peak_gib(reset: bool = False) -> float:
    if not torch.cuda.is_available():
        return float("nan")
    torch.cuda.synchronize()
    value = torch.cuda.max_memory_allocated() / 2**30
    if reset:
        torch.cuda.reset_peak_memory_stats()
    return value


def one_iteration(cfg: Any, fsdp2_on_cpu: bool = False) -> dict[str, Any]:
    """A trainer iteration: phase seconds, peak memory, the first micro-batch's stats.
    ``fsdp2_on_cpu``: under FSDP2 in this CPU process (_fsdp_cpu.py)."""
    from alignflow.sdk.trainer import Trainer

    acc = None
    if fsdp2_on_cpu:
        from _fsdp_cpu import fsdp2_accelerator

        acc = fsdp2_accelerator(cfg)
    peak_gib(reset=True)
    start = time.perf_counter()
    tr = Trainer(cfg, accelerator=acc)
    built = time.perf_counter() - start
    at_rest = torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None
    first: dict[str, torch.Tensor] = {}
    loss = tr.algo.loss

    def recorded(*args: Any, **kwargs: Any) -> Any:
        out = loss(*args, **kwargs)
        if not first:
            first.update({k: v.detach().float().cpu() for k, v in out.stats.items()})
        return out

    tr.algo.loss = recorded
    try:
        m = tr.train_iteration(0)
    finally:
        tr.close()
    acc, sharded = tr.acc, _sharded(tr.policy.transformer)
    row = {
        "algorithm": cfg.algorithm["name"],
        "finetune": cfg.train.finetune,
        "distributed": str(acc.distributed_type).split(".")[-1],
        "fsdp2": bool(getattr(acc, "is_fsdp2", False)),
        "sharded_parameters": sharded,
        "build_s": built,
        "memory_at_rest_gib": at_rest,
        "peak_gib": peak_gib(),
        "nfe": m["train/nfe"],
        "samples": cfg.sample.group_size * cfg.sample.prompts_per_iteration,
        "settings": {
            "group_size": cfg.sample.group_size,
            "batch_size": cfg.sample.batch_size,
            "micro_batch_size": cfg.train.micro_batch_size,
            "num_steps": cfg.sample.num_steps,
            "trained_steps": m["train/trained_steps"],
        },
    }
    row |= {f"{k}_s": m[f"time/{k}"] for k in ("rollout", "reward", "train")}
    if "ratio" in first:
        row["first_ratio_min"], row["first_ratio_max"] = (
            float(first["ratio"].min()),
            float(first["ratio"].max()),
        )
    for k in ("kl_ref", "logprob_mismatch"):
        if k in first:
            row[f"first_{k}_max"] = float(first[k].abs().max())
    row["finite"] = all(bool(torch.isfinite(v).all()) for v in first.values())
    return row


def _sharded(module: torch.nn.Module) -> int:
    from torch.distributed.tensor import DTensor

    return sum(isinstance(p, DTensor) for p in module.parameters())


def renew_denoiser(pipe: Any) -> None:
    """A new random denoiser of the same config in place of one a trainer put LoRA into."""
    from alignflow.adapters.common import cast

    old = pipe.transformer
    cls, config, device, dtype = type(old), dict(old.config), old.device, old.dtype
    pipe.transformer = None
    del old
    _free()
    torch.manual_seed(1)
    with torch.device(device):
        pipe.transformer = cast(cls.from_config(config), dtype).eval()


def _free() -> None:
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()


def run_model(model: Model, smoke: bool, repeats: int, work: Path) -> dict[str, Any]:
    """Steps 1-3 of the module doc for one model; each step's failure is recorded and
    the next step still runs."""
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    row: dict[str, Any] = {"model": model.name, "title": model.title, "smoke": smoke}
    row["checkpoint_params_b"] = checkpoint_size(model.name)
    row["card_params_b"], row["card"] = model.card, model.card_source
    row["card_deviation"] = row["checkpoint_params_b"] / model.card - 1
    start = time.perf_counter()
    holder: dict[str, Any] = {}
    if model is F5:
        holder["source"] = f5_folder(work / "f5", smoke)
    else:
        holder["source"] = tiny_pipeline(model.name) if smoke else full_pipeline(model.name, device)
    sync()
    row["build_s"] = time.perf_counter() - start
    row["memory_after_build_gib"] = (
        torch.cuda.memory_allocated() / 2**30 if torch.cuda.is_available() else None
    )
    declare(model, lambda: holder["source"])
    steps = {
        "throughput": lambda: _throughput_step(model, smoke, repeats or model.repeats, work),
        "flow_grpo": lambda: one_iteration(run_config(model, smoke, work / "grpo")),
        "diffusion_nft": lambda: one_iteration(
            run_config(model, smoke, work / "nft", "algorithm=diffusion_nft", *model.nft)
        ),
    }
    for name, step in steps.items():
        if name == "diffusion_nft" and model is not F5:
            renew_denoiser(holder["source"])  # the GRPO run's LoRA is in the old one
        row[name] = _guarded(step)
        _free()
    return row


def _throughput_step(model: Model, smoke: bool, repeats: int, work: Path) -> dict[str, Any]:
    from alignflow.sdk.build import build_policy

    cfg = run_config(model, smoke, work / "throughput")
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    policy = build_policy(cfg, device)
    try:
        return throughput(model, policy, repeats, 2 if smoke else model.batch)
    finally:
        del policy


def _guarded(step: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    try:
        return step()
    except torch.cuda.OutOfMemoryError as e:
        return {"error": "out of memory", "detail": str(e).splitlines()[0][:300]}
    except Exception as e:  # recorded in the table; the other steps still run
        import traceback

        return {"error": f"{type(e).__name__}: {e}"[:500], "trace": traceback.format_exc()[-2000:]}


def run_fsdp2(smoke: bool, work: Path) -> dict[str, Any]:
    """SD3.5-medium's LoRA Flow-GRPO iteration and a full fine-tuning iteration in this
    process, which ``accelerate launch`` started with configs/accelerate/fsdp2.yaml."""
    holder = {"source": tiny_pipeline(SD35.name) if smoke else None}
    if not smoke:
        holder["source"] = full_pipeline(SD35.name, torch.device("cuda"))
    declare(SD35, lambda: holder["source"])
    row: dict[str, Any] = {
        "model": "sd35_medium_fsdp2",
        "title": "SD3.5-medium, FSDP2 (one process)",
    }
    row["lora"] = _guarded(
        lambda: one_iteration(run_config(SD35, smoke, work / "fsdp_lora"), fsdp2_on_cpu=smoke)
    )
    _free()
    renew_denoiser(holder["source"])
    # full fine-tuning: every transformer weight trains (float32 master weights,
    # sharded Adam state), a frozen copy is the KL reference
    full = run_config(SD35, smoke, work / "fsdp_full", "train.finetune=full", "train.lr=1e-5")
    row["full"] = _guarded(lambda: one_iteration(full, fsdp2_on_cpu=smoke))
    return row


# ---------------------------------------------------------------------- the driver


def run(name: str, smoke: bool, repeats: int) -> dict[str, Any]:
    """One model (or the FSDP2 job) in this process: its row."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if name == "fsdp2":
            row = run_fsdp2(smoke, work)
        else:
            row = run_model(MODELS[name], smoke, repeats, work)
    if torch.cuda.is_available():
        row["gpu"] = torch.cuda.get_device_name()
    return row | {"seconds": time.perf_counter() - start}


def child(args: argparse.Namespace) -> None:
    Path(args.row).write_text(json.dumps(run(args.child, args.smoke, args.repeats), indent=1))


def spawn(name: str, args: argparse.Namespace, timeout: float, work: Path) -> dict[str, Any]:
    """Run ``name`` as a child process with ``timeout``; its row, or what went wrong."""
    row_file = work / f"{name}.json"
    me = [str(Path(__file__).resolve()), "--child", name, "--row", str(row_file)]
    me += ["--repeats", str(args.repeats)] + (["--smoke"] if args.smoke else [])
    if name == "fsdp2" and not args.smoke:  # the launch file, as users run it
        launch = [sys.executable, "-m", "accelerate.commands.launch"]
        launch += ["--config_file", str(ROOT / "configs/accelerate/fsdp2.yaml")]
        cmd = launch + ["--num_processes", "1"] + me
    else:
        cmd = [sys.executable, *me]
    start = time.perf_counter()
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "HF_HUB_OFFLINE": "1"}
    try:
        proc = subprocess.run(cmd, timeout=timeout, capture_output=True, text=True, env=env)
    except subprocess.TimeoutExpired as e:
        tail = (e.stderr or b"")[-1500:]
        tail = tail.decode(errors="replace") if isinstance(tail, bytes) else tail
        return {"model": name, "error": f"timeout after {timeout:.0f} s", "trace": tail}
    seconds = time.perf_counter() - start
    if proc.returncode or not row_file.is_file():
        return {
            "model": name,
            "error": f"exit {proc.returncode}",
            "trace": (proc.stdout + proc.stderr)[-3000:],
        }
    return json.loads(row_file.read_text()) | {"seconds": seconds}  # with the start-up


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--smoke", action="store_true", help="tiny sizes on the CPU, in this process")
    ap.add_argument("--only", nargs="*", choices=[*MODELS, "fsdp2"], default=None)
    ap.add_argument("--out", default="realscale.json")
    ap.add_argument(
        "--repeats", type=int, default=0, help="timed rollouts of each kind (0: per model)"
    )
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--row", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        return child(args)
    if not args.smoke and not torch.cuda.is_available():
        sys.exit("realscale needs CUDA (or --smoke for the tiny sizes on the CPU)")
    names = args.only or [*MODELS, "fsdp2"]
    rows, start = [], time.perf_counter()
    if args.smoke:  # the FSDP2 job last: it switches this process's accelerate state
        names = sorted(names, key=lambda n: n == "fsdp2")
    with tempfile.TemporaryDirectory() as tmp:
        for name in names:
            if args.smoke:  # tiny: one process, no timeouts
                row = _guarded(functools.partial(run, name, True, args.repeats or 1))
                rows.append(row | {"model": row.get("model", name)})
            else:
                timeout = MODELS[name].timeout if name in MODELS else 90
                rows.append(spawn(name, args, timeout, Path(tmp)))
            print(f"{name}: {rows[-1].get('seconds', 0):.0f} s", flush=True)
    result = {
        "date": time.strftime("%Y-%m-%d"),
        "gpu": next((r["gpu"] for r in rows if "gpu" in r), "cpu"),
        "torch": torch.__version__,
        "seconds": time.perf_counter() - start,
        "rows": rows,
    }
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(f"\n{result['gpu']}, torch {torch.__version__}, {result['seconds']:.0f} s\n")
    print(table(rows))
    failed = [line for r in rows for line in checks(r, args.smoke)]
    print("\n" + "\n".join(failed or ["every check holds"]))
    if failed:
        sys.exit(1)


if __name__ == "__main__":
    main()
