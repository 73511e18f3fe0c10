import os

import pytest
import torch

# Tests never reach a hub: make any accidental download fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

# Under pytest-xdist (scripts/test.sh: one worker per core) each worker computes on one
# thread, and so do the runs the tests launch: two 2-thread workers on 2 cores would
# fight over them (measured: 0.63x the throughput of one), and the tiny models of most
# tests run faster on one thread than on two.
if os.environ.get("PYTEST_XDIST_WORKER"):
    os.environ["OMP_NUM_THREADS"] = "1"
    torch.set_num_threads(1)


def pytest_collection_modifyitems(items):
    """Slow tests first, the longest first (``@pytest.mark.slow(seconds=N)``), so that
    the workers that run them in parallel finish together."""

    def cost(item):
        slow = item.get_closest_marker("slow")
        return slow.kwargs.get("seconds", 30) if slow else 0

    items.sort(key=cost, reverse=True)  # stable: same-cost tests keep their order


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield


@pytest.fixture(autouse=True)
def _fresh_accelerate_state():
    # accelerate keeps one process-wide state (mixed precision, device); each test's
    # Trainer builds its own Accelerator, as a fresh process would.
    yield
    from accelerate.state import AcceleratorState

    AcceleratorState._reset_state(reset_partial_state=True)
