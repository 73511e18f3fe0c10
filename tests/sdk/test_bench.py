"""`alignflow bench`: the grid from a config, its errors before anything runs, jobs
that fail, resume, and the summary's statistics on hand-made rows."""

import csv
import json
import math
import os
from pathlib import Path

import pytest

from alignflow.sdk.bench import BenchConfig, bench, plan, split_overrides
from alignflow.sdk.bench.grid import Job, Metric
from alignflow.sdk.bench.results import ci95, job_rows, summarize, time_to_target
from alignflow.sdk.bench.runner import outcome
from alignflow.sdk.config import compose
from alignflow.sdk.errors import ConfigError
from tests.helpers import FAST
from tests.sdk import bad_rewards  # noqa: F401  (declares the raising reward here; jobs import it by ALIGNFLOW_PLUGINS)

ROOT = Path(__file__).parents[2]
TINY = [
    *(o for o in FAST if not o.startswith(("experiment=", "train.iterations", "eval.every"))),
    "logging.media=true",  # the galleries of the report
]


def grid(**kw) -> BenchConfig:
    return BenchConfig(
        **{"experiments": ["image_digits"], "algorithms": ["flow_grpo", "mixgrpo"], **kw}
    )


def test_the_grid_is_experiments_x_algorithms_x_seeds_x_axes_with_each_level_of_overrides(
    tmp_path,
):
    cfg = grid(
        output_dir=str(tmp_path),
        seeds=[0, 1],
        axes={"train.lr": [1e-4, 3e-4]},
        overrides=["sample.group_size=4"],
        algorithm_overrides={"mixgrpo": ["algorithm.window=2"]},
        pair_overrides={"image_digits": {"flow_grpo": ["algorithm.clip_range=1e-3"]}},
        iterations=3,
        seconds=90.0,
        eval_every=3,
        metrics={"image_digits": {"key": "eval/digit/accuracy_mean", "target": 0.9}},
    )
    jobs = plan(cfg)
    assert len(jobs) == 8 and len({j.id for j in jobs}) == 8
    first = jobs[0]
    assert first.id == "image_digits_flow_grpo_seed0_train.lr=0.0001"
    assert first.axes == {"train.lr": 1e-4} and first.modality == "image"
    assert first.metric == Metric("eval/digit/accuracy_mean", "max", 0.9)
    assert f"output_dir='{tmp_path}/jobs/{first.id}'" in first.overrides
    run = compose("train", first.overrides)
    assert (run.seed, run.train.lr, run.sample.group_size, run.train.iterations) == (0, 1e-4, 4, 3)
    assert run.train.max_seconds == 90.0
    assert run.algorithm["clip_range"] == 1e-3 and run.eval.every == run.checkpoint.every == 3
    mix = compose("train", next(j for j in jobs if j.algorithm == "mixgrpo").overrides)
    assert mix.algorithm["name"] == "mixgrpo" and mix.algorithm["window"] == 2
    assert "clip_range" not in mix.algorithm or mix.algorithm["clip_range"] != 1e-3


