"""alignflow's F5 DiT, sampler and `f5-tts` export against the f5-tts package's own
classes (scripts/setup.sh installs f5-tts 1.1.22's model code with x-transformers and
torchdiffeq; its package __init__ imports its trainer, so its modules are loaded by
path, as scripts/check_f5_equivalence.py does)."""

import importlib.util
from pathlib import Path

import pytest
import torch

SPEC = importlib.util.find_spec("f5_tts")
pytestmark = pytest.mark.skipif(SPEC is None, reason="f5-tts is not installed (scripts/setup.sh)")
ROOT = Path(__file__).parents[2]


def checker():
    spec = importlib.util.spec_from_file_location(
        "check_f5_equivalence", ROOT / "scripts" / "check_f5_equivalence.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def source() -> Path:
    return Path(list(SPEC.submodule_search_locations)[0])


def test_the_dit_gives_f5_tts_outputs_exactly():
    assert checker().dit_difference(source()) < 1e-5


def test_same_noise_grid_and_text_give_f5_tts_cfm_sample_mel():
    """F5-TTS's CFM.sample (EPSS grid at 6 steps, sway -1, cfg 2, Euler odeint, the
    prompt put back at the end) against F5Policy (prompt_frames=free, batch padding)
    stepped by the SDK's ODE kernel from the same noise: the same mel to float32
    rounding."""
    difference, scale = checker().sampler_difference(source())
    assert scale > 1.0 and difference < 1e-5 * scale


def test_the_export_loads_strictly_into_f5_tts_dit_and_gives_its_velocity(tmp_path):
    """F5-TTS's load_checkpoint(use_ema=True) on a safetensors file: strip `ema_model.`,
    drop `initted` / `step`, load into CFM (whose DiT is `transformer`) strictly, with
    `load_model`'s text_num_embeds = len(vocab.txt)."""
    from safetensors.torch import load_file

    from alignflow.adapters.speech.tiny import load_tiny_f5
    from alignflow.sdk.finetune import LoRA

    policy = load_tiny_f5()
    LoRA(policy, rank=4, alpha=8)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    x, cond = torch.randn(2, 48, 100), torch.randn(2, 48, 100)
    text = torch.randint(0, len(policy.vocab), (2, 20))
    text[1, 12:] = -1
    t = torch.tensor([0.3, 0.8])
    with torch.no_grad():
        ours = policy.transformer(x, cond, text, t)
        policy.export("f5-tts", tmp_path)

    check = checker()
    vocab = (tmp_path / "vocab.txt").read_text(encoding="utf-8").splitlines()
    f5 = check.f5_dit(
        check.load_f5_dit(source()), policy.transformer.config, text_num_embeds=len(vocab)
    )
    checkpoint = load_file(str(tmp_path / "model.safetensors"))
    state = {
        k.replace("ema_model.", ""): v
        for k, v in checkpoint.items()
        if k not in ("initted", "step")
    }
    cfm = torch.nn.Module()
    cfm.transformer = f5
    cfm.load_state_dict(state, strict=True)
    with torch.no_grad():
        theirs = f5(x, cond, text, t)
    # the export merges the LoRA into the weights: float32 rounding of the merged sums
    torch.testing.assert_close(theirs, ours, atol=1e-5, rtol=1e-5)
