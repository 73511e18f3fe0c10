"""Regenerate the weights the offline image_digits experiment ships with.

1. rewards/image/assets/digit_classifier: the reward's CNN, trained on the training
   split of scikit-learn's digits (rewards.image.digits.train_digit_classifier).
2. adapters/image/assets/digits_base: the base policy, made by the project's own
   pretraining command, `alignflow pretrain experiment=image_digits` (3000 steps of
   flow matching on digits with 40% noisy captions).
3. build_info.json in each folder: how it was made and what it measures.

Run from the repository root:  .venv/bin/python scripts/build_digits_assets.py
(about 8 minutes on 2 CPU cores; the result is deterministic on a given machine).
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
CLASSIFIER_DIR = ROOT / "rewards" / "image" / "assets" / "digit_classifier"
BASE_DIR = ROOT / "adapters" / "image" / "assets" / "digits_base"


def base_accuracy(policy_dir: Path, classifier_dir: Path) -> dict[str, float]:
    """Accuracy of the base on the eval prompts, 8 fixed seeds each, as the demo measures it
    (ODE, 20 steps, no guidance) and as its rollouts sample (flow SDE, 10 steps, a = 1)."""
    from alignflow.adapters.image.digits import load_digits_policy
    from alignflow.modalities.image.digits import PROMPT_FILES
    from alignflow.rewards.image.digits import DigitClassifierReward
    from alignflow.sdk.data import load_prompts
    from alignflow.sdk.kernels import KERNELS
    from alignflow.sdk.plans import AllSDE
    from alignflow.sdk.random import generator
    from alignflow.sdk.rollout import rollout, sample

    policy, reward = load_digits_policy(str(policy_dir)), DigitClassifierReward(str(classifier_dir))
    prompts = load_prompts(PROMPT_FILES["eval"])
    p = [x for x in prompts.prompts for _ in range(8)]
    meta = [m for m in prompts.metadata for _ in range(8)]
    cond = policy.encode(p)
    x_ode = sample(policy, cond, 20, guidance=1.0, noise_generators=[generator("base", i) for i in range(len(p))])
    traj = rollout(policy, cond, policy.sigmas(10), AllSDE()(10, 0, 0), KERNELS["flow_sde"], noise_level=1.0,
                   guidance=1.0, group_size=1, noise_generators=[generator("base", i) for i in range(len(p))],
                   sde_generators=[generator("base-sde", i) for i in range(len(p))])
    acc = {}
    for name, x in (("ode20", x_ode), ("flow_sde10", traj.x0)):
        acc[name] = reward(policy.decode(x), p, meta).components["accuracy"].mean().item()
    return acc


def main() -> None:
    from alignflow.rewards.image.digits import save_classifier, train_digit_classifier

    start = time.time()
    model, test_acc = train_digit_classifier(seed=0)
    save_classifier(model, CLASSIFIER_DIR, {"test_accuracy": round(test_acc, 4),
                                            "made_by": "scripts/build_digits_assets.py"})
    print(f"classifier: test accuracy {test_acc:.4f} ({time.time() - start:.0f} s)")

    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "digits_base"
        cmd = [sys.executable, "-m", "alignflow.sdk.cli", "pretrain", "experiment=image_digits", f"output_dir={out}"]
        subprocess.run(cmd, check=True, cwd=ROOT)
        shutil.rmtree(BASE_DIR, ignore_errors=True)
        shutil.copytree(out, BASE_DIR)
    acc = base_accuracy(BASE_DIR, CLASSIFIER_DIR)
    info = {"made_by": "alignflow pretrain experiment=image_digits (scripts/build_digits_assets.py)",
            "accuracy": {k: round(v, 4) for k, v in acc.items()}, "torch": torch.__version__}
    (BASE_DIR / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"base: accuracy {acc} ({time.time() - start:.0f} s in all)")


if __name__ == "__main__":
    main()
