"""Run as a script by tests/sdk/test_distributed.py: the fast digits run under FSDP2
in one CPU process (benchmarks/_fsdp_cpu.py opens accelerate's GPU-only gate), or
without it (``--plain``, for the same numbers). Prints the number of sharded
transformer parameters and the metrics without times, as JSON."""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).parents[2]
sys.path[:0] = [str(ROOT), str(ROOT / "benchmarks")]

from _fsdp_cpu import fsdp2_accelerator  # noqa: E402

from alignflow.sdk.sharded import is_sharded  # noqa: E402
from alignflow.sdk.tracking import read_metrics  # noqa: E402
from alignflow.sdk.trainer import Trainer  # noqa: E402
from tests.helpers import digits_cfg, strip_times  # noqa: E402


def main() -> None:
    plain = sys.argv[1] == "--plain"
    out, overrides = Path(sys.argv[1 + plain]), sys.argv[2 + plain :]
    cfg = digits_cfg(out, "data.eval=", "checkpoint.every=1", *overrides)
    tr = Trainer(cfg, accelerator=None if plain else fsdp2_accelerator(cfg))
    sharded = sum(is_sharded(p) for p in tr.policy.transformer.parameters())
    tr.train()
    print(json.dumps({"sharded": sharded, "rows": strip_times(read_metrics(out))}))


if __name__ == "__main__":
    main()
