"""Regenerate the weights the offline toy experiments ship with.

    .venv/bin/python scripts/build_toy_assets.py [digits] [digits_edit] [words]
        (default: digits and digits_edit, the shipped ones)

digits (about 8 minutes on 2 CPU cores):
  1. rewards/image/assets/digit_classifier: the reward's CNN, trained on the training
     split of scikit-learn's digits (rewards.image.digits.train_digit_classifier);
  2. adapters/image/assets/digits_base: `alignflow pretrain experiment=image_digits`
     (3000 steps of flow matching on digits with 40% noisy captions).
digits_edit (about 7 minutes):
  3. adapters/image/assets/digits_edit_base: `alignflow pretrain experiment=image_digits_edit`
     (6000 steps on digit edits, 40% of the instructions naming a wrong digit).
words (about 7 minutes; not shipped yet, see configs/experiment/image_words.yaml):
  4. adapters/image/assets/words_base: `alignflow pretrain experiment=image_words`
     (3000 steps on rendered three-letter words, 40% of the captions quoting the
     word's look-alike).
Each base folder gets a build_info.json with how it was made and what it measures.
The result is deterministic on a given machine.
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
ASSETS = ROOT / "adapters" / "image" / "assets"
CLASSIFIER_DIR = ROOT / "rewards" / "image" / "assets" / "digit_classifier"


def pretrain(preset: str) -> Path:
    """Run the project's pretraining command; install the result in assets/."""
    target = ASSETS / f"{preset}_base"
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "base"
        cmd = [
            sys.executable,
            "-m",
            "alignflow.sdk.cli",
            "pretrain",
            f"experiment=image_{preset}",
            f"output_dir={out}",
        ]
        subprocess.run(cmd, check=True, cwd=ROOT)
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(out, target)
    return target


def base_accuracy(preset: str, reward, metric: str) -> dict[str, float]:
    """The base's headline metric (the reward component ``metric``) on the eval prompts,
    8 fixed seeds each: by ODE with 20 steps (how the demo evaluates) and by the flow SDE
    with 10 steps (how it rolls out)."""
    from alignflow.adapters.image.pixel import PRESETS, load_pixel_policy
    from alignflow.sdk.data import load_prompts
    from alignflow.sdk.kernels import KERNELS
    from alignflow.sdk.plans import AllSDE
    from alignflow.sdk.random import generator
    from alignflow.sdk.rollout import rollout, sample

    policy = load_pixel_policy(preset)
    prompts = load_prompts(PRESETS[preset].data_module().PROMPT_FILES["eval"])
    p = [x for x in prompts.prompts for _ in range(8)]
    meta = [m for m in prompts.metadata for _ in range(8)]
    cond = policy.encode(p, meta)  # an editing preset's rows carry their sources
    gens = [generator("base", i) for i in range(len(p))]
    x_ode = sample(policy, cond, 20, guidance=1.0, noise_generators=gens)
    traj = rollout(
        policy,
        cond,
        policy.sigmas(10),
        AllSDE()(10, 0, 0),
        KERNELS["flow_sde"],
        noise_level=1.0,
        guidance=1.0,
        group_size=1,
        noise_generators=[generator("base", i) for i in range(len(p))],
        sde_generators=[generator("base-sde", i) for i in range(len(p))],
    )
    return {
        name: reward(policy.decode(x), p, meta).components[metric].mean().item()
        for name, x in (("ode20", x_ode), ("flow_sde10", traj.x0))
    }


def write_info(preset: str, metric: str, values: dict[str, float]) -> None:
    info = {
        "made_by": f"alignflow pretrain experiment=image_{preset} (scripts/build_toy_assets.py)",
        metric: {k: round(v, 4) for k, v in values.items()},
        "torch": torch.__version__,
    }
    (ASSETS / f"{preset}_base" / "build_info.json").write_text(json.dumps(info, indent=2) + "\n")
    print(f"{preset} base: {info}")


def main(presets: list[str]) -> None:
    start = time.time()
    if "digits" in presets:
        from alignflow.rewards.image.digits import (
            DigitClassifierReward,
            save_classifier,
            train_digit_classifier,
        )

        model, test_acc = train_digit_classifier(seed=0)
        save_classifier(
            model,
            CLASSIFIER_DIR,
            {"test_accuracy": round(test_acc, 4), "made_by": "scripts/build_toy_assets.py"},
        )
        print(f"classifier: test accuracy {test_acc:.4f} ({time.time() - start:.0f} s)")
        pretrain("digits")
        write_info(
            "digits", "accuracy", base_accuracy("digits", DigitClassifierReward(), "accuracy")
        )
    if "digits_edit" in presets:
        from alignflow.rewards.image.digits import DigitClassifierReward

        pretrain("digits_edit")
        write_info(
            "digits_edit",
            "accuracy",
            base_accuracy("digits_edit", DigitClassifierReward(), "accuracy"),
        )
    if "words" in presets:
        from alignflow.rewards.image.ocr import OCRReward

        pretrain("words")
        write_info("words", "ocr_exact", base_accuracy("words", OCRReward(detect=False), "exact"))
    print(f"done in {time.time() - start:.0f} s")


if __name__ == "__main__":
    chosen = sys.argv[1:] or ["digits", "digits_edit"]
    unknown = set(chosen) - {"digits", "digits_edit", "words"}
    if unknown:
        sys.exit(f"unknown preset(s) {sorted(unknown)}; choose from digits, digits_edit, words")
    main(chosen)
