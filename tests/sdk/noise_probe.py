"""Run under torchrun by tests/sdk/test_distributed.py: one iteration of the fast digits
run; the main process writes every process's initial noises (gathered) as JSON."""

import json
import sys
from pathlib import Path

import torch

from alignflow.sdk.trainer import Trainer
from tests.helpers import digits_cfg

out, algorithm = Path(sys.argv[1]), sys.argv[2]
tr = Trainer(
    digits_cfg(
        out / algorithm,
        f"algorithm={algorithm}",
        "sample.prompts_per_iteration=4",
        "sample.batch_size=8",
        *sys.argv[3:],
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
# As Trainer.train ends: without it the process group's threads are torn down at exit,
# which once aborted a rank ("terminate called without an active exception").
tr.acc.end_training()
