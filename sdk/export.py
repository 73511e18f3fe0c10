"""``alignflow export``: the weights a run trained, in the formats their users load.

    alignflow export RUN_DIR --format FORMAT --out DIR [--checkpoint latest|best|N]
                     [--no-ema] [--overwrite]

Formats (what each adapter offers is its ``export_formats()``):

- ``diffusers-lora`` (SD3/SD3.5, FLUX.1, Wan 2.1): the LoRA as the pipeline class's own
  ``save_lora_weights`` writes it, loaded by the stock ``pipe.load_lora_weights(DIR)``;
- ``diffusers`` (the same, and the toy policies): the policy's folder in diffusers
  layout with the LoRA merged (or the full fine-tune's weights), loaded by
  ``from_pretrained(DIR)``;
- ``f5-tts`` (speech): the checkpoint as F5-TTS releases it, with its vocab file.

The checkpoint: ``latest`` (the newest that loads), ``best`` (the one at the evaluation
with the highest held-out reward, ``eval/reward_mean``) or ``N``. The EMA weights are
exported when the run kept them, unless ``--no-ema``. Every export writes ``README.md``,
a model card with the metadata block the hub reads: base model, algorithm, rewards,
the held-out metrics of the base and of that checkpoint, the reward curve, the run's
config and how to load it.

A bad format, checkpoint or ``--out`` is refused before any weights load. The export is
written into a temporary folder beside ``--out`` and renamed into place, so an earlier
export that ``--overwrite`` replaces is kept until the new one is complete.
"""

from __future__ import annotations

import json
import shutil
import tempfile
import typing
from dataclasses import asdict
from pathlib import Path
from typing import Any

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk.errors import CheckpointError, ConfigError

FORMATS = ("diffusers-lora", "diffusers", "f5-tts")
PIPELINE_TAGS = {"image": "text-to-image", "video": "text-to-video", "speech": "text-to-speech"}


