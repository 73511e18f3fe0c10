import json

import pytest
import torch

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk.errors import CheckpointError


def save(tmp_path, it, **kw):
    return ckpt.save_checkpoint(
        tmp_path,
        it,
        trained={"w": torch.full((3,), float(it))},
        optimizer={"state": {0: {"step": torch.tensor(it)}}, "param_groups": [{"lr": 0.1}]},
        state={"seed": 0},
        **kw,
    )


def test_round_trip_and_prune(tmp_path):
    for it in (1, 2, 3):
        save(tmp_path, it)
    deleted = ckpt.prune(tmp_path, 2, lambda p: True)
    assert [p.name for p in deleted] == ["checkpoint-1"]
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-2", "checkpoint-3"]
    # pruning deletes only what it is allowed to
    assert ckpt.prune(tmp_path, 1, lambda p: False) == []
    c = ckpt.load_checkpoint(tmp_path / "checkpoint-3")
    assert c.iteration == 3 and torch.equal(c.trained["w"], torch.full((3,), 3.0))
    assert c.optimizer["state"][0]["step"] == 3
    assert not list(tmp_path.glob(".checkpoint-*"))  # no temporary folders left


def test_a_corrupt_file_is_named(tmp_path):
    path = save(tmp_path, 2)
    blob = (path / "trained.safetensors").read_bytes()
    (path / "trained.safetensors").write_bytes(blob[:-7] + b"garbage")
    with pytest.raises(CheckpointError, match="trained.safetensors does not match its sha256"):
        ckpt.load_checkpoint(path)


@pytest.mark.parametrize(
    "damage,match",
    [
        (lambda p: (p / "manifest.json").unlink(), "no manifest.json"),
        (lambda p: (p / "optimizer.pt").unlink(), "optimizer.pt is missing"),
        (lambda p: (p / "rng.pt").write_bytes(b"x"), "rng.pt has 1 bytes"),
        (lambda p: (p / "manifest.json").write_text("{"), "manifest.json is corrupt"),
    ],
)
def test_damaged_checkpoints_are_named(tmp_path, damage, match):
    path = save(tmp_path, 1)
    damage(path)
    with pytest.raises(CheckpointError, match=match):
        ckpt.load_checkpoint(path)


def test_a_failed_save_leaves_the_previous_checkpoints_intact(tmp_path, monkeypatch):
    save(tmp_path, 1)

    def disk_full(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", disk_full)
    with pytest.raises(OSError, match="No space"):
        save(tmp_path, 2)
    assert [p.name for p in tmp_path.iterdir()] == ["checkpoint-1"]
    ckpt.verify(tmp_path / "checkpoint-1")


def test_files_load_without_running_code(tmp_path):
    path = save(tmp_path, 1)
    manifest = json.loads((path / "manifest.json").read_text())
    assert set(manifest["files"]) == {
        "trained.safetensors",
        "optimizer.pt",
        "rng.pt",
        "trainer_state.json",
    }
    # optimizer.pt and rng.pt hold only tensors and plain containers: weights_only loading works
    torch.load(path / "optimizer.pt", weights_only=True)
