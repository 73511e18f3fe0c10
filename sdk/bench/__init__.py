"""Benchmarks from configs: ``alignflow bench benchmark=NAME [overrides]``.

- :mod:`~alignflow.sdk.bench.grid`: the benchmark config and its grid of jobs, each
  composed and checked before any runs;
- :mod:`~alignflow.sdk.bench.runner`: one ``alignflow train`` process per job, N at a
  time, skipped when done and resumed when interrupted;
- :mod:`~alignflow.sdk.bench.results`: the tidy results table and the per-cell
  summary over seeds (mean, 95% CI, time-to-target, speed-up);
- :mod:`~alignflow.sdk.report_html`: ``report.html``, the page of it all.

Overrides on the command line whose key is a field of
:class:`~alignflow.sdk.bench.grid.BenchConfig` (``seeds=[0]``, ``parallel=2``) change
the benchmark; every other one (``train.lr=1e-4``) is given to every job.
"""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path
from typing import Any

from alignflow.sdk.bench.grid import BenchConfig, Job, plan
from alignflow.sdk.bench.results import collect, summarize, table, write_tables
from alignflow.sdk.bench.runner import read_job, run_jobs
from alignflow.sdk.files import atomic_write_text

__all__ = ["BenchConfig", "Job", "bench", "multirun", "plan", "split_overrides"]


def split_overrides(overrides: list[str]) -> tuple[list[str], list[str]]:
    """(the benchmark's overrides, every job's): by the key's first part."""
    fields = {f.name for f in dataclasses.fields(BenchConfig)} | {"benchmark"}
    mine, jobs = [], []
    for o in overrides:
        key = o.lstrip("+~").split("=", 1)[0]
        if key.startswith("hydra.searchpath"):
            mine.append(o)
            jobs.append(o)  # the jobs find the same experiment configs
        elif key.split(".")[0].split("/")[0] in fields:
            mine.append(o)
        else:
            jobs.append(o)
    return mine, jobs


def bench(overrides: list[str], *, dry_run: bool = False, say=print) -> list[dict[str, Any]]:
    """Compose, plan, run what is not done, and write the tables; returns the summary."""
    from alignflow.sdk.config import compose

    mine, extra = split_overrides(overrides)
    cfg: BenchConfig = compose("bench", mine)
    jobs = plan(cfg, extra)
    out = Path(cfg.output_dir)
    if dry_run:
        for j in jobs:
            say(f"{j.id}: {' '.join(j.overrides)}")
        return []
    summary = run_and_write(cfg, jobs, out, say)
    failed = [r for r in (read_job(out, j) for j in jobs) if r.get("state") == "failed"]
    for r in failed:
        say(f"failed: {r['id']} (exit {r.get('returncode')}): {r.get('error', '')}")
    return summary


def multirun(overrides: list[str], *, procs: int = 1, say=print) -> list[dict[str, Any]]:
    """``alignflow train -m key=a,b ...``: every combination of the swept values is its
    own run, one process after the other (each with ``--procs``), in
    ``<output_dir>/multirun/jobs/<id>``; composed here, outside the ranks; skipped,
    resumed and retried on a rerun and summarised as a benchmark is."""
    from alignflow.sdk.bench.grid import sweep

    output_dir, jobs = sweep(overrides)
    cfg = BenchConfig(
        name="multirun", output_dir=output_dir, overrides=list(overrides), procs=procs
    )
    return run_and_write(cfg, jobs, Path(output_dir), say)


def run_and_write(cfg: BenchConfig, jobs: list[Job], out: Path, say=print) -> list[dict[str, Any]]:
    """Run the jobs not done yet; the tables and the page, also after a stop (of what is
    done so far); returns the summary."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "benchmark.json", json.dumps(dataclasses.asdict(cfg), indent=1))
    try:
        run_jobs(jobs, out, parallel=cfg.parallel, procs=cfg.procs, say=say)
    finally:
        summary = write_results(cfg, jobs, out)
    say(table(summary))
    return summary


def write_results(cfg: BenchConfig, jobs: list[Job], out: Path) -> list[dict[str, Any]]:
    from alignflow.sdk.report_html import write_bench_report

    rows = collect(jobs, out)
    summary = summarize(
        rows, {j.experiment: j.metric for j in jobs}, cfg.baseline, own_end=cfg.seconds > 0
    )
    write_tables(out, rows, summary)
    records = [read_job(out, j) or {"id": j.id, "state": "not started"} for j in jobs]
    atomic_write_text(out / "jobs.jsonl", "".join(json.dumps(r) + "\n" for r in records))
    write_bench_report(out)
    return summary
