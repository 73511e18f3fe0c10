"""The Python API (sdk/api.py): function rewards, loading a run's policy, sampling
and scoring it, and its errors."""

import pytest
import torch

from alignflow.sdk import components
from alignflow.sdk.api import config, evaluate, load_policy, reward_terms, train
from alignflow.sdk.errors import CheckpointError, ConfigError
from alignflow.sdk.trainer import Trainer
from tests.helpers import FAST


@pytest.fixture(autouse=True)
def undeclare(monkeypatch):
    monkeypatch.setattr(components, "_DECORATED", dict(components._DECORATED))


def ink(media, prompts, metadata):
    return media.flatten(1).mean(1)


def dark(media, prompts, metadata):
    return -media.flatten(1).mean(1)


def test_function_rewards_train_and_the_trained_policy_loads_samples_and_scores(tmp_path):
    run = train(
        "image_digits",
        reward={"ink": (ink, 2.0)},
        output_dir=tmp_path,
        overrides=[*FAST, "train.iterations=2", "train.ema_decay=0.5", "data.eval=${data.train}"],
    )
    assert run.summary["iterations"] == 2 and run.summary["after"] is not None
    policy = load_policy(tmp_path)
    assert policy.checkpoint.name == "checkpoint-2" and policy.ema
    assert policy.config.reward == {"ink": {"name": f"{__name__}.ink", "weight": 2.0}}
    rng = torch.get_rng_state()
    a = policy.sample(["a handwritten digit seven"] * 2, seed=3)
    assert torch.equal(torch.get_rng_state(), rng)  # the caller's RNG is left alone
    assert torch.equal(a, policy.sample(["a handwritten digit seven"] * 2, seed=3))
    assert not torch.equal(a[0], a[1])  # one noise per sample
    # evaluate = the run's own held-out evaluation (same prompts, seeds, EMA weights)
    assert evaluate(policy, ink)["reward_mean"] == pytest.approx(
        run.summary["after"]["eval/reward_mean"] / 2.0
    )
    plain = load_policy(tmp_path, checkpoint=2, ema=False)
    assert not plain.ema and not torch.equal(
        plain.sample(["a handwritten digit seven"] * 2, seed=3), a
    )


def test_resuming_with_another_reward_function_is_refused(tmp_path):
    train(
        "image_digits",
        reward=ink,
        output_dir=tmp_path,
        overrides=[*FAST, "train.iterations=1", "data.eval="],
    )
    cfg = config(
        "image_digits",
        reward=dark,
        output_dir=tmp_path,
        overrides=[*FAST, "train.iterations=2", "data.eval=", "checkpoint.resume=latest"],
    )
    with pytest.raises(ConfigError, match="reward.ink.name"):
        Trainer(cfg)


def test_bad_reward_specs_and_missing_runs_are_one_line_errors(tmp_path):
    assert list(reward_terms([ink, ink])) == ["ink", "ink_"]
    for bad in ("ink", (ink, "heavy"), {"a": 3}, [(ink, True)]):
        with pytest.raises(ConfigError, match="reward"):
            reward_terms(bad)
    with pytest.raises(CheckpointError, match="no checkpoint that loads"):
        load_policy(tmp_path)
    with pytest.raises(CheckpointError, match="no such folder"):
        load_policy(tmp_path, checkpoint=7)
