"""Static HTML reports of a run or a benchmark: ``report.html`` beside its folder
``report_files/`` (plots), opened from disk with no server and no network.

- a run (``alignflow train`` writes it at the end; ``alignflow report RUN_DIR``): the
  held-out metrics before and after, the reward curve, the hacking monitors (gold
  rewards, diversity, KL drift from the base) beside the optimised reward, metrics
  against wall-clock and NFEs, and the before/after gallery of the held-out samples
  (images, GIF clips, audio players), each labelled with its prompt and scores;
- a benchmark (``alignflow bench`` writes it; ``alignflow report BENCH_DIR``): the
  summary table per modality (mean ± 95% CI over seeds), the curves of every
  experiment against iterations, wall-clock and NFEs with a band over the seeds, the
  monitors, the jobs that failed, and per experiment a gallery of the base beside
  every algorithm's samples (first seed).

Both pages carry the config and the environments (versions, machine, git commit) that
the runs recorded at each start: a run resumed with other code shows both.
Pages are rendered with Jinja2 (autoescaped) from ``templates/report.html.j2``.

``to=DEST`` (``alignflow report FOLDER --to DEST``) publishes the page instead: a folder
that holds everything it shows (the plots, the gallery's media, the tables) and nothing
else, to commit or send; the gallery keeps ``per`` prompts per experiment.
"""

from __future__ import annotations

import json
import os
import shutil
from collections import defaultdict
from collections.abc import Callable
from pathlib import Path
from typing import Any

from alignflow.sdk.bench.grid import Job
from alignflow.sdk.bench.results import job_rows
from alignflow.sdk.files import atomic_write_text
from alignflow.sdk.tracking import ENVIRONMENT_FILE, environment, read_metrics

PAGE, FILES = "report.html", "report_files"
MONITORS = ("train/diversity", "train/kl_base")


def write_report_page(folder: str | Path, to: str | Path | None = None, per: int = 8) -> Path:
    """The page of a run folder (``summary.json``) or a benchmark folder
    (``benchmark.json``), in the folder or published to ``to`` (see the module doc)."""
    folder = Path(folder)
    if per < 1:
        from alignflow.sdk.errors import ConfigError

        raise ConfigError("report --per", per, "an int >= 1")
    if (folder / "benchmark.json").is_file():
        return write_bench_report(folder, to, per)
    if (folder / "metrics.jsonl").is_file():
        return write_run_report(folder, to, per)
    from alignflow.sdk.errors import DataError

    raise DataError(
        f"report: {folder} is neither a run folder (metrics.jsonl) nor a benchmark folder "
        "(benchmark.json)"
    )


def _destination(out: Path, to: str | Path | None, tables: tuple[str, ...]) -> Path:
    """Where the page goes: ``out``, or ``to`` with a copy of ``out``'s tables. ``to``
    is new, empty or an earlier publication (whose files are replaced). Not copied:
    what makes a folder a run's or a benchmark's (``metrics.jsonl``, ``benchmark.json``),
    so that a report of the published folder is refused, not written without its media."""
    if to is None or Path(to).resolve() == out.resolve():
        return out
    dest = Path(to)
    if dest.exists() and any(dest.iterdir()):
        if not (dest / PAGE).is_file():
            from alignflow.sdk.errors import ConfigError

            raise ConfigError(
                "report --to", str(dest), "a new or empty folder, or an earlier publication"
            )
        shutil.rmtree(dest / FILES, ignore_errors=True)  # the media an older page showed
    dest.mkdir(parents=True, exist_ok=True)
    for name in tables:
        if (out / name).is_file():
            shutil.copyfile(out / name, dest / name)
    return dest


def _placer(out: Path, dest: Path) -> Callable[[Path], str]:
    """A media file's address on the page in ``dest``: a copy under ``report_files/media``
    when the page is published elsewhere."""

    def place(path: Path) -> str:
        if dest == out:
            return os.path.relpath(path, dest)
        copy = dest / FILES / "media" / Path(path).relative_to(out)
        copy.parent.mkdir(parents=True, exist_ok=True)
        if path.is_file():
            shutil.copyfile(path, copy)
        return copy.relative_to(dest).as_posix()

    return place


# ----------------------------------------------------------------------------- a run