@pytest.mark.parametrize(
    "change, field",
    [
        ({"experiments": []}, "experiments"),
        ({"experiments": ["image_digitz"]}, "experiments"),
        ({"algorithms": ["flow_grpoo"]}, "algorithms"),
        ({"seeds": []}, "seeds"),
        ({"seeds": [0, 0]}, "seeds"),
        ({"axes": {"train.lr": []}}, "axes.train.lr"),
        ({"algorithm_overrides": {"mixgrpo_typo": ["algorithm.window=2"]}}, "algorithm_overrides"),
        ({"pair_overrides": {"image_digits": ["algorithm.window=2"]}}, "pair_overrides"),
        ({"pair_overrides": {"image_digits": {"mixgrpo": "algorithm.window=2"}}}, "pair_overrides"),
        (
            {"metrics": {"image_digits": {"key": "eval/x", "goal": "up"}}},
            "metrics.image_digits.goal",
        ),
        ({"metrics": {"image_digits": {"key": "train/reward_mean"}}}, "metrics.image_digits.key"),
        ({"baseline": "dance_grpo"}, "baseline"),
        ({"parallel": 0}, "parallel"),
        ({"seconds": -1.0}, "seconds"),
        # a job's own config: its error names the job and the field
        ({"overrides": ["train.lrr=1e-3"]}, "job image_digits_flow_grpo_seed0: train.lrr"),
        (
            {"overrides": ["sample.group_size=1"]},
            "job image_digits_flow_grpo_seed0: sample.group_size",
        ),
        # a gold reward that scores speech beside an image reward
        ({"overrides": ["+reward@gold.asr=wer"]}, "job image_digits_flow_grpo_seed0: reward"),
    ],
)
def test_a_bad_grid_is_refused_before_anything_runs(tmp_path, change, field):
    with pytest.raises(ConfigError) as e:
        plan(grid(output_dir=str(tmp_path), **change))
    assert e.value.field.startswith(field), str(e.value)
    assert not (tmp_path / "jobs").exists()


def test_command_line_overrides_go_to_the_benchmark_or_to_every_job():
    mine, jobs = split_overrides(
        ["benchmark=algorithms", "seeds=[0]", "parallel=2", "train.lr=1e-3", "+gold.x.name=y"]
    )
    assert mine == ["benchmark=algorithms", "seeds=[0]", "parallel=2"]
    assert jobs == ["train.lr=1e-3", "+gold.x.name=y"]


def test_the_shipped_benchmarks_compose_and_plan():
    for name, cells in (("algorithms", 11), ("cross_modal", 12)):
        cfg = compose("bench", [f"benchmark={name}"])
        assert cfg.seeds == [0, 1, 2], name
        cfg.seeds = [0]  # every job of a cell differs only in its seed
        assert len(plan(cfg)) == cells, name


def _bench(out, *extra, env=None):
    """A 2-job benchmark of tiny digits runs (2 iterations, evaluated at 0 and 2)."""
    old = dict(os.environ)
    os.environ.update(
        {"PYTHONPATH": str(ROOT), "ALIGNFLOW_PLUGINS": "tests.sdk.bad_rewards", **(env or {})}
    )
    try:
        return bench(
            [
                "experiments=[image_digits]",
                "algorithms=[flow_grpo,flow_grpo_fast]",
                f"output_dir={out}",
                "iterations=4",
                "eval_every=2",
                "baseline=flow_grpo",
                *TINY,
                "+reward@gold.jpeg=jpeg_compressibility",  # a gold reward, never optimised
                *extra,
            ],
            say=lambda *a: None,
        )
    finally:
        os.environ.clear()
        os.environ.update(old)


def _table(path):
    """results.csv without the columns of seconds (which differ between any two runs)."""
    with open(path) as f:
        return [{k: v for k, v in r.items() if "seconds" not in k} for r in csv.DictReader(f)]


def _jobs(out):
    return {r["id"]: r for r in map(json.loads, (out / "jobs.jsonl").read_text().splitlines())}


