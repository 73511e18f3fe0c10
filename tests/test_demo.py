"""The offline default learns: a short seeded run of experiment=image_digits raises the
held-out accuracy, judged by the reward's classifier and by an independent one."""

import pytest
import torch

from alignflow.sdk.cli import compose
from alignflow.sdk.trainer import Trainer


def independent_accuracy(images: torch.Tensor, per_prompt: int) -> float:
    """Accuracy by a logistic regression trained here on the digits' training split:
    a judge the policy never saw, so a rise is not the reward model being fooled."""
    from sklearn.linear_model import LogisticRegression

    from alignflow.modalities.image.digits import load_digits

    x, y = load_digits("train")
    judge = LogisticRegression(max_iter=3000).fit(x.flatten(1).numpy(), y.numpy())
    target = torch.arange(10).repeat_interleave(per_prompt).numpy()  # eval prompts are digits 0..9 in order
    return float((judge.predict(images.flatten(1).numpy()) == target).mean())


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