def write_run_report(out: Path, to: str | Path | None = None, per: int = 8) -> Path:
    out = Path(out)
    dest = _destination(out, to, ("summary.json", "config.json"))
    rows = read_metrics(out)
    summary = _json(out / "summary.json") or {}
    config = _json(out / "config.json") or {}
    files = dest / FILES
    files.mkdir(exist_ok=True)
    before, after = summary.get("before") or {}, summary.get("after") or {}
    table = [
        {
            "metric": k.removeprefix("eval/").removesuffix("_mean"),
            "before": before.get(k),
            "after": after.get(k),
        }
        for k in sorted(set(before) | set(after))
        if k.endswith("_mean")
    ]
    plots = []
    if rows:
        plots.append(_plot_run_curves(rows, files / "curves.png", config.get("name", "")))
        monitors = _plot_run_monitors(rows, files / "monitors.png")
        if monitors:
            plots.append(monitors)
    gallery = _json(out / "samples" / "gallery.json")
    return _render(
        dest,
        kind="run",
        title=f"alignflow run: {config.get('name') or out.name}",
        summary=summary,
        table=table,
        plots=[p.relative_to(dest).as_posix() for p in plots],
        gallery=_gallery_rows(gallery, out, _placer(out, dest), per if dest != out else None),
        config=json.dumps(config, indent=1),
        environments=_environments([out], "run"),
    )


def _plot_run_curves(rows: list[dict], path: Path, title: str) -> Path:
    plt = _pyplot()
    train = [r for r in rows if "train/reward_mean" in r]
    # the held-out reward with its training seconds and NFEs so far, as a benchmark counts them
    evals = job_rows(Job("run", "", "", 0, {}, []), rows)
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    if train:
        it = [r["iteration"] for r in train]
        mean = [r["train/reward_mean"] for r in train]
        std = [r.get("train/reward_std", 0.0) for r in train]
        axes[0].plot(it, mean, label="training reward (mean)")
        axes[0].fill_between(
            it, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)], alpha=0.2
        )
    for ax, xs, label in (
        (axes[0], "iteration", "iteration"),
        (axes[1], "wall_seconds", "training wall-clock (s)"),
        (axes[2], "nfe", "NFEs (thousands)"),
    ):
        if evals:
            x = [r[xs] / (1e3 if xs == "nfe" else 1) for r in evals]
            ax.plot(x, [r["value"] for r in evals], "o-", label="held-out reward")
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    axes[0].set_ylabel("reward")
    fig.suptitle(title)
    return _save(fig, path)


def _plot_run_monitors(rows: list[dict], path: Path) -> Path | None:
    keys = sorted(
        {k for r in rows for k in r if k.startswith("eval/gold/") and k.endswith("_mean")}
    )
    keys += [k for k in MONITORS if any(k in r for r in rows)]
    if not keys:
        return None
    plt = _pyplot()
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        points = [(r["iteration"], r[key]) for r in rows if key in r]
        ax.plot(*zip(*points), "o-", ms=3)
        ax.set_title(_monitor_title(key), fontsize=10)
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    return _save(fig, path)


# ----------------------------------------------------------------------------- a benchmark


def write_bench_report(out: Path, to: str | Path | None = None, per: int = 8) -> Path:
    import csv

    out = Path(out)
    dest = _destination(out, to, ("summary.csv", "results.csv"))
    config = _json(out / "benchmark.json") or {}
    rows = [json.loads(line) for line in _lines(out / "results.jsonl")]
    summary = list(csv.DictReader(_lines(out / "summary.csv")))
    jobs = [json.loads(line) for line in _lines(out / "jobs.jsonl")]
    files = dest / FILES
    files.mkdir(exist_ok=True)
    by_modality: dict[str, list[dict]] = defaultdict(list)
    for r in summary:
        by_modality[r["modality"] or "?"].append(r)
    # the gold rewards each modality's table shows beside the optimised one
    golds = {
        m: sorted({k[: -len("_mean")] for r in rs for k, v in r.items() if _gold(k) and v})
        for m, rs in by_modality.items()
    }
    experiments = []
    for experiment in dict.fromkeys(r["experiment"] for r in rows):
        mine = [r for r in rows if r["experiment"] == experiment]
        experiments.append(
            {
                "name": experiment,
                "metric": mine[0]["metric"],
                "plots": [
                    p.relative_to(dest).as_posix()
                    for p in (
                        _plot_bench_curves(mine, files / f"{experiment}_curves.png", experiment),
                        _plot_bench_monitors(mine, files / f"{experiment}_monitors.png"),
                    )
                    if p is not None
                ],
                "gallery": _bench_gallery(out, experiment, jobs, _placer(out, dest), per),
            }
        )
    return _render(
        dest,
        kind="bench",
        title=f"alignflow benchmark: {config.get('name') or out.name}",
        by_modality=dict(by_modality),
        golds=golds,
        experiments=experiments,
        jobs=jobs,
        failed=[j for j in jobs if j.get("state") == "failed"],
        config=json.dumps(config, indent=1),
        environments=_environments([out / "jobs" / j["id"] for j in jobs], "job"),
    )