@pytest.mark.slow(seconds=60)
def test_killed_jobs_resume_failed_ones_retry_and_finished_ones_are_skipped(tmp_path):
    """Run 1: one job is SIGKILLed while writing checkpoint 4, the other one's reward
    raises; both are recorded and the benchmark ends. Run 2 resumes the first from
    checkpoint 2 and retries the second. Run 3 has nothing to do."""
    out = tmp_path / "b"
    raises = (
        "pair_overrides={image_digits:{flow_grpo_fast:"
        "['+reward.judge.name=tests.sdk.bad_rewards:Raises','train.reward_max_failures=0']}}"
    )
    _bench(out, raises, env={"ALIGNFLOW_FAILPOINT": "checkpoint.write:4"})
    killed, bad = _jobs(out).values()
    assert killed["state"] == bad["state"] == "failed"
    assert killed["error"].endswith("killed by SIGKILL"), killed["error"]
    assert bad["error"].startswith("alignflow: ") and "reward" in bad["error"], bad["error"]
    assert (out / "results.csv").is_file()  # what was evaluated so far

    _bench(out)
    jobs = _jobs(out)
    assert [(j["state"], j["attempts"], j["resumed"]) for j in jobs.values()] == [
        ("done", 2, True),
        ("done", 2, False),
    ]
    log = (out / "jobs" / "image_digits_flow_grpo_seed0" / "log.txt").read_text()
    assert "resumed from" in log and "checkpoint-2" in log
    rows = _table(out / "results.csv")
    assert [(r["algorithm"], r["iteration"]) for r in rows] == [
        (a, i) for a in ("flow_grpo", "flow_grpo_fast") for i in ("0", "2", "4")
    ]
    assert all(float(r["nfe"]) > 0 for r in rows if r["iteration"] != "0")
    tables = [(out / f).read_text() for f in ("results.csv", "summary.csv")]

    _bench(out)
    assert _jobs(out) == jobs
    assert [(out / f).read_text() for f in ("results.csv", "summary.csv")] == tables

    from tests.test_report import check_page, read_in_browser

    seen = read_in_browser(out / "report.html", tmp_path / "bench.png")
    check_page(seen)
    table = seen["tables"]["summary-image"]
    assert [r[1] for r in table[1:]] == ["flow_grpo", "flow_grpo_fast"], table
    assert "gold/jpeg (never optimised)" in table[0], table[0]
    # the gallery: the base beside each algorithm for 8 of the 10 digits (the resumed
    # job's too), every picture labelled with its prompt
    assert len(seen["images"]) == 2 + 8 * 3
    assert "a handwritten digit seven" in seen["text"]
    # what the jobs ran with, recorded at each of their starts (one was resumed)
    assert seen["tables"]["environment"][0] == ["environment", "2 jobs, 3 starts"]


@pytest.mark.parametrize(
    "code, stopping, state",
    [
        (0, False, "done"),
        (143, True, "stopped"),  # SIGTERM: saved a checkpoint and exited
        (130, True, "stopped"),  # SIGINT
        (-15, True, "stopped"),  # our SIGTERM came before the job's handlers were installed
        (-1, True, "stopped"),  # SIGHUP likewise
        (-9, True, "failed"),  # SIGKILL (an OOM kill) during a stop is still a failure
        (-15, False, "failed"),  # killed by someone else: the benchmark was not stopping
        (143, False, "failed"),
        (1, True, "failed"),
    ],
)
def test_a_job_ended_by_the_benchmarks_own_stop_is_stopped_not_failed(code, stopping, state):
    assert outcome(code, stopping) == state


# ----------------------------------------------------------------------- the statistics


def _rows(values_by_seed, algorithm="a", seconds=10.0, nfe=100):
    job = lambda s: Job(f"e_{algorithm}_{s}", "e", algorithm, s, {}, [], "image", Metric())  # noqa: E731
    out = []
    for seed, values in values_by_seed.items():
        metrics = [{"iteration": 0, "eval/reward_mean": values[0]}]
        for it, v in enumerate(values[1:], 1):
            metrics.append(
                {
                    "iteration": it,
                    "train/reward_mean": 0.0,
                    "train/nfe": nfe,
                    "time/rollout": seconds,
                    "eval/reward_mean": v,
                    "eval/gold/judge_mean": -v,
                }
            )
        out += job_rows(job(seed), metrics)
    return out


def test_ci95_is_students_t_over_the_seeds():
    mean, half = ci95([1.0, 2.0, 3.0])
    # t(0.975, 2) = 4.3027; sd = 1
    assert mean == 2.0 and half == pytest.approx(4.3027 / math.sqrt(3), rel=1e-4)
    assert math.isnan(ci95([5.0])[1])


