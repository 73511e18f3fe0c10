"""Resume never destroys what it cannot read: damaged checkpoints are skipped with the
reason, an unloadable folder is an error that lists them (and deletes none), a changed
config is refused, pruning and new saves never delete a checkpoint they cannot read."""

import errno
import json
import logging
import os
from types import SimpleNamespace

import pytest
import torch

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk.cli import main
from alignflow.sdk.errors import CheckpointError, ConfigError
from alignflow.sdk.resume import RunCheckpoints
from alignflow.sdk.tracking import METRICS_FILE, MetricsLog, read_metrics
from alignflow.sdk.trainer import Trainer
from tests.helpers import FAST, digits_cfg

CONFIG = {"seed": 0, "train": {"lr": 0.1, "iterations": 4}, "output_dir": "x"}


def run_checkpoints(out, config=CONFIG, prompts=None, **flags):
    cfg = SimpleNamespace(
        **{
            "resume": "latest",
            "overwrite": False,
            "allow_config_change": False,
            "keep_last": 2,
            **flags,
        }
    )
    return RunCheckpoints(out, cfg, config, prompts or {"train": "abc"})


def save(out, it, config=CONFIG):
    return run_checkpoints(out, config).save(
        it,
        trained={"w": torch.full((3,), float(it))},
        state={"seed": 0},
        optimizer={"state": {0: {"step": torch.tensor(it)}}, "param_groups": [{"lr": 0.1}]},
    )


def manifest(path):
    return path / "manifest.json"


def edit_manifest(path, edit):
    m = json.loads(manifest(path).read_text())
    edit(m)
    manifest(path).write_text(json.dumps(m))


DAMAGE = {
    "not UTF-8": lambda p: manifest(p).write_bytes(b"\xff\xfe{"),
    "not JSON": lambda p: manifest(p).write_text("{"),
    "not an object": lambda p: manifest(p).write_text("[1, 2]"),
    "empty object": lambda p: manifest(p).write_text("{}"),
    "empty files": lambda p: edit_manifest(p, lambda m: m.update(files={})),
    "partial files": lambda p: edit_manifest(p, lambda m: m["files"].pop("optimizer.pt")),
    "no format": lambda p: edit_manifest(p, lambda m: m.pop("format")),
    "another iteration": lambda p: edit_manifest(p, lambda m: m.update(iteration=1)),
    "a file outside": lambda p: edit_manifest(
        p, lambda m: m["files"].update({"../checkpoint-1/rng.pt": m["files"]["rng.pt"]})
    ),
    "an absolute name": lambda p: edit_manifest(
        p, lambda m: m["files"].update({"/etc/passwd": m["files"]["rng.pt"]})
    ),
    "a size that is text": lambda p: edit_manifest(
        p, lambda m: m["files"]["rng.pt"].update(size="12")
    ),
    "a weight file that does not load": lambda p: _garbage_but_listed(p, "trained.safetensors"),
    "an optimizer that is not weights-only": lambda p: _garbage_but_listed(p, "optimizer.pt"),
    "a state that is not an object": lambda p: _garbage_but_listed(p, "trainer_state.json", b"[]"),
    "a deep manifest": lambda p: manifest(p).write_text("[" * 100000 + "]" * 100000),
}


def _garbage_but_listed(
    path, name, blob=b"\x00garbage that is listed with its true size and sha256"
):
    """A file the manifest vouches for (it verifies) that still fails to load."""
    (path / name).write_bytes(blob)
    edit_manifest(
        path, lambda m: m["files"][name].update(size=len(blob), sha256=ckpt._sha256(path / name))
    )


@pytest.mark.parametrize("damage", list(DAMAGE))
def test_a_damaged_newest_checkpoint_falls_back_with_a_warning(tmp_path, caplog, damage):
    save(tmp_path, 1)
    newest = save(tmp_path, 2)
    DAMAGE[damage](newest)
    loaded = []
    with caplog.at_level(logging.WARNING):
        c = run_checkpoints(tmp_path).resume("latest", lambda c: loaded.append(c.iteration))
    assert c.iteration == 1 and loaded == [1]
    assert "skipping checkpoint-2" in caplog.text
    assert newest.is_dir()  # kept as it is, for a person to look at


