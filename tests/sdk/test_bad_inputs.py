"""Every bad input gets an error that names the field, the value and what is
accepted, before anything expensive runs, or a documented, logged handling."""

import json
import shutil

import pytest

from alignflow.sdk import checkpoint as ckpt
from alignflow.sdk.cli import main
from alignflow.sdk.config import compose
from alignflow.sdk.errors import CheckpointError, ConfigError, DataError, RewardError
from alignflow.sdk.trainer import Trainer
from tests.helpers import FAST, digits_cfg
from tests.sdk import bad_rewards  # noqa: F401  (declares the misbehaving rewards)


@pytest.mark.parametrize(
    "override,field,says",
    [
        ("experiment=imagenet_xl", "overrides", "imagenet_xl"),
        ("train.lrr=1", "train.lrr", "did you mean train.lr?"),
        ("+train.lrr=3e-4", "train.lrr", "did you mean train.lr?"),
        ("+train.group_size=4", "train.group_size", "did you mean sample.group_size?"),
        ("checkpoint.stop_grace=0", "checkpoint.stop_grace", "seconds > 0"),
        ("train.lr=fast", "train.lr", "fast"),
        ("sample.group_size=1", "sample.group_size", "an int >= 2"),
        ("sample.batch_size=6", "sample.batch_size", "multiple of sample.group_size"),
        ("algorithm.noise_level=-0.5", "algorithm.noise_level", "a float > 0"),
        ("algorithm.kernel=euler", "algorithm.kernel", "one of ['flow_sde', 'dance_sde', 'cps']"),
        ("algorithm.adv_std=batch", "algorithm.adv_std", "('group', 'global')"),
        ("+algorithm.clip=0.2", "algorithm.clip", "one of the keys"),
        ("algorithm.name=ppo", "algorithm.name", "flow_grpo"),
        ("policy.name=no_such_model", "policy.name", "pixel_sd3"),
        ("policy.name=os:system", "policy.name", "declared policy components"),
        ("+policy.resolution=1024", "policy.resolution", "one of the arguments"),
        ("policy.path=7", "policy.path", "type str"),
        ("reward.digit.weight=heavy", "reward.digit.weight", "a number"),
        ("train.mixed_precision=fp8", "train.mixed_precision", "'bf16'"),
        ("train.finetune=qlora", "train.finetune", "'lora' or 'full'"),
        ("train.lora_targets=[no_such_layer]", "train.lora_targets", "layer names that exist"),
        ("data.train=/nonexistent/prompts.jsonl", "data.train", "an existing prompt file"),
        (
            "checkpoint.resume=/nonexistent/checkpoint-3",
            "checkpoint.resume",
            "the path of a checkpoint folder",
        ),
        ("eval.every=-1", "eval.every", "an int >= 0"),
        ("logging.wandb=true", "logging.wandb", "wandb installed"),
    ],
)
def test_bad_config_values_are_named(tmp_path, override, field, says):
    with pytest.raises(ConfigError) as e:
        Trainer(digits_cfg(tmp_path, override))
    msg = str(e.value)
    assert msg.startswith(field) or field in msg, msg
    assert says in msg, msg


def test_the_cli_reports_a_config_error_without_a_traceback(tmp_path, capsys):
    assert main(["train", *FAST, f"output_dir={tmp_path}", "algorithm.clip_range=0"]) == 2
    err = capsys.readouterr().err
    assert "algorithm.clip_range = 0.0: expected a float > 0" in err and "Traceback" not in err


def test_empty_prompt_file(tmp_path):
    (tmp_path / "empty.txt").write_text("")
    with pytest.raises(DataError, match="data.train = .*empty.txt': the file is empty"):
        Trainer(digits_cfg(tmp_path / "out", f"data.train={tmp_path / 'empty.txt'}"))


def test_prompt_file_without_the_metadata_the_reward_needs(tmp_path):
    (tmp_path / "p.txt").write_text("a handwritten digit one\n")
    tr = Trainer(digits_cfg(tmp_path / "out", f"data.train={tmp_path / 'p.txt'}"))
    with pytest.raises(RewardError, match="integer 'digit' column"):
        tr.train_iteration(0)


def test_reward_for_another_modality(tmp_path):
    cfg = digits_cfg(tmp_path)
    cfg.reward = {"asr": {"name": "tests.sdk.bad_rewards:SpeechOnly"}}
    with pytest.raises(ConfigError, match="rewards for 'image' media"):
        Trainer(cfg)


@pytest.mark.parametrize(
    "name,match",
    [
        ("WrongLength", r"shape \(9,\) for a batch of 8"),
        ("Text", "returned str"),
        ("HugeInt", "too large for a float"),
        ("HugeFloat", "returned 1e\\+300 for samples \\[0, 1, 2"),
    ],
)
def test_malformed_reward_output_stops_with_the_reward_named(tmp_path, name, match):
    cfg = digits_cfg(tmp_path)
    cfg.reward = {"judge": {"name": f"tests.sdk.bad_rewards:{name}"}}
    with pytest.raises(RewardError, match=f"reward 'judge'.*{match}|{match}"):
        Trainer(cfg).train_iteration(0)