def test_summary_means_targets_and_speedups_on_hand_made_rows():
    rows = _rows({0: [0.1, 0.5, 0.9], 1: [0.1, 0.7, 0.8], 2: [0.2, 0.6, 1.0]}, "base")
    rows += _rows({0: [0.1, 0.9, 0.9], 1: [0.1, 0.9, 1.0], 2: [0.2, 0.95, 1.0]}, "fast")
    metric = Metric("eval/reward_mean", "max", 0.85)
    s = {r["algorithm"]: r for r in summarize(rows, {"e": metric}, baseline="base")}
    assert s["base"]["value_mean"] == pytest.approx(0.9)
    assert s["base"]["gold/judge_mean"] == pytest.approx(-0.9)
    assert s["base"]["seeds"] == 3 and s["base"]["iteration"] == 2
    # base reaches 0.85 at iteration 2 in seeds 0 and 2 only: no speed-up without all seeds
    assert s["base"]["reached"] == "2/3" and s["base"]["seconds_to_target"] == 20.0
    assert s["fast"]["reached"] == "3/3" and s["fast"]["nfe_to_target"] == 100
    assert s["fast"]["speedup_seconds"] is None
    assert (
        s["base"]["nfe_per_iteration_mean"] == 100 and s["base"]["seconds_per_iteration_mean"] == 10
    )
    # lower is better (a WER): the first evaluation at or below the target
    wer = Metric("eval/reward_mean", "min", 0.15)
    assert time_to_target(_rows({0: [0.3, 0.2, 0.1]}), wer) == (20.0, 200)
    s = {r["algorithm"]: r for r in summarize(rows, {"e": Metric(target=0.75)}, baseline="base")}
    # base reaches 0.75 at iteration 2 in every seed (20 s), fast at iteration 1 (10 s)
    assert s["fast"]["speedup_seconds"] == 2.0 and s["fast"]["speedup_nfe"] == 2.0
    assert s["base"]["speedup_seconds"] == pytest.approx(1.0)


def test_a_seed_that_stopped_early_bounds_the_compared_iteration():
    rows = _rows({0: [0.1, 0.5, 0.9], 1: [0.1, 0.7]})
    (s,) = summarize(rows, {})
    assert s["iteration"] == 1 and s["value_mean"] == pytest.approx(0.6)


def test_under_a_wall_clock_budget_each_seed_is_compared_at_its_own_end():
    rows = _rows({0: [0.1, 0.5, 0.9], 1: [0.1, 0.7]})
    (s,) = summarize(rows, {}, own_end=True)
    assert s["iteration"] == 1.5 and s["value_mean"] == pytest.approx(0.8)
    assert s["seeds"] == 2 and s["seconds_per_iteration_mean"] == 10


def test_the_cli_lists_the_jobs_of_a_dry_run_and_refuses_a_bad_grid_in_one_line(capsys, tmp_path):
    from alignflow.sdk.cli import main

    args = ["bench", "benchmark=cross_modal", "seeds=[0]", "experiments=[image_digits]"]
    assert main([*args, f"output_dir={tmp_path}", "--dry-run"]) == 0
    lines = capsys.readouterr().out.splitlines()
    assert [line.split(":")[0] for line in lines] == [
        f"image_digits_{a}_seed0"
        for a in ("flow_grpo", "flow_grpo_fast", "mixgrpo", "diffusion_nft")
    ]
    assert "algorithm.every=10" in lines[2] and not (tmp_path / "jobs").exists()
    assert main([*args, "algorithms=[flow_grpo,nft]"]) == 2
    err = capsys.readouterr().err.strip()
    assert (
        err.startswith("alignflow: error: algorithms = 'nft': expected one of") and "\n" not in err
    )