def test_nothing_loadable_is_an_error_that_lists_each_and_deletes_none(tmp_path):
    save(tmp_path, 1)
    save(tmp_path, 2)
    DAMAGE["not UTF-8"](tmp_path / "checkpoint-1")
    DAMAGE["partial files"](tmp_path / "checkpoint-2")
    before = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*"))
    with pytest.raises(CheckpointError) as e:
        run_checkpoints(tmp_path).resume("latest", lambda c: None)
    msg = str(e.value)
    assert "none of the 2 checkpoints" in msg and "Nothing was deleted" in msg
    assert "checkpoint-2: manifest.json does not list ['optimizer.pt']" in msg
    assert "checkpoint-1: manifest.json is corrupt (UnicodeDecodeError" in msg
    assert "checkpoint.resume=none checkpoint.overwrite=true" in msg
    assert sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*")) == before


def test_an_empty_folder_starts_fresh(tmp_path):
    assert run_checkpoints(tmp_path).resume("latest", lambda c: None) is None


def test_the_cli_stops_in_one_line_and_keeps_the_checkpoints(tmp_path, capsys):
    Trainer(digits_cfg(tmp_path, "train.iterations=1", "data.eval=")).train()
    DAMAGE["empty object"](tmp_path / "checkpoint-1")
    code = main(
        ["train", *FAST, f"output_dir={tmp_path}", "data.eval=", "checkpoint.resume=latest"]
    )
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("alignflow:")]
    assert code == 2 and len(ours) == 1 and "Traceback" not in err, err
    assert ours[0].startswith(
        "alignflow: error: checkpoint.resume=latest: none of the 1 checkpoints"
    )
    assert (tmp_path / "checkpoint-1" / "trained.safetensors").is_file()
    # resume=none is a fresh start, which still keeps them unless overwrite is said too
    assert (
        main(["train", *FAST, f"output_dir={tmp_path}", "data.eval=", "checkpoint.resume=none"])
        == 2
    )
    assert "checkpoint.overwrite=true" in capsys.readouterr().err
    assert (tmp_path / "checkpoint-1").is_dir()
    assert (
        main(
            [
                "train",
                *FAST,
                f"output_dir={tmp_path}",
                "data.eval=",
                "checkpoint.resume=none",
                "checkpoint.overwrite=true",
                "train.iterations=1",
            ]
        )
        == 0
    )
    ckpt.verify(tmp_path / "checkpoint-1")  # a new, good one


def test_a_changed_config_is_refused_with_the_fields_listed(tmp_path):
    save(tmp_path, 1)
    changed = {**CONFIG, "seed": 3, "train": {"lr": 0.2, "iterations": 9}, "output_dir": "y"}
    with pytest.raises(
        ConfigError,
        match=r"changed: seed: 0 -> 3, train.lr: 0.1 -> 0.2; set "
        r"checkpoint.allow_config_change=true",
    ):
        run_checkpoints(tmp_path, changed).resume("latest", lambda c: None)
    with pytest.raises(ConfigError, match=r"the prompts of data.train"):
        run_checkpoints(tmp_path, prompts={"train": "other"}).resume("latest", lambda c: None)
    rc = run_checkpoints(tmp_path, changed, allow_config_change=True)
    assert rc.resume("latest", lambda c: None).iteration == 1
    assert rc.changes == [{"iteration": 1, "fields": {"seed": [0, 3], "train.lr": [0.1, 0.2]}}]
    path = rc.save(2, trained={"w": torch.zeros(3)}, optimizer={}, state={})
    assert json.loads((path / "trainer_state.json").read_text())["config_changes"] == rc.changes


def test_an_allowed_change_is_logged_in_the_summary(tmp_path):
    Trainer(digits_cfg(tmp_path, "train.iterations=1", "data.eval=")).train()
    tr = Trainer(
        digits_cfg(
            tmp_path,
            "train.iterations=2",
            "data.eval=",
            "checkpoint.resume=latest",
            "train.lr=2e-3",
            "checkpoint.allow_config_change=true",
        )
    )
    tr.train()
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["config_changes"] == [{"iteration": 1, "fields": {"train.lr": [0.001, 0.002]}}]