def _series(rows: list[dict], x: str, y: str) -> dict[str, list[tuple]]:
    """{algorithm (and axes): [(x mean, y mean, y min, y max)] over seeds, per iteration}."""
    cells: dict[str, dict[int, list[dict]]] = defaultdict(lambda: defaultdict(list))
    for r in rows:
        if r.get(y) is None:
            continue
        cells[_series_name(r)][r["iteration"]].append(r)
    out = {}
    for name, by_it in cells.items():
        out[name] = [
            (
                sum(r[x] for r in rs) / len(rs),
                sum(r[y] for r in rs) / len(rs),
                min(r[y] for r in rs),
                max(r[y] for r in rs),
            )
            for _, rs in sorted(by_it.items())
        ]
    return out


def _series_name(row: dict) -> str:
    axes = " ".join(f"{k[5:]}={v}" for k, v in row.items() if k.startswith("axis:"))
    return f"{row['algorithm']} {axes}".strip()


def _plot_bench_curves(rows: list[dict], path: Path, experiment: str) -> Path:
    plt = _pyplot()
    styles = _styles(rows)
    fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), sharey=True)
    for ax, x, label in (
        (axes[0], "iteration", "iteration"),
        (axes[1], "wall_seconds", "training wall-clock (s)"),
        (axes[2], "nfe", "NFEs"),
    ):
        for name, points in _series(rows, x, "value").items():
            xs, mean, lo, hi = zip(*points)
            ax.plot(xs, mean, ms=3, label=name, **styles[name])
            ax.fill_between(xs, lo, hi, color=styles[name]["color"], alpha=0.15)
        ax.set_xlabel(label)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel(rows[0]["metric"])
    _legend(fig, axes[0])
    fig.suptitle(f"{experiment}: mean over seeds, band from the lowest to the highest seed")
    return _save(fig, path)


def _plot_bench_monitors(rows: list[dict], path: Path) -> Path | None:
    keys = sorted({k for r in rows for k in r if k.startswith("gold/")})
    keys = ["reward", *keys, "diversity", "kl_drift"]
    keys = [k for k in keys if any(r.get(k) is not None for r in rows)]
    if not keys:
        return None
    plt = _pyplot()
    styles = _styles(rows)
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        for name, points in _series(rows, "iteration", key).items():
            xs, mean, lo, hi = zip(*points)
            ax.plot(xs, mean, ms=3, label=name, **styles[name])
            ax.fill_between(xs, lo, hi, color=styles[name]["color"], alpha=0.15)
        ax.set_title(
            {
                "reward": "optimised reward (held out)",
                "diversity": "diversity (training samples)",
                "kl_drift": "KL drift from the base",
            }.get(key, f"{key} (never optimised)"),
            fontsize=10,
        )
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
    _legend(fig, axes[0][0])
    return _save(fig, path)