def test_a_multirun_sweep_is_a_job_per_combination_under_the_runs_output_dir(tmp_path):
    from alignflow.sdk.bench.grid import sweep

    out, jobs = sweep(
        [
            *FAST,
            f"output_dir={tmp_path}",
            "seed=0,1",
            "algorithm=flow_grpo,mixgrpo",
            "train.lr=3e-3",
        ]
    )
    assert out == f"{tmp_path}/multirun"
    assert [j.id for j in jobs] == [
        "seed=0_algorithm=flow_grpo",
        "seed=0_algorithm=mixgrpo",
        "seed=1_algorithm=flow_grpo",
        "seed=1_algorithm=mixgrpo",
    ]
    run = compose("train", jobs[3].overrides)
    assert (run.seed, run.algorithm["name"], run.train.lr) == (1, "mixgrpo", 3e-3)
    assert run.output_dir == f"{out}/jobs/seed=1_algorithm=mixgrpo"
    with pytest.raises(ConfigError, match="at least one swept key"):
        sweep([*FAST, "seed=0"])
    with pytest.raises(ConfigError, match="job seed=0: train.lrr"):
        sweep([*FAST, "seed=0,1", "train.lrr=1"])


@pytest.mark.slow(seconds=40)
def test_train_multirun_stopped_mid_job_saves_it_and_a_rerun_resumes_it_and_runs_the_rest(
    tmp_path,
):
    """`alignflow train -m seed=0,1`: SIGTERM while the first combination trains stops
    it with a checkpoint (recorded as stopped) and the sweep with it; the rerun (with a
    budget the stopped run has not reached) resumes it and runs the second. The sweep and
    the benchmark share their runner, so this is the bench's stop too."""
    import signal
    import subprocess
    import sys
    import time

    from alignflow.sdk.cli import main

    args = ["train", "-m", *TINY, "experiment=image_digits", f"output_dir={tmp_path}"]
    args += ["eval.every=2", "checkpoint.every=2", "eval.samples_per_prompt=1", "seed=0,1"]
    cmd = [sys.executable, "-m", "alignflow.sdk.cli", *args, "train.iterations=400"]
    proc = subprocess.Popen(cmd, stderr=subprocess.PIPE, text=True, env={**os.environ})
    out = tmp_path / "multirun"
    job = out / "jobs" / "seed=0"
    deadline = time.time() + 120
    while not (job / "checkpoint-2").is_dir():
        assert proc.poll() is None and time.time() < deadline
        time.sleep(0.2)
    proc.send_signal(signal.SIGTERM)
    err = proc.communicate(timeout=120)[1]
    assert proc.returncode == 130 and "alignflow: interrupted" in err, err[-2000:]
    record = json.loads((job / "job.json").read_text())
    assert record["state"] == "stopped" and record["returncode"] == 128 + signal.SIGTERM
    assert "stopped by SIGTERM" in record["error"]
    assert not (out / "jobs" / "seed=1").exists()
    stopped_at = max(int(p.name.split("-")[1]) for p in job.glob("checkpoint-*"))
    assert (out / "results.csv").is_file()  # the tables of what was done

    budget = stopped_at + 2
    assert main([*args, f"train.iterations={budget}"]) == 0
    jobs = _jobs(out)
    assert [
        (j["id"], j["state"], j["seed"], j["attempts"], j["resumed"]) for j in jobs.values()
    ] == [
        ("seed=0", "done", 0, 2, True),
        ("seed=1", "done", 1, 1, False),
    ]
    rows = _table(out / "results.csv")
    # every 2 iterations and at the end (a stop saves at any iteration, so it may be odd)
    evaluated = [str(i) for i in sorted({*range(0, budget + 1, 2), budget})]
    assert [(r["seed"], r["iteration"]) for r in rows] == [
        (s, i) for s in ("0", "1") for i in evaluated
    ]
    assert (out / "report.html").is_file()