def test_nan_rewards_are_dropped_counted_and_logged(tmp_path, caplog):
    cfg = digits_cfg(tmp_path)
    cfg.reward = {"judge": {"name": "tests.sdk.bad_rewards:NaNForOddSamples"}}
    m = Trainer(cfg).train_iteration(0)
    assert m["train/dropped_samples"] == 4.0
    assert "4 of 8 samples have a NaN reward" in caplog.text
    assert m["train/reward_mean"] == m["train/reward_mean"]  # finite: computed over the valid half


@pytest.mark.parametrize(
    "name, reason",
    [("Raises", "raised RuntimeError: CUDA out of memory"), ("Infinite", "returned inf")],
)
def test_a_failing_reward_call_is_dropped_counted_then_stops_the_run(
    tmp_path, caplog, name, reason
):
    cfg = digits_cfg(tmp_path, "train.reward_max_failures=1")
    cfg.reward = {"judge": {"name": f"tests.sdk.bad_rewards:{name}"}}
    tr = Trainer(cfg)
    m = tr.train_iteration(0)  # one reward call per iteration in the fast config
    assert m["train/reward_failures"] == 1.0 and m["train/dropped_samples"] == 8.0
    assert reason in caplog.text and tr.counters["reward_failures"] == 1
    with pytest.raises(
        RewardError, match=f"2 reward calls have failed.*reward_max_failures = 1.*{reason}"
    ):
        tr.train_iteration(1)
    strict = digits_cfg(tmp_path / "strict", "train.reward_failures=error")
    strict.reward = cfg.reward
    with pytest.raises(RewardError, match=f"{reason}.*reward_failures=error"):
        Trainer(strict).train_iteration(0)


def test_a_reward_call_that_hangs_times_out_and_the_next_one_runs(tmp_path):
    import time

    cfg = digits_cfg(tmp_path, "train.reward_timeout=0.5")
    cfg.reward = {"judge": {"name": "tests.sdk.bad_rewards:SlowFirstCall"}}
    tr = Trainer(cfg)
    start = time.perf_counter()
    first = tr.train_iteration(0)
    # did not wait the 3 s
    assert first["train/reward_failures"] == 1.0 and time.perf_counter() - start < 3
    second = tr.train_iteration(1)  # a fresh worker: the hung call is abandoned
    assert second["train/reward_failures"] == 0.0 and second["train/reward_mean"] == 1.0


def test_nan_rewards_stop_the_run_when_asked(tmp_path):
    cfg = digits_cfg(tmp_path, "train.reward_failures=error")
    cfg.reward = {"judge": {"name": "tests.sdk.bad_rewards:NaNForOddSamples"}}
    with pytest.raises(RewardError, match="4 of 8 rewards are NaN"):
        Trainer(cfg).train_iteration(0)


def test_corrupt_checkpoint_named_and_latest_falls_back(tmp_path, caplog):
    Trainer(digits_cfg(tmp_path, "checkpoint.every=1", "data.eval=")).train()
    newest = tmp_path / "checkpoint-2"
    (newest / "trained.safetensors").write_bytes(b"\0" * 10)
    with pytest.raises(CheckpointError, match="checkpoint-2: trained.safetensors has 10 bytes"):
        Trainer(digits_cfg(tmp_path, f"checkpoint.resume={newest}"))
    tr = Trainer(digits_cfg(tmp_path, "checkpoint.resume=latest"))
    assert tr.iteration == 1 and "skipping checkpoint-2" in caplog.text


def test_checkpoint_of_another_lora_rank(tmp_path):
    """A changed LoRA rank is a config change (refused, listed); allowed, the weights
    do not fit, so no checkpoint loads and the error says why for each."""
    Trainer(digits_cfg(tmp_path, "train.iterations=1", "data.eval=")).train()
    with pytest.raises(
        ConfigError, match=r"changed: train.lora_alpha: 32.0 -> 8.0, train.lora_rank: 16 -> 4"
    ):
        Trainer(
            digits_cfg(
                tmp_path, "train.lora_rank=4", "train.lora_alpha=8", "checkpoint.resume=latest"
            )
        )
    with pytest.raises(
        CheckpointError,
        match=r"none of the 1 checkpoints .*checkpoint-1: .*shape .* in the checkpoint",
    ):
        Trainer(
            digits_cfg(
                tmp_path,
                "train.lora_rank=4",
                "checkpoint.resume=latest",
                "checkpoint.allow_config_change=true",
            )
        )
    assert (tmp_path / "checkpoint-1" / "manifest.json").is_file()  # still there