def _styles(rows: list[dict]) -> dict[str, dict[str, Any]]:
    """One look per series, the same in every plot of an experiment: the ten tab10
    colours, then the same colours dashed with squares, then dotted with triangles."""
    names = list(dict.fromkeys(map(_series_name, rows)))
    return {
        name: {
            "color": f"C{i % 10}",
            "linestyle": ("-", "--", ":")[i // 10 % 3],
            "marker": ("o", "s", "^")[i // 10 % 3],
        }
        for i, name in enumerate(names)
    }


def _legend(fig: Any, ax: Any) -> None:
    """Beside the plots when there are many series, over the first one otherwise."""
    handles, labels = ax.get_legend_handles_labels()
    if len(labels) > 4:
        fig.legend(handles, labels, loc="center left", bbox_to_anchor=(1.0, 0.5), fontsize=8)
    else:
        ax.legend(fontsize=8)


def _bench_gallery(
    out: Path, experiment: str, jobs: list[dict], place: Callable[[Path], str], per: int
) -> dict:
    """The base's samples beside each algorithm's (its first seed's job), ``per`` prompts."""
    columns, base = [], None
    for j in jobs:
        if j.get("experiment") != experiment or j.get("state") != "done":
            continue
        if any(c["algorithm"] == j["algorithm"] and c["axes"] == j.get("axes") for c in columns):
            continue
        folder = out / "jobs" / j["id"]
        gallery = _json(folder / "samples" / "gallery.json")
        if not gallery:
            continue
        items = _gallery_rows(gallery, folder, place, per)
        base = base or [i["before"] for i in items]
        columns.append({"algorithm": j["algorithm"], "axes": j.get("axes"), "items": items})
    prompts = [i["prompt"] for i in columns[0]["items"]] if columns else []
    return {"prompts": prompts, "base": base or [], "columns": columns}


# ----------------------------------------------------------------------------- shared


def _gallery_rows(
    gallery: dict | None, folder: Path, place: Callable[[Path], str], per: int | None
) -> list[dict]:
    """The gallery's first ``per`` pairs (None: all), their files placed for the page."""
    if not gallery:
        return []
    rows = []
    for item in gallery["items"][:per]:
        row = {"prompt": item["prompt"], "seed": item["seed"]}
        for side in ("before", "after"):
            path = folder / item[side]["file"]
            row[side] = {
                "src": place(path),
                "kind": _kind(path),
                "scores": item[side]["scores"],
            }
        rows.append(row)
    return rows


def _kind(path: Path) -> str:
    return {".png": "image", ".gif": "image", ".wav": "audio", ".mp4": "video"}.get(
        path.suffix.lower(), "file"
    )


def _environments(folders: list[Path], unit: str) -> dict[str, Any]:
    """The environments the runs in ``folders`` recorded at their starts (see
    ``tracking.record_environment``), one column per distinct one, labelled with the
    runs and starts it covers; the page writer's own, labelled so, where a run recorded
    none (runs from before these records). {"labels": [...], "rows": [[key, *values]]}."""
    groups: dict[str, dict[str, Any]] = {}
    unrecorded = 0
    for folder in folders:
        records = read_metrics(folder / ENVIRONMENT_FILE)  # skips a line cut by a kill
        unrecorded += not records
        for r in records:
            env = {k: str(v) for k, v in r.items() if k not in ("iteration", "time")}
            group = groups.setdefault(json.dumps(env), {"env": env, "runs": set(), "starts": []})
            group["runs"].add(folder)
            group["starts"].append(r.get("iteration", 0))
    columns = []
    for g in groups.values():
        if unit == "run":
            label = "this run, started at iteration " + ", ".join(map(str, g["starts"]))
        else:
            label = f"{_count(len(g['runs']), unit)}, {_count(len(g['starts']), 'start')}"
        columns.append((label, g["env"]))
    if unrecorded:
        who = "the run" if unit == "run" else _count(unrecorded, unit)
        columns.append((f"this page's writer ({who} recorded none)", environment()))
    keys = list(dict.fromkeys(k for _, env in columns for k in env))
    return {
        "labels": [label for label, _ in columns],
        "rows": [[k, *(env.get(k, "–") for _, env in columns)] for k in keys],
    }


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}" + ("" if n == 1 else "s")


def _render(out: Path, **context: Any) -> Path:
    import jinja2

    loader = jinja2.PackageLoader("alignflow.sdk", "templates")
    env = jinja2.Environment(loader=loader, autoescape=True, undefined=jinja2.StrictUndefined)
    env.filters["num"] = _num
    page = env.get_template("report.html.j2").render(**context)
    atomic_write_text(out / PAGE, page)
    return out / PAGE


def _gold(key: str) -> bool:
    return key.startswith("gold/") and key.endswith("_mean")


def _num(value: Any, digits: int = 3) -> str:
    if value in (None, ""):
        return "–"
    try:
        return f"{float(value):.{digits}f}"
    except (TypeError, ValueError):
        return str(value)


def _monitor_title(key: str) -> str:
    if key.startswith("eval/gold/"):
        return f"gold {key[10:].removesuffix('_mean')} (held out, never optimised)"
    return {
        "train/diversity": "diversity (training samples)",
        "train/kl_base": "KL drift from the base",
    }[key]


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.tight_layout()
    fig.savefig(path, dpi=90, bbox_inches="tight")  # with a legend beside the plots
    plt.close(fig)
    return path


def _json(path: Path) -> Any:
    try:
        return json.loads(Path(path).read_text())
    except (OSError, ValueError):
        return None


def _lines(path: Path) -> list[str]:
    return Path(path).read_text().splitlines() if Path(path).is_file() else []
