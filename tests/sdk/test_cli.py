import json

import torch

from alignflow.sdk.cli import main
from tests.helpers import FAST


def test_fields_lists_every_field_with_help(capsys):
    assert main(["fields"]) == 0
    out = capsys.readouterr().out
    assert "train.lr" in out and "AdamW learning rate" in out and "checkpoint.resume" in out


def test_config_prints_the_composed_experiment(capsys):
    assert main(["config", "experiment=image_digits", "train.lr=0.5"]) == 0
    out = capsys.readouterr().out
    assert "lr: 0.5" in out and "name: flow_grpo" in out and "digits_train.jsonl" in out


def test_algorithm_options_come_from_the_recipe_and_are_listed(capsys):
    """configs/algorithm/NAME.yaml holds only what differs from the recipe's dataclass:
    `config` prints the options a run will use, `fields --algorithm` documents them, and
    `algorithm.KEY=V` sets one without a `+`."""
    assert (
        main(["config", "experiment=image_digits", "algorithm=mixgrpo", "algorithm.window=3"]) == 0
    )
    printed = capsys.readouterr().out
    assert (
        "  window: 3\n" in printed
        and "  every: 25\n" in printed
        and "  slide: progressive\n" in printed
    )
    assert main(["fields", "--algorithm", "mixgrpo"]) == 0
    listed = capsys.readouterr().out
    assert "algorithm.window" in listed and "SDE (and trained) steps per rollout" in listed
    assert (
        main(["config", "experiment=image_digits", "algorithm=mixgrpo", "algorithm.windw=3"]) == 2
    )
    assert "algorithm.windw" in capsys.readouterr().err


