"""The offline image demos learn: short seeded runs of experiment=image_digits (digit
classifier reward) and image_digits_ocr (OCR reward) raise what their reward measures
and what an independent classifier sees."""

import pytest
import torch

from alignflow.sdk.cli import compose
from alignflow.sdk.trainer import Trainer


def independent_accuracy(images: list[torch.Tensor], per_prompt: int) -> float:
    """Accuracy by a logistic regression trained here on the digits' training split:
    a judge the policy never saw, so a rise is not the reward model being fooled."""
    from sklearn.linear_model import LogisticRegression

    from alignflow.modalities.image.digits import load_digits

    x, y = load_digits("train")
    judge = LogisticRegression(max_iter=3000).fit(x.flatten(1).numpy(), y.numpy())
    target = torch.arange(10).repeat_interleave(per_prompt).numpy()  # eval prompts are digits 0..9 in order
    return float((judge.predict(torch.stack(images).flatten(1).numpy()) == target).mean())


@pytest.mark.slow
def test_short_demo_run_raises_accuracy(tmp_path):
    cfg = compose("train", ["experiment=image_digits", f"output_dir={tmp_path}", "train.iterations=40",
                            "eval.every=0", "eval.samples_per_prompt=8", "logging.progress_bar=false",
                            "logging.tensorboard=false"])
    tr = Trainer(cfg)
    summary = tr.train()
    before, after = summary["before"]["eval/digit/accuracy_mean"], summary["after"]["eval/digit/accuracy_mean"]
    assert before <= 0.65
    assert after >= before + 0.15, (before, after)
    gold_before = independent_accuracy(tr.base_eval_media, 8)
    gold_after = independent_accuracy(tr.last_eval_media, 8)
    assert gold_after >= gold_before + 0.1, (gold_before, gold_after)
    assert (tmp_path / "samples" / "before_after.png").is_file() and (tmp_path / "reward_curve.png").is_file()


@pytest.mark.slow
def test_text_rendering_run_raises_the_ocr_reward(tmp_path):
    """experiment=image_digits_ocr: the only reward is a real OCR engine reading the
    digit; a short seeded run raises what it reads and what an independent judge sees."""
    cfg = compose("train", ["experiment=image_digits_ocr", f"output_dir={tmp_path}", "train.iterations=30",
                            "eval.every=0", "eval.samples_per_prompt=8", "logging.progress_bar=false",
                            "logging.tensorboard=false"])
    tr = Trainer(cfg)
    summary = tr.train()
    before, after = summary["before"], summary["after"]
    assert before["eval/ocr/exact_mean"] <= 0.65
    assert after["eval/reward_mean"] >= before["eval/reward_mean"] + 0.1, (before, after)
    assert after["eval/ocr/exact_mean"] >= before["eval/ocr/exact_mean"] + 0.1, (before, after)
    gold_before = independent_accuracy(tr.base_eval_media, 8)
    gold_after = independent_accuracy(tr.last_eval_media, 8)
    assert gold_after >= gold_before + 0.05, (gold_before, gold_after)
    assert (tmp_path / "samples" / "before_after.png").is_file() and (tmp_path / "reward_curve.png").is_file()
