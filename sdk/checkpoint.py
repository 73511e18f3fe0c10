"""Checkpoint folders that a kill cannot corrupt, and that are checked before use.

Layout (diffusers' naming)::

    <output_dir>/checkpoint-<iteration>/
        trained.safetensors     what is trained (LoRA weights or the full denoiser)
        ema.safetensors         EMA shadow (when EMA is on)
        algorithm.safetensors   algorithm state (DiffusionNFT's old policy)
        optimizer.pt            optimizer state (tensors and numbers only)
        rng.pt                  torch RNG states
        trainer_state.json      iteration, seed, counters, the run's config
        manifest.json           size and sha256 of every file above, written last

A checkpoint is written into a temporary folder next to its final place, flushed to
disk, then renamed: a folder named ``checkpoint-N`` is always complete. Loading checks
the manifest strictly (UTF-8 JSON object, the required files, names inside the folder,
sizes, sha256) and reads every file; any failure is a :class:`CheckpointError` that
says which file and why. Everything is read with safetensors, JSON or
``torch.load(weights_only=True)``: a checkpoint cannot run code.

This module never deletes a ``checkpoint-N`` on its own: :func:`prune` deletes only
what its caller says it may, and :func:`set_aside` renames instead of deleting.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from alignflow.sdk.errors import CheckpointError
from alignflow.sdk.files import fsync_dir, fsync_file

log = logging.getLogger(__name__)
_NAME = re.compile(r"^checkpoint-(\d+)$")
_PARTIAL = re.compile(r"^\.checkpoint-(\d+)\.(tmp|old)-\d+$")
REQUIRED = ("trained.safetensors", "optimizer.pt", "rng.pt", "trainer_state.json")
OPTIONAL = ("ema.safetensors", "algorithm.safetensors")


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


def save_checkpoint(
    output_dir: Path,
    iteration: int,
    *,
    trained: dict[str, torch.Tensor],
    optimizer: dict[str, Any],
    state: dict[str, Any],
    ema: dict[str, torch.Tensor] | None = None,
    algorithm: dict[str, torch.Tensor] | None = None,
) -> Path:
    """Write ``checkpoint-<iteration>`` atomically. An existing folder of that name is
    replaced (the caller sets aside one it did not write). Call on the main process only."""
    from safetensors.torch import save_file

    output_dir.mkdir(parents=True, exist_ok=True)
    final = output_dir / f"checkpoint-{iteration}"
    tmp = output_dir / f".checkpoint-{iteration}.tmp-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    try:
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in trained.items()},
            tmp / "trained.safetensors",
        )
        _failpoint("checkpoint.write", iteration)
        for name, tensors in (("ema", ema), ("algorithm", algorithm)):
            if tensors is not None:
                save_file(
                    {k: v.detach().contiguous().cpu() for k, v in tensors.items()},
                    tmp / f"{name}.safetensors",
                )
        torch.save(optimizer, tmp / "optimizer.pt")
        rng = {"torch": torch.get_rng_state()}
        if torch.cuda.is_available():
            rng["cuda"] = torch.cuda.get_rng_state_all()
        torch.save(rng, tmp / "rng.pt")
        (tmp / "trainer_state.json").write_text(
            json.dumps({**state, "iteration": iteration}, indent=2, default=str)
        )
        files = sorted(p.name for p in tmp.iterdir())
        for name in files:
            fsync_file(tmp / name)
        manifest = {
            "format": 1,
            "iteration": iteration,
            "files": {
                n: {"size": (tmp / n).stat().st_size, "sha256": _sha256(tmp / n)} for n in files
            },
        }
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2))
        fsync_file(tmp / "manifest.json")
        # re-saving an iteration this process wrote: swap, then delete the old one
        if final.exists():
            old = output_dir / f".checkpoint-{iteration}.old-{os.getpid()}"
            final.rename(old)
            tmp.rename(final)
            shutil.rmtree(old, ignore_errors=True)
        else:
            tmp.rename(final)
        fsync_dir(output_dir)
    except BaseException:
        # a failed save (disk full...) leaves the old ones intact
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return final


def _failpoint(name: str, iteration: int) -> None:
    """Fault injection for the kill tests: ``ALIGNFLOW_FAILPOINT=checkpoint.write:6``
    SIGKILLs the process half way through writing checkpoint 6 (weights written, the
    rest not). Unset, it does nothing."""
    if os.environ.get("ALIGNFLOW_FAILPOINT") == f"{name}:{iteration}":
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def iteration_of(path: Path) -> int:
    """N of a ``checkpoint-N`` folder, from its name (not verified)."""
    m = _NAME.match(Path(path).name)
    if m is None:
        raise CheckpointError(f"{path}: not a checkpoint-N folder")
    return int(m.group(1))


def list_checkpoints(output_dir: Path) -> list[Path]:
    """``checkpoint-N`` folders in ``output_dir``, oldest first (not verified)."""
    if not output_dir.is_dir():
        return []
    found = [p for p in output_dir.iterdir() if p.is_dir() and _NAME.match(p.name)]
    return sorted(found, key=iteration_of)


def recover_partial(output_dir: Path) -> list[str]:
    """Finish or clear what a killed save left behind; call only while holding the
    run's lock (no live process is writing here). Returns what was done, for a warning.

    - ``.checkpoint-N.tmp-PID`` that verifies (killed between the manifest and the
      rename) and no ``checkpoint-N``: renamed into place. One that does not verify
      never was a checkpoint: deleted.
    - ``.checkpoint-N.old-PID`` (killed while re-saving N): renamed back if
      ``checkpoint-N`` is missing, else deleted (``checkpoint-N`` is its newer save).
    """
    done = []
    if not output_dir.is_dir():
        return done
    for p in sorted(output_dir.iterdir()):
        m = _PARTIAL.match(p.name)
        if not (m and p.is_dir()):
            continue
        final = output_dir / f"checkpoint-{m.group(1)}"
        complete = not final.exists() and _verifies(p)
        if complete:
            p.rename(final)
            done.append(f"{p.name} -> {final.name} (a complete save, killed before its rename)")
        else:
            shutil.rmtree(p, ignore_errors=True)
            done.append(f"removed {p.name} (an interrupted save)")
    if done:
        fsync_dir(output_dir)
    return done


def set_aside(path: Path, reason: str) -> Path:
    """Rename a checkpoint that cannot be used out of the way (never delete it):
    ``checkpoint-8`` -> ``checkpoint-8.rejected`` (``.rejected-2`` ... if taken)."""
    target, k = path.with_name(path.name + ".rejected"), 1
    while target.exists():
        k += 1
        target = path.with_name(f"{path.name}.rejected-{k}")
    path.rename(target)
    (target / "REJECTED.txt").write_text(reason + "\n")
    log.warning("set aside %s as %s: %s", path.name, target.name, reason)
    return target


def prune(output_dir: Path, keep_last: int, may_delete: Callable[[Path], bool]) -> list[Path]:
    """Delete the checkpoints older than the newest ``keep_last`` for which
    ``may_delete`` says yes; returns the deleted paths."""
    deleted = []
    for path in list_checkpoints(output_dir)[:-keep_last]:
        if may_delete(path):
            shutil.rmtree(path)
            deleted.append(path)
    return deleted


# ------------------------------------------------------------------ checking and loading


def read_manifest(path: Path) -> dict[str, dict[str, Any]]:
    """The manifest's ``files``, checked: a UTF-8 JSON object of format 1 for this
    folder's iteration, listing at least the required files, each a plain name in the
    folder with an int size and a sha256. Raises :class:`CheckpointError`."""
    manifest_path = path / "manifest.json"
    if not manifest_path.is_file():
        raise CheckpointError(
            f"checkpoint {path}: no manifest.json (incomplete or not an alignflow checkpoint)"
        )
    try:
        manifest = json.loads(manifest_path.read_bytes().decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as e:
        raise CheckpointError(
            f"checkpoint {path}: manifest.json is corrupt ({type(e).__name__}: {e})"
        ) from e
    m = _NAME.match(path.name) or _PARTIAL.match(path.name)
    if not isinstance(manifest, dict) or manifest.get("format") != 1:
        raise CheckpointError(f"checkpoint {path}: manifest.json is not a format-1 object")
    if m is None or manifest.get("iteration") != int(m.group(1)):
        raise CheckpointError(
            f"checkpoint {path}: manifest.json is for iteration {manifest.get('iteration')!r}, "
            "not this folder's"
        )
    files = manifest.get("files")
    if not isinstance(files, dict):
        raise CheckpointError(f"checkpoint {path}: manifest.json has no 'files' object")
    missing = [f for f in REQUIRED if f not in files]
    if missing:
        raise CheckpointError(
            f"checkpoint {path}: manifest.json does not list {missing} (partial manifest)"
        )
    for name, meta in files.items():
        if name not in REQUIRED + OPTIONAL:
            raise CheckpointError(
                f"checkpoint {path}: manifest.json names {name!r}, which is not a checkpoint "
                f"file ({', '.join(REQUIRED + OPTIONAL)})"
            )
        if not (
            isinstance(meta, dict)
            and type(meta.get("size")) is int
            and meta["size"] >= 0
            and isinstance(meta.get("sha256"), str)
            and re.fullmatch(r"[0-9a-f]{64}", meta["sha256"])
        ):
            raise CheckpointError(
                f"checkpoint {path}: manifest.json entry for {name} needs an int size and a sha256"
            )
    return files


def verify(path: Path) -> None:
    """Raise :class:`CheckpointError` unless every file of the manifest is there intact."""
    for name, meta in read_manifest(path).items():
        f = path / name
        if not f.is_file():
            raise CheckpointError(f"checkpoint {path}: {name} is missing")
        if f.stat().st_size != meta["size"]:
            raise CheckpointError(
                f"checkpoint {path}: {name} has {f.stat().st_size} bytes, the manifest says "
                f"{meta['size']}"
            )
        if _sha256(f) != meta["sha256"]:
            raise CheckpointError(f"checkpoint {path}: {name} does not match its sha256 (corrupt)")


def _verifies(path: Path) -> bool:
    try:
        verify(path)
        return True
    except (CheckpointError, OSError):
        return False


def load_checkpoint(path: Path) -> Checkpoint:
    """Verify and read every file of a checkpoint; any failure is a CheckpointError."""
    from safetensors.torch import load_file

    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: no such folder")
    verify(path)
    files = read_manifest(path)

    def read(name: str, how: Callable[[Path], Any]) -> Any:
        try:
            return how(path / name)
        except Exception as e:  # safetensors, pickle and json raise many types on a damaged file
            raise CheckpointError(
                f"checkpoint {path}: {name} does not load ({type(e).__name__}: {e})"
            ) from e

    state = read("trainer_state.json", lambda p: json.loads(p.read_bytes().decode("utf-8")))
    if not isinstance(state, dict) or type(state.get("iteration")) is not int:
        raise CheckpointError(
            f"checkpoint {path}: trainer_state.json is not an object with an int 'iteration'"
        )
    return Checkpoint(
        path=path,
        trained=read("trained.safetensors", load_file),
        ema=read("ema.safetensors", load_file) if "ema.safetensors" in files else None,
        algorithm=read("algorithm.safetensors", load_file)
        if "algorithm.safetensors" in files
        else None,
        optimizer=read("optimizer.pt", lambda p: torch.load(p, weights_only=True)),
        rng=read("rng.pt", lambda p: torch.load(p, weights_only=True)),
        state=state,
    )


def restore_rng(rng: dict[str, Any]) -> None:
    torch.set_rng_state(rng["torch"])
    if "cuda" in rng and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(rng["cuda"])
