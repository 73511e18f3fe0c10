"""Several processes (gloo on CPU, the CLI's own launcher): the same numbers as one
process with the same global batch, and no initial noise shared by accident."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from alignflow.sdk.tracking import read_metrics
from alignflow.sdk.trainer import Trainer
from tests.helpers import FAST, digits_cfg, strip_times

ROOT = Path(__file__).parents[2]
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(ROOT)}


def train(out, procs, *extra):
    cmd = [
        sys.executable,
        "-m",
        "alignflow.sdk.cli",
        "train",
        "--procs",
        str(procs),
        *FAST,
        f"output_dir={out}",
        "data.eval=",
        "checkpoint.every=0",
        *extra,
    ]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert json.loads((out / "summary.json").read_text())["processes"] == procs
    return strip_times(read_metrics(out))


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(tmp_path):
    # one optimizer step per iteration: with several, each process shuffles its own
    # transitions into the windows (the same distribution, not the same windows)
    args = [
        "train.iterations=3",
        "train.optimizer_steps=1",
        "sample.prompts_per_iteration=4",
        "sample.batch_size=8",
    ]
    two = train(tmp_path / "two", 2, *args)
    # the one-process reference in this process (one launch fewer; 1 thread, as there)
    ref = digits_cfg(tmp_path / "one", "data.eval=", "checkpoint.every=0", *args)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        Trainer(ref).train()
    finally:
        torch.set_num_threads(threads)
    one = strip_times(read_metrics(tmp_path / "one"))
    assert [r["iteration"] for r in two] == [1, 2, 3] and one[0].keys() == two[0].keys()
    for a, b in zip(one, two):
        for key in a:
            assert b[key] == pytest.approx(a[key], rel=1e-5, abs=1e-6), (a["iteration"], key)
    assert one[-1]["train/kl_ref"] > 0  # the runs trained


@pytest.mark.slow
def test_group_members_never_share_initial_noise_unless_asked(tmp_path):
    """Flow-GRPO draws one noise per sample, MixGRPO one per group (by design): all
    distinct across the two processes (one launch probes both)."""
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc_per_node",
        "2",
        str(ROOT / "tests" / "sdk" / "noise_probe.py"),
        str(tmp_path),
        "flow_grpo",
        "mixgrpo:algorithm.window=2",
    ]
    done = subprocess.run(cmd, env=ENV, capture_output=True, text=True, timeout=600, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    P, G = 4, 4
    for algorithm, shared in [("flow_grpo", False), ("mixgrpo", True)]:
        result = json.loads((tmp_path / f"{algorithm}.json").read_text())
        rows = torch.tensor(result["rows"])
        assert result["processes"] == 2
        assert len(rows) == (P if shared else P * G), algorithm
        assert len(torch.unique(rows, dim=0)) == len(rows), algorithm


@pytest.mark.slow
def test_a_reward_failing_on_one_process_stops_every_process(tmp_path):
    cmd = [
        sys.executable,
        "-m",
        "alignflow.sdk.cli",
        "train",
        "--procs",
        "2",
        *FAST,
        f"output_dir={tmp_path}",
        "data.eval=",
        "sample.prompts_per_iteration=4",
        "sample.batch_size=8",
        "train.reward_max_failures=0",
        "~reward.digit",
        "+reward.judge.name=tests.sdk.bad_rewards:FailsOnRankOne",
    ]
    done = subprocess.run(
        cmd,
        env={**ENV, "ALIGNFLOW_PLUGINS": "tests.sdk.bad_rewards"},
        capture_output=True,
        text=True,
        timeout=300,
    )  # a process left waiting in a collective would hang here
    assert done.returncode != 0
    assert "1 reward calls have failed, more than train.reward_max_failures = 0" in done.stderr
    # both stopped
    assert "only rank 1 fails" in done.stderr and "on another process" in done.stderr


@pytest.mark.slow
def test_workers_stop_with_a_checkpoint_when_the_launcher_dies(tmp_path):
    """SIGKILL the `--procs 2` launcher: its workers notice, stop as on SIGTERM (one
    checkpoint, together) and exit instead of writing on as orphans."""
    import signal
    import time

    import psutil

    out = tmp_path / "orphans"
    cmd = [
        sys.executable,
        "-m",
        "alignflow.sdk.cli",
        "train",
        "--procs",
        "2",
        *FAST,
        f"output_dir={out}",
        "data.eval=",
        "checkpoint.every=0",
        "train.iterations=200",
        "sample.prompts_per_iteration=4",
        "sample.batch_size=8",
    ]
    launcher = subprocess.Popen(cmd, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not read_metrics(out):
        assert launcher.poll() is None and time.time() < deadline
        time.sleep(0.1)
    workers = [
        p
        for p in psutil.Process(launcher.pid).children()
        if "alignflow.sdk.cli" in " ".join(p.cmdline())
    ]
    assert len(workers) == 2
    launcher.send_signal(signal.SIGKILL)
    launcher.wait()
    gone, alive = psutil.wait_procs(workers, timeout=120)
    assert not alive, "orphaned workers kept running"
    saved = list(out.glob("checkpoint-*"))
    assert len(saved) == 1 and (saved[0] / "manifest.json").is_file()
    assert max(r["iteration"] for r in read_metrics(out)) < 200


def fsdp2(out, *extra, plain=False):
    cmd = [sys.executable, str(ROOT / "tests/sdk/fsdp2_cpu.py"), *(["--plain"] * plain)]
    done = subprocess.run(
        [*cmd, str(out), *extra], env=ENV, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.slow(seconds=40)
def test_fsdp2_trains_saves_and_resumes_with_the_numbers_of_an_unsharded_run(tmp_path):
    """accelerate's FSDP2 (the transformer's blocks and root fully_shard-ed, LoRA on
    the wrapped modules, the optimizer mapped onto the shards) in one CPU process: the
    same metrics as without it, checkpoints of whole tensors, a resume that repeats the
    uninterrupted run, and an unsharded run that resumes the FSDP2 checkpoint."""
    straight = fsdp2(tmp_path / "straight", "train.iterations=3")
    assert straight["sharded"] > 0 and len(straight["rows"]) == 3
    assert straight["rows"][0]["train/kl_ref"] > 0  # the reference forward ran, sharded
    plain = fsdp2(tmp_path / "plain", "train.iterations=3", plain=True)
    assert plain["sharded"] == 0 and plain["rows"] == straight["rows"]
    fsdp2(tmp_path / "cut", "train.iterations=2")
    shutil.copytree(tmp_path / "cut", tmp_path / "moved")
    resumed = fsdp2(tmp_path / "cut", "train.iterations=3", "checkpoint.resume=latest")
    assert resumed["rows"] == straight["rows"]
    moved = fsdp2(tmp_path / "moved", "train.iterations=3", "checkpoint.resume=latest", plain=True)
    assert moved["rows"] == straight["rows"]