def test_train_then_eval_and_sample_from_the_checkpoint(tmp_path, capsys):
    args = [*FAST, f"output_dir={tmp_path}", "logging.media=true"]
    assert main(["train", *args]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["iterations"] == 2
    assert main(["eval", *args, "checkpoint.resume=latest"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    # the checkpoint holds the trained LoRA: its evaluation is the run's final one
    assert metrics["eval/reward_mean"] == summary["after"]["eval/reward_mean"]
    assert (
        main(
            [
                "sample",
                *args,
                "checkpoint.resume=latest",
                "--prompt",
                "the digit three",
                "--num",
                "3",
            ]
        )
        == 0
    )
    assert (tmp_path / "samples" / "sample-00002.png").is_file()


def test_pretrain_learns_and_saves_a_loadable_policy(tmp_path, capsys):
    from alignflow.adapters.image.pixel import load_pixel_policy

    out = tmp_path / "base"
    assert (
        main(
            [
                "pretrain",
                "experiment=image_digits",
                f"output_dir={out}",
                "steps=80",
                "batch_size=32",
                "lr=2e-3",
                "log_every=20",
            ]
        )
        == 0
    )
    curve = json.loads(capsys.readouterr().out)["loss_curve"]
    assert len(curve) == 4 and curve[-1] < curve[0] - 0.15, curve
    policy = load_pixel_policy("digits", str(out))
    assert policy.sigmas(4).tolist()[0] == 1.0
    assert main(["pretrain", "experiment=image_digits", f"output_dir={out}", "sigma_shift=0"]) == 2
    assert "sigma_shift = 0.0: expected a float > 0" in capsys.readouterr().err


def test_pretraining_sigma_shift_is_sd3s():
    from alignflow.sdk.pretrain import shift_sigmas

    u = torch.linspace(0, 1, 11)
    torch.testing.assert_close(shift_sigmas(u, 1.0), u)
    shifted = shift_sigmas(u, 3.0)
    assert (
        shifted[0] == 0
        and shifted[-1] == 1
        and (shifted.diff() > 0).all()
        and (shifted[1:-1] > u[1:-1]).all()
    )
    assert abs(shift_sigmas(torch.tensor(0.5), 3.0).item() - 0.75) < 1e-6
    # the shift FlowMatchEulerDiscreteScheduler(shift=3) applies to the sigmas it samples on
    from diffusers import FlowMatchEulerDiscreteScheduler

    sched = FlowMatchEulerDiscreteScheduler(shift=3.0)
    sched.set_timesteps(sigmas=torch.linspace(1, 0.1, 10).tolist())
    torch.testing.assert_close(
        shift_sigmas(torch.linspace(1, 0.1, 10), 3.0), sched.sigmas[:-1].float()
    )


def test_pretraining_sigma_range_and_constant_lr(tmp_path, capsys, monkeypatch):
    """sigma_range maps the training sigmas onto [lo, hi] ([1, 1]: pure noise only, the
    first stages of the video base); bad ranges, schedules and devices are named."""
    from alignflow.adapters.image.sd3 import SD3Policy

    seen = []
    velocity = SD3Policy.velocity

    def recording(self, x, sigma, cond, guidance=1.0):
        seen.append(sigma.detach().clone())
        return velocity(self, x, sigma, cond, guidance)

    lrs = []
    adamw_step = torch.optim.AdamW.step

    def recording_step(self, *args, **kwargs):
        lrs.append(self.param_groups[0]["lr"])
        return adamw_step(self, *args, **kwargs)

    monkeypatch.setattr(SD3Policy, "velocity", recording)
    monkeypatch.setattr(torch.optim.AdamW, "step", recording_step)
    base = [
        "pretrain",
        "experiment=image_digits",
        f"output_dir={tmp_path / 'base'}",
        "steps=3",
        "batch_size=16",
        "lr=1e-3",
    ]
    assert main([*base, "sigma_range=[1,1]", "lr_schedule=constant"]) == 0
    assert torch.cat(seen).eq(1).all() and len(seen) == 3
    assert lrs == [1e-3] * 3
    seen.clear()
    lrs.clear()
    capsys.readouterr()
    # the folder holds a saved policy
    assert main([*base, "sigma_range=[0.2,0.4]", "sigma_shift=3"]) == 2
    assert (
        "expected a new or empty folder, or overwrite=true" in capsys.readouterr().err and not seen
    )
    assert main([*base, "sigma_range=[0.2,0.4]", "sigma_shift=3", "overwrite=true"]) == 0
    s = torch.cat(seen)
    assert (s >= 0.2).all() and (s <= 0.4).all() and s.std() > 0
    assert lrs[0] == 1e-3 and lrs[0] > lrs[1] > lrs[2] > 1e-4  # cosine decay towards 10%
    capsys.readouterr()
    assert main([*base, "sigma_range=[0.5,0.2]"]) == 2
    assert (
        "sigma_range = [0.5, 0.2]: expected [lo, hi] with 0 <= lo <= hi <= 1"
        in capsys.readouterr().err
    )
    assert main([*base, "lr_schedule=linear"]) == 2
    assert "lr_schedule = 'linear': expected 'cosine' or 'constant'" in capsys.readouterr().err
    if not torch.cuda.is_available():  # named before any data or model is built
        assert main([*base, "device=cuda"]) == 2
        assert (
            "device = 'cuda': expected 'cpu' or 'auto' (no CUDA device is visible)"
            in capsys.readouterr().err
        )
    assert main([*base, "device=tpu"]) == 2
    assert "device = 'tpu': expected 'auto', 'cpu', 'cuda' or 'cuda:N'" in capsys.readouterr().err


def test_accelerate_launch_files_load_with_accelerates_parser():
    from pathlib import Path

    from accelerate.commands.config.config_args import load_config_from_file

    folder = Path(__file__).parents[2] / "configs" / "accelerate"
    kinds = {p.stem: load_config_from_file(str(p)) for p in folder.glob("*.yaml")}
    assert {"single_gpu", "multi_gpu", "multi_cpu", "fsdp2", "deepspeed_zero2"} <= set(kinds)
    assert (
        kinds["fsdp2"].distributed_type == "FSDP"
        and kinds["fsdp2"].fsdp_config["fsdp_version"] == 2
    )
    assert kinds["deepspeed_zero2"].distributed_type == "DEEPSPEED"
    assert kinds["deepspeed_zero2"].deepspeed_config["zero_stage"] == 2