def export(
    run_dir: str | Path,
    out: str | Path,
    fmt: str,
    checkpoint: str | int = "latest",
    *,
    ema: bool = True,
    overwrite: bool = False,
) -> Path:
    """Write checkpoint ``checkpoint`` of ``run_dir`` as ``fmt`` into ``out`` (see the
    module doc); returns ``out``."""
    from alignflow.sdk.api import load_policy
    from alignflow.sdk.config import RunConfig, dataclass_from

    run_dir, out = Path(run_dir), Path(out)
    if fmt not in FORMATS:
        raise ConfigError("export --format", fmt, f"one of {list(FORMATS)}")
    if out.exists() and (not out.is_dir() or any(out.iterdir())) and not overwrite:
        raise ConfigError("export --out", str(out), "a new or empty folder, or --overwrite")
    path = _checkpoint_path(run_dir, checkpoint)
    try:  # the run's config, to refuse a format before the weights load (they are checked then)
        saved = json.loads((path / "trainer_state.json").read_text())["config"]
    except (OSError, ValueError, KeyError, TypeError) as e:
        raise CheckpointError(f"{path}: trainer_state.json has no readable run config ({e})") from e
    cfg = dataclass_from(RunConfig, saved, "config")
    offered = _class_formats(cfg)
    if offered is not None and fmt not in offered:
        raise ConfigError("export --format", fmt, f"one of {list(offered)} for {_policy(cfg)}")

    trained = load_policy(run_dir, path, ema=ema, device="cpu")
    if fmt not in trained.policy.export_formats():
        raise ConfigError(
            "export --format",
            fmt,
            f"one of {list(trained.policy.export_formats())} for {_policy(cfg)}",
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{out.name}.tmp-", dir=out.parent))
    work.chmod(0o755)  # mkdtemp's 0700 would keep a model folder from its other users
    try:
        load = trained.policy.export(fmt, work)
        load = load.replace(str(work), str(out))
        _write_card(work, run_dir, cfg, trained, fmt, load)
        old = None
        if out.exists():
            old = out.with_name(f".{out.name}.old-{work.name.rsplit('-', 1)[-1]}")
            out.rename(old)
        work.rename(out)
        if old is not None:
            shutil.rmtree(old)
    except BaseException:
        shutil.rmtree(work, ignore_errors=True)
        raise
    return out


def _checkpoint_path(run_dir: Path, which: str | int) -> Path:
    """The folder of ``which``: ``latest``, ``best`` or an iteration (checked, not read)."""
    found = ckpt.list_checkpoints(run_dir)
    if not found:
        raise CheckpointError(f"{run_dir}: no checkpoint-N folder (is it a run folder?)")
    if which == "latest":
        return found[-1]
    if which == "best":
        return _best(run_dir, found)
    try:
        n = int(which)
    except (TypeError, ValueError):
        raise ConfigError("export --checkpoint", which, "latest, best or an iteration") from None
    path = run_dir / f"checkpoint-{n}"
    if path not in found:
        saved = [ckpt.iteration_of(p) for p in found]
        raise ConfigError("export --checkpoint", which, f"one of the saved iterations {saved}")
    return path


def _best(run_dir: Path, found: list[Path]) -> Path:
    from alignflow.sdk.tracking import read_metrics

    scores = {
        r["iteration"]: r["eval/reward_mean"]
        for r in read_metrics(run_dir)
        if isinstance(r.get("eval/reward_mean"), (int, float))
    }
    scored = [p for p in found if ckpt.iteration_of(p) in scores]
    if not scored:
        raise ConfigError(
            "export --checkpoint",
            "best",
            "a run evaluated at the iteration of a saved checkpoint (eval.every, "
            "checkpoint.every); or latest or an iteration",
        )
    return max(scored, key=lambda p: scores[ckpt.iteration_of(p)])


def _policy(cfg: Any) -> str:
    from alignflow.sdk.config import split_component

    return f"policy {split_component(cfg.policy, 'policy')[0]!r}"


def _class_formats(cfg: Any) -> tuple[str, ...] | None:
    """The formats of the class the policy builder says it returns (its annotation),
    without building it; None when it does not say."""
    from alignflow.sdk.components import resolve
    from alignflow.sdk.config import split_component

    builder = resolve("policy", split_component(cfg.policy, "policy")[0], "policy.name")
    try:
        cls = typing.get_type_hints(builder).get("return")
    except Exception:  # an annotation that does not resolve: decide after building
        return None
    formats = getattr(cls, "EXPORT_FORMATS", None)
    return tuple(formats) if formats is not None else None


def _write_card(folder: Path, run_dir: Path, cfg: Any, trained: Any, fmt: str, load: str) -> None:
    from huggingface_hub import ModelCardData

    from alignflow.sdk.config import split_component
    from alignflow.sdk.tracking import read_metrics

    policy_name, policy_args = split_component(cfg.policy, "policy")
    algorithm = split_component(cfg.algorithm, "algorithm")[0]
    base = policy_args.get("path") or f"{policy_name} (shipped with alignflow)"
    iteration = ckpt.iteration_of(trained.checkpoint)
    evals = {r["iteration"]: r for r in read_metrics(run_dir) if "eval/reward_mean" in r}
    before, after = evals.get(0, {}), evals.get(iteration)
    modality = trained.policy.modality
    hub_id = "/" in base and not base.startswith((".", "/", "~")) and not Path(base).exists()
    data = ModelCardData(
        base_model=base if hub_id else None,  # the hub links a model to its base by id
        library_name="f5-tts" if fmt == "f5-tts" else "diffusers",
        # an editing policy (it reads source media) is image-to-image on the hub
        pipeline_tag="image-to-image"
        if getattr(trained.policy, "sources", None) is not None and modality == "image"
        else PIPELINE_TAGS.get(modality),
        tags=["alignflow", algorithm, "lora" if fmt == "diffusers-lora" else fmt, modality],
    )
    lines = [
        "---",
        data.to_yaml(),
        "---",
        "",
        f"# {cfg.name}: {policy_name} aligned with {algorithm}",
        "",
        "Trained with alignflow (online RL of the Flow-GRPO family for flow-matching generators).",
        "",
        "| | |",
        "|---|---|",
        f"| base model | `{base}` |",
        f"| algorithm | `{algorithm}` |",
        "| rewards | " + ", ".join(f"`{k}` ({_describe(v)})" for k, v in cfg.reward.items()) + " |",
        f"| checkpoint | iteration {iteration} of {cfg.train.iterations} |",
        f"| weights | {'the EMA weights' if trained.ema else 'the trained weights (no EMA)'} |",
        f"| fine-tuning | {cfg.train.finetune} |",
        f"| format | `{fmt}` |",
        "",
        "## Held-out metrics",
        "",
    ]
    if after is None:
        lines.append(f"Not evaluated at iteration {iteration}.")
    else:
        lines += ["| metric | base | this checkpoint |", "|---|---|---|"]
        for k in sorted(k for k in after if k.startswith("eval/") and k.endswith("_mean")):
            lines.append(f"| {k[5:-5]} | {_num(before.get(k))} | {_num(after[k])} |")
    curve = run_dir / "reward_curve.png"
    if curve.is_file():
        shutil.copyfile(curve, folder / curve.name)
        lines += ["", "## Reward curve", "", f"![reward curve]({curve.name})"]
    lines += ["", "## Load it", "", "```python", load, "```", ""]
    lines += [
        "## The run's config",
        "",
        "```json",
        json.dumps(asdict(cfg), indent=1, default=str),
        "```",
        "",
    ]
    (folder / "README.md").write_text("\n".join(lines))


def _describe(term: Any) -> str:
    if isinstance(term, dict):
        return f"{term.get('name', '?')}, weight {term.get('weight', 1.0)}"
    return str(term)


def _num(v: Any) -> str:
    return f"{v:.4g}" if isinstance(v, (int, float)) else "-"