def test_pruning_deletes_only_readable_checkpoints_of_this_run(tmp_path, caplog):
    save(tmp_path, 1)
    save(tmp_path, 2)
    save(tmp_path, 3, config={**CONFIG, "seed": 7})  # another run's
    DAMAGE["not JSON"](tmp_path / "checkpoint-2")
    rc = run_checkpoints(tmp_path, keep_last=1)
    rc.save(4, trained={"w": torch.zeros(3)}, optimizer={}, state={})
    rc.save(5, trained={"w": torch.zeros(3)}, optimizer={}, state={})
    names = [p.name for p in ckpt.list_checkpoints(tmp_path)]
    # 1 (ours, readable) and 4 (written) pruned
    assert names == ["checkpoint-2", "checkpoint-3", "checkpoint-5"]
    assert (
        "keeping checkpoint-2" in caplog.text
        and "keeping checkpoint-3: saved with another config" in caplog.text
    )


def test_a_save_never_overwrites_a_checkpoint_it_did_not_write(tmp_path):
    save(tmp_path, 1)
    save(tmp_path, 2)
    DAMAGE["empty object"](tmp_path / "checkpoint-2")
    rc = run_checkpoints(tmp_path, keep_last=5)
    assert rc.resume("latest", lambda c: None).iteration == 1
    rc.save(2, trained={"w": torch.ones(3)}, optimizer={}, state={})
    aside = tmp_path / "checkpoint-2.rejected"
    assert aside.is_dir() and (aside / "trained.safetensors").is_file()
    assert "in the way of iteration 2" in (aside / "REJECTED.txt").read_text()
    ckpt.verify(tmp_path / "checkpoint-2")


def test_partial_saves_are_finished_or_cleared(tmp_path):
    complete = save(tmp_path, 3)
    # killed between the manifest and the rename
    complete.rename(tmp_path / ".checkpoint-3.tmp-999")
    (tmp_path / ".checkpoint-5.tmp-999").mkdir()  # killed early
    (tmp_path / ".checkpoint-5.tmp-999" / "trained.safetensors").write_bytes(b"half")
    # killed between the two renames of a re-save
    save(tmp_path, 6).rename(tmp_path / ".checkpoint-6.old-999")
    done = ckpt.recover_partial(tmp_path)
    assert [p.name for p in ckpt.list_checkpoints(tmp_path)] == ["checkpoint-3", "checkpoint-6"]
    assert not list(tmp_path.glob(".checkpoint-*")) and len(done) == 3
    ckpt.verify(tmp_path / "checkpoint-3")


def test_a_full_disk_during_the_metrics_rewrite_loses_no_row(tmp_path, monkeypatch):
    rows = [{"iteration": i, "train/reward_mean": 0.1 * i} for i in range(1, 6)]
    (tmp_path / METRICS_FILE).write_text("".join(json.dumps(r) + "\n" for r in rows))
    acc = SimpleNamespace(is_main_process=True, trackers=[])

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(OSError, match="No space"):
        MetricsLog(acc, tmp_path, progress_bar=False, total=9, start=3)
    assert read_metrics(tmp_path) == rows
    assert sorted(p.name for p in tmp_path.iterdir()) == [METRICS_FILE]  # no temporary file left
    monkeypatch.undo()
    MetricsLog(acc, tmp_path, progress_bar=False, total=9, start=3)
    assert read_metrics(tmp_path) == rows[:3]


def test_eval_and_sample_refuse_latest_without_a_checkpoint(tmp_path, capsys, monkeypatch):
    import alignflow.sdk.trainer as trainer

    monkeypatch.setattr(trainer, "Trainer", None)  # nothing may be built
    for command in (["eval"], ["sample", "--prompt", "a handwritten digit one"]):
        assert main([*command, *FAST, f"output_dir={tmp_path}", "checkpoint.resume=latest"]) == 2
        err = capsys.readouterr().err
        assert (
            "checkpoint.resume = 'latest': expected a checkpoint in" in err
            and "Traceback" not in err
        )
