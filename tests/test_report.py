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
