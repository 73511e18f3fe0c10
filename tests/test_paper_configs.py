"""The SD3.5 and FLUX experiment configs carry the paper settings and run end to end
when pointed at (tiny) local weights."""

import pytest

from alignflow.adapters.image.tiny import tiny_flux_pipeline, tiny_sd3_pipeline
from alignflow.sdk.config import compose
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.trainer import Trainer
from tests.helpers import save_tiny_clip

PATHS = ["policy.path=/models/x", "data.train=/data/train.txt", "data.eval=/data/eval.txt"]
PICK = ["reward.pickscore.path=/m/pick", "reward.pickscore.processor_path=/m/proc"]


@pytest.mark.parametrize(
    "experiment,expected",
    [
        (
            "sd35_pickscore",
            dict(
                steps=10,
                eval_steps=40,
                group=24,
                noise=0.7,
                guidance=4.5,
                clip=1e-4,
                beta=0.01,
                flux=False,
            ),
        ),
        (
            "sd35_ocr",
            dict(
                steps=10,
                eval_steps=40,
                group=24,
                noise=0.7,
                guidance=4.5,
                clip=1e-4,
                beta=0.04,
                flux=False,
            ),
        ),
        (
            "flux1_dev_pickscore",
            dict(
                steps=6,
                eval_steps=28,
                group=24,
                noise=0.9,
                guidance=3.5,
                clip=1e-4,
                beta=0.0,
                flux=True,
            ),
        ),
    ],
)
def test_paper_settings(experiment, expected):
    extra = PICK if "pickscore" in experiment else []
    cfg = compose("train", [f"experiment={experiment}", *PATHS, *extra])
    e = expected
    assert (cfg.sample.num_steps, cfg.eval.num_steps, cfg.sample.group_size) == (
        e["steps"],
        e["eval_steps"],
        e["group"],
    )
    assert (cfg.algorithm["noise_level"], cfg.sample.guidance) == (e["noise"], e["guidance"])
    assert (cfg.algorithm["clip_range"], cfg.algorithm["kl_beta"]) == (e["clip"], e["beta"])
    assert (cfg.train.lora_rank, cfg.train.lora_alpha, cfg.train.finetune) == (32, 64.0, "lora")
    assert (
        cfg.policy["name"] == ("flux" if e["flux"] else "sd3") and cfg.policy["dtype"] == "bfloat16"
    )


def one_iteration(tmp_path) -> list[str]:
    """A paper config scaled to one iteration of 2 prompts x 2 samples, float32."""
    return [
        "sample.group_size=2",
        "sample.prompts_per_iteration=2",
        "sample.batch_size=4",
        "train.micro_batch_size=8",
        "train.mixed_precision=no",
        "train.iterations=1",
        "eval.num_steps=3",
        f"output_dir={tmp_path / 'run'}",
        "logging.progress_bar=false",
        "logging.tensorboard=false",
    ]


def test_weights_must_be_given():
    with pytest.raises(ConfigError, match="policy.path"):
        compose("train", ["experiment=sd35_ocr", "data.train=/d", "data.eval=/d"])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["sd35_pickscore", "flux1_dev_pickscore"])
def test_paper_config_runs_an_iteration_on_tiny_weights(experiment, tmp_path):
    model = tmp_path / "model"
    (tiny_flux_pipeline() if "flux" in experiment else tiny_sd3_pipeline()).save_pretrained(model)
    clip = save_tiny_clip(tmp_path / "clip")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat\na red car\n")
    cfg = compose(
        "train",
        [
            f"experiment={experiment}",
            f"policy.path={model}",
            "policy.resolution=32",
            "policy.dtype=float32",
            f"reward.pickscore.path={clip}",
            f"reward.pickscore.processor_path={clip}",
            f"data.train={prompts}",
            f"data.eval={prompts}",
            *one_iteration(tmp_path),
        ],
    )
    summary = Trainer(cfg).train()
    assert (
        summary["iterations"] == 1
        and summary["after"]["eval/reward_mean"] == summary["after"]["eval/reward_mean"]
    )
    assert (tmp_path / "run" / "samples" / "before_after.png").is_file()


EDITS = ["policy.source_root=/data", "reward.edit.consistency.path=/m/clip"]


@pytest.mark.parametrize(
    "experiment,expected",
    [
        (
            "kontext_text_edit",
            dict(policy="flux_kontext", steps=6, eval_steps=28, group=21, noise=0.9, guidance=2.5),
        ),
        (
            "qwen_image_edit_text",
            dict(policy="qwen_edit", steps=10, eval_steps=50, group=16, noise=1.0, guidance=4.0),
        ),
    ],
)
def test_editing_configs_carry_the_reference_settings(experiment, expected):
    """Flow-GRPO's own Kontext and Qwen-Image-Edit configs, the model cards' guidance."""
    cfg = compose("train", [f"experiment={experiment}", *PATHS, *EDITS])
    e = expected
    assert cfg.policy["name"] == e["policy"] and cfg.policy["resolution"] == 512
    assert (cfg.sample.num_steps, cfg.eval.num_steps, cfg.sample.group_size) == (
        e["steps"],
        e["eval_steps"],
        e["group"],
    )
    assert (cfg.algorithm["noise_level"], cfg.algorithm["kl_beta"]) == (e["noise"], 0.0)
    assert cfg.sample.guidance == cfg.eval.guidance == e["guidance"]
    edit = cfg.reward["edit"]
    assert edit["instruction"]["name"] == "ocr" and edit["consistency"]["measure"] == "clip"
    with pytest.raises(ConfigError, match="reward.edit.consistency.path"):
        compose("train", [f"experiment={experiment}", *PATHS, EDITS[0]])


@pytest.mark.slow
@pytest.mark.parametrize("experiment", ["kontext_text_edit", "qwen_image_edit_text"])
def test_editing_config_runs_an_iteration_on_tiny_weights(experiment, tmp_path):
    """Each editing config end to end on a tiny saved pipeline: sources from the rows,
    the OCR engine and a tiny CLIP as the two factors of the edit reward."""
    import json

    import numpy as np
    from PIL import Image

    from alignflow.adapters.image.tiny import tiny_qwen_edit_pipeline

    model = tmp_path / "model"
    tiny = tiny_qwen_edit_pipeline() if "qwen" in experiment else tiny_flux_pipeline(kontext=True)
    tiny.save_pretrained(model)
    clip = save_tiny_clip(tmp_path / "clip")
    rng = np.random.default_rng(0)
    rows = []
    for i, text in enumerate(["OPEN", "EXIT"]):
        Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
            tmp_path / f"{i}.png"
        )
        rows.append({"prompt": f'write "{text}" on it', "source": f"{i}.png", "target_text": text})
    prompts = tmp_path / "edits.jsonl"
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = compose(
        "train",
        [
            f"experiment={experiment}",
            f"policy.path={model}",
            f"policy.source_root={tmp_path}",
            "policy.resolution=32",
            "policy.dtype=float32",
            "policy.gradient_checkpointing=false",
            f"reward.edit.consistency.path={clip}",
            f"data.train={prompts}",
            f"data.eval={prompts}",
            "sample.num_steps=3",
            *one_iteration(tmp_path),
        ],
    )
    summary = Trainer(cfg).train()
    after = summary["after"]
    assert summary["iterations"] == 1 and 0 <= after["eval/edit/consistency_mean"] <= 1
    assert (tmp_path / "run" / "samples" / "before_after.png").is_file()
