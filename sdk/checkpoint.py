"""Checkpoints that a kill cannot corrupt, and exact resume.

Layout (diffusers' naming)::

    <output_dir>/checkpoint-<iteration>/
        trained.safetensors     what is trained (LoRA weights or the full denoiser)
        ema.safetensors         EMA shadow (when EMA is on)
        optimizer.pt            optimizer state (tensors and numbers only)
        rng.pt                  torch RNG states
        trainer_state.json      iteration, seed, counters, the run's config
        manifest.json           size and sha256 of every file above, written last

A checkpoint is written into a temporary folder next to its final place, flushed to
disk, then renamed: a folder named ``checkpoint-N`` is always complete. Loading
checks the manifest; ``resume=latest`` takes the newest checkpoint that passes and
warns about any newer one that does not. Everything is read with safetensors or
``torch.load(weights_only=True)``: a checkpoint cannot run code.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.errors import CheckpointError

log = logging.getLogger(__name__)
_NAME = re.compile(r"^checkpoint-(\d+)$")


@dataclass
class Checkpoint:
    path: Path
    trained: dict[str, torch.Tensor]
    ema: dict[str, torch.Tensor] | None
    algorithm: dict[str, torch.Tensor] | None
    optimizer: dict[str, Any]
    rng: dict[str, Any]
    state: dict[str, Any]

    @property
    def iteration(self) -> int:
        return int(self.state["iteration"])


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(
    output_dir: Path,
    iteration: int,
    *,
    trained: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    algorithm: dict[str, torch.Tensor] | None = None,
    keep_last: int = 2,
) -> Path:
    """Write ``checkpoint-<iteration>`` atomically and delete all but the newest
    ``keep_last`` complete checkpoints. Call on the main process only."""
    from safetensors.torch import save_file

    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{iteration}"
    tmp = output_dir / f".checkpoint-{iteration}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file({k: v.detach().contiguous().cpu() for k, v in trained.items()}, tmp / "trained.safetensors")
        _failpoint("checkpoint.write", iteration)
        for name, tensors in (("ema", ema), ("algorithm", algorithm)):
            if tensors is not None:
                save_file({k: v.detach().contiguous().cpu() for k, v in tensors.items()}, tmp / f"{name}.safetensors")
        torch.save(optimizer, tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(json.dumps({**state, "iteration": iteration}, indent=2, default=str))
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            _fsync(tmp / name)
        manifest = {"format": 1, "iteration": iteration,
                    "files": {n: {"size": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in files}}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        _fsync(tmp / "manifest.json")
        if final.exists():  # re-saving an iteration (e.g. after a resume): swap, then delete the old one
            old = output_dir / f".checkpoint-{iteration}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        _fsync(output_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)  # a failed save (disk full...) leaves the old ones intact
        raise
    for old in list_checkpoints(output_dir)[:-keep_last]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def _failpoint(name: str, iteration: int) -> None:
    """Fault injection for the kill tests: ``ALIGNFLOW_FAILPOINT=checkpoint.write:6``
    SIGKILLs the process half way through writing checkpoint 6 (weights written, the
    rest not). Unset, it does nothing."""
    if os.environ.get("ALIGNFLOW_FAILPOINT") == f"{name}:{iteration}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def remove_partial(output_dir: Path) -> list[str]:
    """Delete what interrupted saves left behind (``.checkpoint-N.tmp-PID`` and
    ``.old-PID`` folders); returns their names. Never touches a ``checkpoint-N``."""
    if not output_dir.is_dir():
        return []
    partial = [p for p in output_dir.iterdir()
               if p.is_dir() and re.match(r"^\.checkpoint-\d+\.(tmp|old)-\d+$", p.name)]
    for p in partial:
        shutil.rmtree(p, ignore_errors=True)
    return sorted(p.name for p in partial)


def list_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders in ``output_dir``, oldest first (not verified)."""
    if not output_dir.is_dir():
        return []
    found = [(int(m.group(1)), p) for p in output_dir.iterdir() if p.is_dir() and (m := _NAME.match(p.name))]
    return [p for _, p in sorted(found)]


def verify(path: Path) -> None:
    """Raise :class:`CheckpointError` unless every file of the manifest is there intact."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(f"checkpoint {path}: no manifest.json (incomplete or not an alignflow checkpoint)")
    try:
        manifest = json.loads(manifest_path.read_text())
        files = manifest["files"]
    except (json.JSONDecodeError, KeyError) as e:
        raise CheckpointError(f"checkpoint {path}: manifest.json is corrupt ({e})") from e
    for name, meta in files.items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        if f.stat().st_size != meta["size"]:
            raise CheckpointError(f"checkpoint {path}: {name} has {f.stat().st_size} bytes, the manifest says {meta['size']}")
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its sha256 (corrupt)")


def find_latest(output_dir: Path) -> Path | None:
    """The newest checkpoint that verifies; newer broken ones are skipped with a warning."""
    for path in reversed(list_checkpoints(output_dir)):
        try:
            verify(path)
            return path
        except CheckpointError as e:
            log.warning("skipping %s: %s", path.name, e)
    return None


def load_checkpoint(path: Path) -> Checkpoint:
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: no such folder")
    verify(path)
    optional = {name: load_file(path / f"{name}.safetensors") if (path / f"{name}.safetensors").is_file() else None
                for name in ("ema", "algorithm")}
    return Checkpoint(
        path=path,
        trained=load_file(path / "trained.safetensors"),
        **optional,
        optimizer=torch.load(path / "optimizer.pt", weights_only=True),
        rng=torch.load(path / "rng.pt", weights_only=True),
        state=json.loads((path / "trainer_state.json").read_text()),
    )


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
