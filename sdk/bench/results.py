"""A benchmark's tables, from its jobs' metrics files.

- ``results.csv`` / ``results.jsonl``: one tidy row per job and evaluation point:
  experiment, modality, algorithm, seed, the grid's other axes, iteration, training
  wall seconds and NFEs so far (denoiser forwards of rollouts and updates), the held-out
  metric, the optimised reward on the held-out prompts, the gold (never optimised)
  rewards, the training samples' diversity, the KL drift from the base, and the seconds
  per iteration of each phase so far.
- ``summary.csv``: per (experiment, algorithm, axes), over seeds, at the last
  evaluation every seed reached (under a wall-clock budget: each seed's own last): the
  mean and the half-width of its 95% confidence interval (Student's t, n - 1 degrees of
  freedom), the time and NFEs to the metric's target, and the speed-up against the
  benchmark's baseline algorithm.

Everything here is a function of the metrics files, so a benchmark that was killed
and resumed writes the same tables (but for the seconds) as one that was not.
"""

from __future__ import annotations

import csv
import json
import math
import statistics
from collections import defaultdict
from pathlib import Path
from typing import Any

from alignflow.sdk.bench.grid import Job, Metric
from alignflow.sdk.files import atomic_write_text
from alignflow.sdk.tracking import TRAIN_PHASES, read_metrics

KEYS = ("experiment", "modality", "algorithm", "seed")


