"""The HTML reports, read in a real headless browser (Playwright driving Debian's
chromium, which scripts/setup.sh installs): each page loads from file:// with no
console error and no network request, every image has its pixels and every audio
player its duration, the tables have their rows, and a screenshot is written."""

import json
import shutil
from pathlib import Path

import pytest

from alignflow.sdk.errors import ConfigError
from alignflow.sdk.report_html import write_report_page
from tests.helpers import digits_cfg


def read_in_browser(page_path: Path, screenshot: Path) -> dict:
    from playwright.sync_api import sync_playwright

    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    assert chromium, "no chromium on PATH: scripts/setup.sh installs Debian's (apt-get)"
    seen: dict = {"errors": [], "requests": []}
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])
        page = browser.new_page(viewport={"width": 1400, "height": 900})
        page.on("console", lambda m: seen["errors"].append(m.text) if m.type == "error" else None)
        page.on("pageerror", lambda e: seen["errors"].append(str(e)))
        page.on("request", lambda r: seen["requests"].append(r.url))
        page.goto(page_path.as_uri(), wait_until="load")
        # audio and video elements: wait until each knows its duration (or failed)
        page.wait_for_function(
            "() => [...document.querySelectorAll('audio,video')]"
            ".every(m => m.readyState >= 1 || m.error)",
            timeout=30_000,
        )
        seen["images"] = page.eval_on_selector_all(
            "img", "els => els.map(e => [e.getAttribute('src'), e.complete ? e.naturalWidth : 0])"
        )
        seen["media"] = page.eval_on_selector_all(
            "audio,video", "els => els.map(e => [e.getAttribute('src'), e.duration || 0])"
        )
        seen["tables"] = page.evaluate(
            "() => Object.fromEntries([...document.querySelectorAll('table[id]')]"
            ".map(t => [t.id, [...t.rows].map(r => [...r.cells].map(c => c.innerText))]))"
        )
        seen["text"] = page.inner_text("body")
        page.screenshot(path=str(screenshot), full_page=True)
        browser.close()
    return seen


def check_page(seen: dict) -> None:
    assert not seen["errors"], seen["errors"]
    assert all(u.startswith("file://") for u in seen["requests"]), seen["requests"]
    assert seen["images"] and all(w > 0 for _, w in seen["images"]), seen["images"]
    assert all(d > 0 for _, d in seen["media"]), seen["media"]


@pytest.mark.slow(seconds=40)
def test_a_speech_run_page_plays_every_clip_labelled_with_its_prompt(tmp_path):
    from alignflow.sdk.api import train
    from alignflow.sdk.config import compose

    eval_file = Path(compose("train", ["experiment=speech_tiny"]).data.eval)
    rows = eval_file.read_text().splitlines()[:3]
    (tmp_path / "eval.jsonl").write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"

    def loud(media, prompts, metadata):
        return [float(media[i].samples.pow(2).mean().sqrt()) for i in range(len(prompts))]

    train(
        "speech_tiny",
        reward=loud,
        output_dir=out,
        overrides=[
            "train.iterations=1",
            "sample.num_steps=2",
            "sample.prompts_per_iteration=2",
            "sample.group_size=2",
            "sample.batch_size=4",
            "train.micro_batch_size=4",
            f"data.eval={tmp_path / 'eval.jsonl'}",
            "eval.num_steps=2",
            "eval.samples_per_prompt=1",
            "logging.progress_bar=false",
        ],
    )
    seen = read_in_browser(out / "report.html", tmp_path / "run.png")
    check_page(seen)
    assert len(seen["media"]) == 6  # 3 prompts, before and after
    for row in rows:
        assert json.loads(row)["prompt"] in seen["text"]
    metrics = [r[0] for r in seen["tables"]["summary"][1:]]
    assert metrics == ["reward"], metrics  # one function reward: no components
    assert (tmp_path / "run.png").stat().st_size > 10_000

    # published: a folder that holds everything the page shows (2 prompts of the gallery)
    from alignflow.sdk.cli import main

    pub = tmp_path / "published"
    assert main(["report", str(out), "--to", str(pub), "--per", "2"]) == 0
    out.rename(tmp_path / "away")  # nothing on the page may come from the run folder
    seen = read_in_browser(pub / "report.html", tmp_path / "published.png")
    (tmp_path / "away").rename(out)
    check_page(seen)
    assert len(seen["media"]) == 4
    assert all(src.startswith("report_files/media/") for src, _ in seen["media"])
    assert (pub / "summary.json").is_file()
    page = (pub / "report.html").read_text()
    assert main(["report", str(pub)]) == 2  # not a run folder: refused, the page kept
    assert (pub / "report.html").read_text() == page
    assert main(["report", str(out), "--to", str(pub), "--per", "1"]) == 0  # replaces it
    assert len(list((pub / "report_files" / "media").rglob("*.wav"))) == 2
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("mine")
    with pytest.raises(ConfigError, match="report --to"):
        write_report_page(out, other)
    with pytest.raises(ConfigError, match="report --per"):
        write_report_page(out, tmp_path / "new", per=0)
    assert (other / "notes.txt").read_text() == "mine" and not (tmp_path / "new").exists()


