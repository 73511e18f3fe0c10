import os

import pytest
import torch

# Tests never reach a hub: make any accidental download fail fast instead of hanging.
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TRANSFORMERS_OFFLINE", "1")
os.environ.setdefault("HF_DATASETS_OFFLINE", "1")


@pytest.fixture(autouse=True)
def _seed_everything():
    torch.manual_seed(0)
    yield
