"""Two local processes against one, and a served reward against the same reward in-process.

    .venv/bin/python benchmarks/distributed.py [--iterations 20] [--repeats 30]

1. The image_digits demo's configuration (no evaluation, checkpoints or media) for
   ``--iterations`` iterations, once as one process and once as two (``--procs 2``,
   gloo, one thread each; the one process gets every thread): seconds per iteration
   from the trainer's own phase times, the first two iterations left out as warm-up.
2. One batch of the demo's rollouts (64 digit images) scored by the digit classifier
   in-process and through ``alignflow serve-reward`` on 127.0.0.1 (a separate
   process): mean seconds per batch over ``--repeats`` calls, and the difference.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

from alignflow.rewards.image.digits import DigitClassifierReward
from alignflow.rewards.remote import RemoteReward

ARGS = [
    "experiment=image_digits",
    "data.eval=",
    "checkpoint.every=0",
    "logging.progress_bar=false",
    "logging.tensorboard=false",
    "logging.media=false",
    "train.optimizer_steps=1",
]


def seconds_per_iteration(procs: int, iterations: int, out: Path) -> float:
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    if procs > 1:
        env["OMP_NUM_THREADS"] = str(max(1, (os.cpu_count() or 1) // procs))
    cmd = [
        sys.executable,
        "-m",
        "alignflow.sdk.cli",
        "train",
        "--procs",
        str(procs),
        *ARGS,
        f"train.iterations={iterations}",
        f"output_dir={out}",
    ]
    subprocess.run(cmd, env=env, check=True, capture_output=True)
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    per_it = [
        sum(r[f"time/{k}"] for k in ("rollout", "reward", "train"))
        for r in rows
        if "time/rollout" in r
    ]
    return statistics.mean(per_it[2:])


def reward_round_trip(repeats: int) -> tuple[float, float]:
    g = torch.Generator().manual_seed(0)
    media = torch.rand(64, 1, 8, 8, generator=g)
    prompts = [f"a handwritten digit {i % 10}" for i in range(64)]
    meta = [{"digit": i % 10} for i in range(64)]
    local = DigitClassifierReward()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "alignflow.sdk.cli",
            "serve-reward",
            "reward=digit_classifier",
            "--port",
            str(port),
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        server.stdout.readline()
        remote = RemoteReward(f"http://127.0.0.1:{port}")

        def timed(fn):
            fn()
            start = time.perf_counter()
            for _ in range(repeats):
                fn()
            return (time.perf_counter() - start) / repeats

        return timed(lambda: local(media, prompts, meta)), timed(
            lambda: remote(media, prompts, meta)
        )
    finally:
        server.kill()


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=30)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        one = seconds_per_iteration(1, args.iterations, Path(tmp) / "one")
        two = seconds_per_iteration(2, args.iterations, Path(tmp) / "two")
    local, remote = reward_round_trip(args.repeats)
    print(
        f"image_digits, 8 prompts x 8 samples, {os.cpu_count()} CPU cores, mean of iterations "
        f"3-{args.iterations}"
    )
    print(f"{'processes':<12}{'s / iteration':>15}{'ratio':>8}")
    print(f"{1:<12}{one:15.3f}{1:8.2f}")
    print(f"{2:<12}{two:15.3f}{two / one:8.2f}")
    print(f"\ndigit classifier, a batch of 64 images, mean of {args.repeats} calls")
    print(f"{'where':<22}{'ms / batch':>12}")
    print(f"{'in-process':<22}{local * 1e3:12.2f}")
    print(f"{'served (127.0.0.1)':<22}{remote * 1e3:12.2f}")
    print(f"round-trip overhead: {(remote - local) * 1e3:.2f} ms per batch ({remote / local:.1f}x)")


if __name__ == "__main__":
    main()