def test_report_refuses_a_folder_that_is_neither_a_run_nor_a_benchmark(tmp_path, capsys):
    from alignflow.sdk.cli import main

    assert main(["report", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "neither a run folder (metrics.jsonl) nor a benchmark folder" in err


def test_a_run_without_evaluation_still_gets_its_page(tmp_path):
    from alignflow.sdk.trainer import Trainer

    Trainer(digits_cfg(tmp_path, "data.eval=", "logging.media=true")).train()
    page = (tmp_path / "report.html").read_text()
    assert "No gallery" in page and 'src="report_files/curves.png"' in page
    assert write_report_page(tmp_path) == tmp_path / "report.html"


def test_the_page_shows_the_environment_of_each_start_of_a_resumed_run(tmp_path, monkeypatch):
    """A run resumed with other code (here: another commit) records both environments,
    and its page shows both; a run folder without records (from an older alignflow)
    shows the page writer's, labelled so."""
    from alignflow.sdk import tracking
    from alignflow.sdk.report_html import _environments
    from alignflow.sdk.trainer import Trainer

    Trainer(digits_cfg(tmp_path, "data.eval=", "checkpoint.every=2")).train()
    monkeypatch.setattr(tracking, "git_commit", lambda: "0123abc (another checkout)")
    resume = digits_cfg(tmp_path, "data.eval=", "train.iterations=3", "checkpoint.resume=latest")
    Trainer(resume).train()
    records = [json.loads(line) for line in (tmp_path / "environment.jsonl").open()]
    assert [r["iteration"] for r in records] == [0, 2]
    shown = _environments([tmp_path], "run")
    assert shown["labels"] == [
        "this run, started at iteration 0",
        "this run, started at iteration 2",
    ]
    commit = dict((row[0], row[1:]) for row in shown["rows"])["git commit"]
    assert commit[1] == "0123abc (another checkout)" and commit[0] != commit[1]
    assert "0123abc (another checkout)" in write_report_page(tmp_path).read_text()

    (tmp_path / "environment.jsonl").unlink()
    assert _environments([tmp_path], "run")["labels"] == [
        "this page's writer (the run recorded none)"
    ]


def test_the_commit_is_the_checkouts_or_the_one_git_archive_wrote(tmp_path):
    """In this checkout: HEAD (a 40-hex commit, maybe with uncommitted changes). In a
    copy made by `git archive` (no .git): the commit that archive wrote into it."""
    import re
    import subprocess
    import sys

    from alignflow.sdk.tracking import git_commit

    root = Path(__file__).parents[1]
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True)
    if head.returncode != 0:
        pytest.skip("not run from a git checkout")
    assert re.fullmatch(r"[0-9a-f]{40}( \+ uncommitted changes)?", git_commit()), git_commit()
    assert git_commit().startswith(head.stdout.strip())

    copy = tmp_path / "copy" / "alignflow"
    copy.mkdir(parents=True)
    archive = subprocess.run(["git", "archive", "HEAD", "sdk"], cwd=root, capture_output=True)
    subprocess.run(["tar", "-x", "-C", str(copy)], input=archive.stdout, check=True)
    code = "from alignflow.sdk.tracking import git_commit; print(git_commit())"
    seen = subprocess.run(
        [sys.executable, "-c", code],
        env={"PYTHONPATH": str(tmp_path / "copy"), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert seen.stdout.strip() == head.stdout.strip(), seen.stderr


def test_every_series_of_a_bench_plot_has_its_own_look_past_ten_algorithms():
    from alignflow.sdk.report_html import _styles

    rows = [{"algorithm": f"a{i}", "iteration": 0, "value": 0.5} for i in range(12)]
    looks = {(s["color"], s["linestyle"], s["marker"]) for s in _styles(rows).values()}
    assert len(looks) == 12  # matplotlib's own cycle repeats its ten colours
