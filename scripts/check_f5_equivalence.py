"""Check alignflow's F5-TTS against the f5-tts package's own code.

    python scripts/check_f5_equivalence.py /path/to/site-packages/f5_tts

1. The DiT: f5-tts's DiT at a small size with random weights, the weights loaded into
   alignflow's DiT through the checkpoint mapping; the conditional and the unconditional
   (text and audio dropped) outputs are compared.
2. The sampler: f5-tts's ``CFM.sample`` (its EPSS grid, sway sampling, guidance, Euler
   ``odeint`` and the final ``torch.where(cond_mask, cond, out)``) against alignflow's
   F5Policy stepped by the SDK's ODE kernel, from the same noise (F5 draws it with
   ``torch.manual_seed(seed)``; it is handed to alignflow), grid and text: the mels
   are compared.

f5-tts is not a dependency of alignflow (it pins numpy<=1.26 and pulls gradio, wandb,
...); scripts/setup.sh installs it with ``--no-deps`` for the tests, plus x-transformers
and torchdiffeq, which its model code imports. Its modules are loaded by path (its
package ``__init__`` imports its trainer).
"""

from __future__ import annotations

import importlib.util
import sys
import types
from pathlib import Path

import torch

from alignflow.adapters.speech.dit import DiT, DiTConfig, f5_state_dict

CONFIG = DiTConfig(
    dim=64, depth=3, heads=4, dim_head=16, ff_mult=2, text_num_embeds=30, text_dim=32, conv_layers=2
)


def load_f5(src: Path) -> types.SimpleNamespace:
    """f5-tts's ``DiT`` and ``CFM`` classes, loaded from its source folder by path."""
    pkg = types.ModuleType("f5_tts")
    pkg.__path__ = [str(src)]
    model = types.ModuleType("f5_tts.model")
    model.__path__ = [str(src / "model")]
    sys.modules.update({"f5_tts": pkg, "f5_tts.model": model})
    for name, rel in (
        ("f5_tts.model.utils", "model/utils.py"),
        ("f5_tts.model.modules", "model/modules.py"),
        ("f5_tts.model.backbones.dit", "model/backbones/dit.py"),
        ("f5_tts.model.cfm", "model/cfm.py"),
    ):
        spec = importlib.util.spec_from_file_location(name, src / rel)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module
        spec.loader.exec_module(module)
    return types.SimpleNamespace(
        DiT=sys.modules["f5_tts.model.backbones.dit"].DiT, CFM=sys.modules["f5_tts.model.cfm"].CFM
    )


def load_f5_dit(src: Path):
    return load_f5(src).DiT


def f5_dit(F5DiT, cfg: DiTConfig, **overrides) -> torch.nn.Module:
    """f5-tts's DiT of alignflow's architecture ``cfg`` (F5-TTS v1's other settings)."""
    settings = cfg.to_dict() | overrides
    return F5DiT(
        **settings, text_mask_padding=True, attn_backend="torch", attn_mask_enabled=False
    ).eval()


def twin_dits(F5DiT, std: float = 0.2, cfg: DiTConfig = CONFIG) -> tuple[torch.nn.Module, DiT]:
    """f5-tts's DiT with random weights N(0, std) (all of them: F5 zero-initialises its
    adaLN and output layers) and alignflow's DiT holding the same weights."""
    torch.manual_seed(0)
    ref = f5_dit(F5DiT, cfg)
    for p in ref.parameters():
        p.data.normal_(0, std)
    release = {f"ema_model.transformer.{k}": v for k, v in ref.state_dict().items()}
    release |= {"ema_model.initted": torch.tensor(True), "ema_model.step": torch.tensor(1)}
    ours = DiT(cfg).eval()
    ours.load_state_dict(f5_state_dict(release), strict=True)
    return ref, ours


def dit_difference(src: Path) -> float:
    ref, ours = twin_dits(load_f5(src).DiT)
    x, cond = torch.randn(2, 40, 100), torch.randn(2, 40, 100)
    text = torch.randint(0, 30, (2, 15))
    text[1, 10:] = -1
    t = torch.rand(2)
    with torch.no_grad():
        return max(
            (ref(x, cond, text, t) - ours(x, cond, text, t)).abs().max().item(),
            (
                ref(x, cond, text, t, drop_audio_cond=True, drop_text=True)
                - ours(x, cond, text, t, drop=torch.ones(2, dtype=torch.bool))
            )
            .abs()
            .max()
            .item(),
        )


def sampler_difference(src: Path, steps: int = 6, cfg_strength: float = 2.0, seed: int = 3):
    """(max |mel difference|, max |mel|) of one sample: a 20-frame prompt, 56 frames."""
    from alignflow.adapters.speech.f5 import F5Policy
    from alignflow.adapters.speech.text import CharVocab
    from alignflow.modalities.speech.mel import MelCodec
    from alignflow.sdk.kernels import KERNELS

    f5 = load_f5(src)
    # weights small enough that 6 Euler steps do not amplify float32 rounding chaotically
    ref, ours = twin_dits(f5.DiT, std=0.05)
    vocab = CharVocab(list(" abcdefghijklmnopqrstuvwxyz.,"))
    text, prompt_frames, duration = "the cat.  sat on a mat", 20, 56
    torch.manual_seed(seed + 1)
    mel = torch.randn(1, prompt_frames, 100)
    cfm = f5.CFM(transformer=ref, vocab_char_map=vocab.index).eval()
    with torch.no_grad():
        theirs, _ = cfm.sample(
            cond=mel,
            text=[text],
            duration=duration,
            steps=steps,
            cfg_strength=cfg_strength,
            sway_sampling_coef=-1.0,
            seed=seed,
        )
    torch.manual_seed(seed)  # CFM.sample's noise: one draw of [duration, n_mels] per sample
    noise = torch.randn(duration, 100)

    policy = F5Policy(ours, vocab, MelCodec(), max_frames=64, prompt_frames="free")
    cond = policy._condition([(mel[0], vocab.encode(text), duration)], ["check"], [text])
    x = torch.zeros(1, policy.max_frames, 100)
    x[0, :duration] = noise
    sigmas = policy.sigmas(steps)
    with torch.no_grad():
        for i in range(steps):
            v = policy.velocity(x, sigmas[i], cond, 1 + cfg_strength)
            x = KERNELS["ode"](x, v, sigmas, i, noise_level=0.0).x_next
    prompt, _ = cond.frame_masks(policy.max_frames)
    x = torch.where(prompt[..., None], cond.cond, x)[:, :duration]
    return (theirs - x).abs().max().item(), theirs.abs().max().item()


def main(src: str) -> float:
    dit = dit_difference(Path(src))
    print(f"DiT: max |f5-tts - alignflow| over conditional and unconditional outputs: {dit:.3g}")
    mel, scale = sampler_difference(Path(src))
    print(f"sampler: max |f5-tts CFM.sample - alignflow| mel: {mel:.3g} (max |mel| {scale:.3g})")
    return max(dit, mel / max(scale, 1.0))


if __name__ == "__main__":
    sys.exit(0 if main(sys.argv[1]) < 1e-4 else 1)