def test_a_fresh_run_does_not_mix_with_an_earlier_runs_checkpoints(tmp_path):
    Trainer(digits_cfg(tmp_path, "train.iterations=1", "data.eval=")).train()
    with pytest.raises(
        ConfigError, match="'latest' to continue the run .* checkpoint.overwrite=true"
    ):
        Trainer(digits_cfg(tmp_path, "train.iterations=1")).train()
    assert (tmp_path / "checkpoint-1").exists()
    Trainer(
        digits_cfg(tmp_path, "train.iterations=2", "checkpoint.overwrite=true", "data.eval=")
    ).train()
    assert not (tmp_path / "checkpoint-1").exists() and (tmp_path / "checkpoint-2").exists()


def test_missing_policy_weights_folder(tmp_path):
    with pytest.raises(ConfigError, match="policy.path = .*nowhere.*transformer/"):
        Trainer(digits_cfg(tmp_path, f"policy.path={tmp_path / 'nowhere'}"))


def test_config_is_checked_before_any_model_is_built(tmp_path, monkeypatch):
    import alignflow.adapters.image.pixel as pixel

    def boom(*a, **k):
        raise AssertionError("a model was built before the config was checked")

    monkeypatch.setattr(pixel, "load_pixel_policy", boom)
    with pytest.raises(ConfigError, match="train.lr"):
        Trainer(digits_cfg(tmp_path, "train.lr=-1"))


def test_compose_gives_the_dataclass(tmp_path):
    cfg = compose("train", [*FAST, f"output_dir={tmp_path}"])
    assert cfg.sample.group_size == 4 and cfg.algorithm["name"] == "flow_grpo"
    assert json.loads(json.dumps(cfg.reward))  # plain containers, no OmegaConf nodes


def test_missing_shipped_weights_name_the_regeneration_script(tmp_path):
    from alignflow.rewards.image.digits import load_classifier

    shutil.copytree(tmp_path, tmp_path / "empty", dirs_exist_ok=True)
    with pytest.raises(ConfigError, match="build_toy_assets.py"):
        load_classifier(tmp_path / "empty")


def test_every_torch_load_in_the_package_is_weights_only():
    """Weight files are untrusted input: no torch.load that could unpickle code."""
    import ast
    from pathlib import Path

    root = Path(__file__).parents[2]
    seen, offenders = 0, []
    for path in root.glob("*/**/*.py"):
        if path.relative_to(root).parts[0] in (".venv", "tests", "outputs", "build"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Call) and ast.unparse(node.func) == "torch.load":
                seen += 1
                if not any(
                    kw.arg == "weights_only"
                    and isinstance(kw.value, ast.Constant)
                    and kw.value.value is True
                    for kw in node.keywords
                ):
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    assert seen >= 4, seen  # checkpoints, F5 and CLIP-head weights, the Vocos state
    assert not offenders, offenders


def test_a_full_disk_is_one_line_and_keeps_the_saved_checkpoints(tmp_path, capsys, monkeypatch):
    import errno

    import torch

    assert main(["train", *FAST, f"output_dir={tmp_path}", "data.eval=", "train.iterations=1"]) == 0
    saved = sorted(p.name for p in tmp_path.iterdir())

    def disk_full(*a, **k):
        raise OSError(errno.ENOSPC, "No space left on device", str(tmp_path / "optimizer.pt"))

    monkeypatch.setattr(torch, "save", disk_full)
    capsys.readouterr()
    code = main(
        [
            "train",
            *FAST,
            f"output_dir={tmp_path}",
            "data.eval=",
            "train.iterations=2",
            "checkpoint.resume=latest",
        ]
    )
    err = capsys.readouterr().err
    ours = [line for line in err.splitlines() if line.startswith("alignflow:")]
    assert code == 1 and len(ours) == 1 and "Traceback" not in err, err
    assert (
        ours[0].startswith("alignflow: error: disk full while writing")
        and "checkpoints already saved" in ours[0]
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == saved  # no half checkpoint, nothing lost
    ckpt.verify(tmp_path / "checkpoint-1")


def test_debug_shows_the_traceback(tmp_path):
    with pytest.raises(ConfigError, match="train.lr"):
        main(["train", "--debug", *FAST, f"output_dir={tmp_path}", "train.lr=-1"])
    with pytest.raises(ConfigError, match="train.lr"):
        main(["--debug", "train", *FAST, f"output_dir={tmp_path}", "train.lr=-1"])


def test_a_bug_is_not_dressed_as_an_expected_error(tmp_path, monkeypatch):
    """Unexpected exceptions keep their traceback: they are what a developer needs."""
    from alignflow.sdk import trainer

    def broken(*a, **k):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(trainer.Trainer, "train_iteration", broken)
    with pytest.raises(ZeroDivisionError):
        main(["train", *FAST, f"output_dir={tmp_path}", "data.eval="])
