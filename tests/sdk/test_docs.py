"""The worked examples of the docs run as written."""

import importlib.util
import re
from pathlib import Path

import pytest
import torch

from alignflow.sdk import components
from alignflow.sdk.trainer import Trainer
from tests.helpers import digits_cfg
from tests.sdk.test_algorithm_protocol import G, build, one_iteration

DOCS = Path(__file__).parents[2] / "docs"


def code_after(doc: str, heading: str) -> str:
    """The first python block after ``heading`` in docs/<doc>."""
    text = (DOCS / doc).read_text()
    return re.search(r"```python\n(.*?)```", text[text.index(heading) :], re.S).group(1)


@pytest.fixture
def dr_flow_grpo(tmp_path, monkeypatch):
    # undeclared afterwards
    monkeypatch.setattr(components, "_DECORATED", dict(components._DECORATED))
    path = tmp_path / "dr_flow_grpo_example.py"
    path.write_text(code_after("add_an_algorithm.md", "## The example"))
    spec = importlib.util.spec_from_file_location("dr_flow_grpo_example", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_worked_algorithm_runs_through_the_protocol_and_the_trainer(dr_flow_grpo, tmp_path):
    algo, policy = build("dr_flow_grpo", adv_scale=2.0)
    out, items, loss = one_iteration(algo, policy)
    rewards = -(out.x0 - 1).pow(2).mean(-1)
    adv = algo.advantages(rewards, out.group).advantages
    first = rewards[:G].double()
    torch.testing.assert_close(
        adv[:G].double(), (2.0 * (first - first.mean())).clamp(-5, 5), rtol=0, atol=1e-6
    )
    assert torch.equal(loss.stats["ratio"], torch.ones(len(items.sample)))
    again, _ = build("dr_flow_grpo")
    again.load_state_dict(algo.state_dict())

    tr = Trainer(
        digits_cfg(
            tmp_path / "run",
            "algorithm.name=dr_flow_grpo",
            "algorithm.adv_scale=4",
            "train.optimizer_steps=1",
        )
    )
    assert tr.algo.name == "dr_flow_grpo" and tr.algo.cfg.adv_scale == 4.0
    m = tr.train_iteration(0)
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0 and m["train/trained_steps"] > 0


@pytest.mark.parametrize("modality", ["Images", "Video", "Speech"])
def test_the_python_api_examples_run(modality, tmp_path, monkeypatch):
    monkeypatch.setattr(components, "_DECORATED", dict(components._DECORATED))
    code = code_after("python.md", f"## {modality}")
    namespace = {"OUT": tmp_path, "__name__": f"python_md_{modality.lower()}"}
    exec(compile(code, f"docs/python.md ({modality})", "exec"), namespace)
    run = namespace["run"]
    assert (run.output_dir / "summary.json").is_file() and run.summary["iterations"] >= 1
    policy = namespace["policy"]
    assert policy.checkpoint.name == f"checkpoint-{run.summary['iterations']}"
