"""Run under torchrun by tests/sdk/test_distributed.py: for each algorithm named on the
command line (``name`` or ``name:override,override``), one iteration of the fast digits
run; the main process writes every process's initial noises (gathered) as JSON. Several
algorithms share one launch: the process group starts once."""

import json
import sys
from pathlib import Path

import torch

from alignflow.sdk.trainer import Trainer
from tests.helpers import digits_cfg


def probe(out: Path, algorithm: str, overrides: list[str]) -> Trainer:
    tr = Trainer(
        digits_cfg(
            out / algorithm,
            f"algorithm={algorithm}",
            "sample.prompts_per_iteration=4",
            "sample.batch_size=8",
            *overrides,
        )
    )
    seen = []
    draw = tr.policy.noise

    def recorded(n, generators):
        x = draw(n, generators)
        seen.append(x)
        return x

    tr.policy.noise = recorded
    tr.train_iteration(0)
    rows = tr.acc.gather(torch.cat(seen).flatten(1))
    if tr.acc.is_main_process:
        (out / f"{algorithm}.json").write_text(
            json.dumps({"processes": tr.acc.num_processes, "rows": rows.tolist()})
        )
    return tr


out = Path(sys.argv[1])
for spec in sys.argv[2:]:
    algorithm, _, overrides = spec.partition(":")
    tr = probe(out, algorithm, [o for o in overrides.split(",") if o])
# As Trainer.train ends: without it the process group's threads are torn down at exit,
# which once aborted a rank ("terminate called without an active exception").
tr.acc.end_training()