def job_rows(job: Job, rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The evaluation points of one job's metrics rows (``metrics.jsonl``)."""
    out, nfe, iters, last = [], 0.0, 0, {}
    phases: dict[str, float] = defaultdict(float)
    for r in rows:
        if "train/reward_mean" in r:  # a training iteration (row 0 is the base's evaluation)
            iters += 1
            nfe += r.get("train/nfe", 0.0)
            for p in TRAIN_PHASES:
                phases[p] += r.get(f"time/{p}", 0.0)
            last = r
        if job.metric.key not in r:
            continue
        row = {
            "job": job.id,
            "experiment": job.experiment,
            "modality": job.modality,
            "algorithm": job.algorithm,
            "seed": job.seed,
            **{f"axis:{k}": v for k, v in job.axes.items()},
            "iteration": r.get("iteration", 0),
            "wall_seconds": sum(phases.values()),
            "nfe": nfe,
            "metric": job.metric.key,
            "value": r[job.metric.key],
            "reward": r.get("eval/reward_mean"),
            **{
                k.removeprefix("eval/").removesuffix("_mean"): v
                for k, v in r.items()
                if k.startswith("eval/gold/") and k.endswith("_mean")
            },
            "diversity": last.get("train/diversity"),
            "kl_drift": last.get("train/kl_base"),
            **{f"seconds_{p}": phases[p] / iters if iters else None for p in TRAIN_PHASES},
        }
        out.append(row)
    return out


def collect(jobs: list[Job], out: Path) -> list[dict[str, Any]]:
    return [row for j in jobs for row in job_rows(j, read_metrics(Path(out) / "jobs" / j.id))]


def ci95(values: list[float]) -> tuple[float, float]:
    """(mean, half-width of the 95% confidence interval of the mean); NaN half-width
    for a single value."""
    from scipy import stats

    n = len(values)
    mean = statistics.fmean(values)
    if n < 2:
        return mean, math.nan
    return mean, float(stats.t.ppf(0.975, n - 1)) * statistics.stdev(values) / math.sqrt(n)


def time_to_target(rows: list[dict[str, Any]], metric: Metric) -> tuple[float, float] | None:
    """(wall seconds, NFEs) at the first evaluation that reaches the target; None if none
    does (or there is no target)."""
    if metric.target is None:
        return None
    for r in sorted(rows, key=lambda r: r["iteration"]):
        if metric.better(r["value"], metric.target):
            return r["wall_seconds"], r["nfe"]
    return None


def summarize(
    rows: list[dict[str, Any]],
    metrics: dict[str, Metric],
    baseline: str = "",
    own_end: bool = False,
) -> list[dict[str, Any]]:
    """One row per (experiment, algorithm, axes) over its seeds; see the module doc.
    ``own_end`` (a wall-clock budget, where seeds end at different iterations): each seed
    at its own last evaluation, and ``iteration`` is their mean."""
    cells: dict[tuple, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        axes = tuple(sorted((k, str(v)) for k, v in r.items() if k.startswith("axis:")))
        cells[(r["experiment"], r["modality"], r["algorithm"], axes)][r["seed"]].append(r)
    out = []
    for (experiment, modality, algorithm, axes), seeds in cells.items():
        metric = metrics.get(experiment, Metric())
        if own_end:
            at = [max(rs, key=lambda r: r["iteration"]) for rs in seeds.values()]
            final = round(statistics.fmean(r["iteration"] for r in at), 1)
        else:  # the last iteration every seed evaluated
            final = min(max(r["iteration"] for r in rs) for rs in seeds.values())
            at = [
                next(r for r in rs if r["iteration"] == final)
                for rs in seeds.values()
                if _has(rs, final)
            ]
        base = [next(r for r in rs if r["iteration"] == 0) for rs in seeds.values() if _has(rs, 0)]
        row: dict[str, Any] = {
            "experiment": experiment,
            "modality": modality,
            "algorithm": algorithm,
            **dict(axes),
            "seeds": len(at),
            "iteration": final,
            "metric": metric.key,
            "goal": metric.goal,
        }
        for name, values in (
            ("base", [r["value"] for r in base]),
            ("value", [r["value"] for r in at]),
            ("reward", [r["reward"] for r in at]),
            *(
                (k, [r[k] for r in at])
                for k in sorted({k for r in at for k in r if k.startswith("gold/")})
            ),
            ("diversity", [r["diversity"] for r in at]),
            ("kl_drift", [r["kl_drift"] for r in at]),
            (
                "seconds_per_iteration",
                [r["wall_seconds"] / r["iteration"] for r in at if r["iteration"]],
            ),
            ("nfe_per_iteration", [r["nfe"] / r["iteration"] for r in at if r["iteration"]]),
        ):
            values = [v for v in values if v is not None and math.isfinite(v)]
            row[f"{name}_mean"], row[f"{name}_ci95"] = ci95(values) if values else (None, None)
        hits = [time_to_target(rs, metric) for rs in seeds.values()]
        reached = [h for h in hits if h is not None]
        row["target"] = metric.target
        row["reached"] = f"{len(reached)}/{len(hits)}" if metric.target is not None else ""
        row["seconds_to_target"] = statistics.fmean(h[0] for h in reached) if reached else None
        row["nfe_to_target"] = statistics.fmean(h[1] for h in reached) if reached else None
        row["_all_reached"] = bool(hits) and len(reached) == len(hits)
        out.append(row)
    _speedups(out, baseline)
    for row in out:
        del row["_all_reached"]
    return out


def _speedups(summary: list[dict[str, Any]], baseline: str) -> None:
    """Baseline's mean time (and NFEs) to target / the algorithm's, within an experiment
    and axes, when every seed of both reached it."""
    for row in summary:
        row["speedup_seconds"] = row["speedup_nfe"] = None
        if not baseline:
            continue
        ref = next(
            (
                r
                for r in summary
                if r["algorithm"] == baseline
                and r["experiment"] == row["experiment"]
                and _axes(r) == _axes(row)
            ),
            None,
        )
        if ref and ref["_all_reached"] and row["_all_reached"]:
            row["speedup_seconds"] = ref["seconds_to_target"] / max(row["seconds_to_target"], 1e-9)
            row["speedup_nfe"] = ref["nfe_to_target"] / max(row["nfe_to_target"], 1e-9)


def _axes(row: dict[str, Any]) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k.startswith("axis:")}


def _has(rows: list[dict[str, Any]], iteration: int) -> bool:
    return any(r["iteration"] == iteration for r in rows)


def write_tables(out: Path, rows: list[dict[str, Any]], summary: list[dict[str, Any]]) -> None:
    out = Path(out)
    _write_csv(out / "results.csv", rows)
    atomic_write_text(out / "results.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    _write_csv(out / "summary.csv", summary)


def _write_csv(path: Path, rows: list[dict[str, Any]]) -> None:
    import io

    columns: list[str] = []
    for r in rows:
        columns += [k for k in r if k not in columns]
    buf = io.StringIO()
    w = csv.DictWriter(buf, columns, lineterminator="\n")
    w.writeheader()
    for r in rows:
        w.writerow({k: _cell(v) for k, v in r.items()})
    atomic_write_text(path, buf.getvalue())


def _cell(v: Any) -> Any:
    if isinstance(v, float):
        return "" if math.isnan(v) else f"{v:.6g}"
    return "" if v is None else v


def table(summary: list[dict[str, Any]]) -> str:
    """The summary as a fixed-width text table for the console."""
    head = (
        f"{'experiment':<16}{'algorithm':<16}{'seeds':>6}{'it':>5}{'metric':>26}"
        f"{'base':>8}{'final':>18}{'to target (s)':>15}{'speed-up':>9}"
    )
    lines = [head, "-" * len(head)]
    for r in summary:
        axes = " ".join(f"{k[5:]}={v}" for k, v in _axes(r).items())
        final = (
            f"{r['value_mean']:.3f}"
            + (f" ± {r['value_ci95']:.3f}" if _finite(r["value_ci95"]) else "")
            if r["value_mean"] is not None
            else "-"
        )
        seconds = (
            f"{r['seconds_to_target']:.0f} ({r['reached']})"
            if r["seconds_to_target"] is not None
            else (f"never ({r['reached']})" if r["reached"] else "-")
        )
        speed = f"{r['speedup_seconds']:.2f}x" if r["speedup_seconds"] else "-"
        base = f"{r['base_mean']:.3f}" if r["base_mean"] is not None else "-"
        name = r["algorithm"] + (f" {axes}" if axes else "")
        lines.append(
            f"{r['experiment']:<16}{name:<16}{r['seeds']:>6}{r['iteration']:>5}"
            f"{r['metric'][:25]:>26}{base:>8}{final:>18}{seconds:>15}{speed:>9}"
        )
    return "\n".join(lines)


def _finite(v: Any) -> bool:
    return isinstance(v, float) and math.isfinite(v)
