"""Check alignflow's F5-TTS DiT against the f5-tts package's own, output for output.

    python scripts/check_f5_equivalence.py /path/to/site-packages/f5_tts

f5-tts is not a dependency (it pins numpy<=1.26 and pulls gradio, wandb, ...). To run
this check, unpack its wheel anywhere (``pip download --no-deps f5-tts``) and install
x-transformers, einops, einx and torch-einops-utils (``--no-deps`` is enough). The
script loads f5-tts's ``modules.py`` and ``backbones/dit.py`` by path (its package
``__init__`` imports its trainer), builds its DiT at a small size with random weights,
loads the weights into alignflow's DiT through the checkpoint mapping, and compares the
conditional and the unconditional (text and audio dropped) outputs.
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from alignflow.adapters.speech.dit import DiT, DiTConfig, f5_state_dict


def load_f5_dit(src: Path):
    pkg = types.ModuleType("f5_tts")
    pkg.__path__ = [str(src)]
    model = types.ModuleType("f5_tts.model")
    model.__path__ = [str(src / "model")]
    utils = types.ModuleType("f5_tts.model.utils")  # the real one imports Chinese text tools
    utils.is_package_available = lambda name: False
    sys.modules.update({"f5_tts": pkg, "f5_tts.model": model, "f5_tts.model.utils": utils})
    for name, rel in (
        ("f5_tts.model.modules", "model/modules.py"),
        ("f5_tts.model.backbones.dit", "model/backbones/dit.py"),
    ):
        spec = importlib.util.spec_from_file_location(name, src / rel)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return sys.modules["f5_tts.model.backbones.dit"].DiT


def main(src: str) -> float:
    F5DiT = load_f5_dit(Path(src))
    cfg = DiTConfig(
        dim=64,
        depth=3,
        heads=4,
        dim_head=16,
        ff_mult=2,
        text_num_embeds=30,
        text_dim=32,
        conv_layers=2,
    )
    torch.manual_seed(0)
    ref = F5DiT(
        dim=64,
        depth=3,
        heads=4,
        dim_head=16,
        ff_mult=2,
        mel_dim=100,
        text_num_embeds=30,
        text_dim=32,
        conv_layers=2,
        text_mask_padding=True,
        attn_backend="torch",
        attn_mask_enabled=False,
    ).eval()
    for (
        p
    ) in ref.parameters():  # F5 zero-initialises its adaLN and output layers: randomise everything
        p.data.normal_(0, 0.2)
    release = {f"ema_model.transformer.{k}": v for k, v in ref.state_dict().items()}
    release |= {"ema_model.initted": torch.tensor(True), "ema_model.step": torch.tensor(1)}
    ours = DiT(cfg).eval()
    ours.load_state_dict(f5_state_dict(release), strict=True)
    x, cond = torch.randn(2, 40, 100), torch.randn(2, 40, 100)
    text = torch.randint(0, 30, (2, 15))
    text[1, 10:] = -1
    t = torch.rand(2)
    with torch.no_grad():
        diff = max(
            (ref(x, cond, text, t) - ours(x, cond, text, t)).abs().max().item(),
            (
                ref(x, cond, text, t, drop_audio_cond=True, drop_text=True)
                - ours(x, cond, text, t, drop=torch.ones(2, dtype=torch.bool))
            )
            .abs()
            .max()
            .item(),
        )
    print(f"max |f5-tts - alignflow| over conditional and unconditional outputs: {diff:.3g}")
    return diff


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) < 1e-5 else 1)
