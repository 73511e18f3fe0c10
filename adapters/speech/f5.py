"""F5-TTS as a FlowPolicy: infilling text-to-speech over log-mel frames.

F5-TTS samples with a black-box ODE solver; here the policy exposes the velocity and
the SDK's kernels own the step loop, so every step has a log-prob. Conventions
(docs/speech.md writes them out):

- time: F5's t runs from noise (0) to data (1) and its DiT predicts u = data - noise;
  alignflow's sigma = 1 - t and v = -u, so x_sigma = (1 - sigma) x0 + sigma eps is
  F5's x_t unchanged;
- schedule: F5's sway sampling t' = t + s (cos(pi t / 2) - 1 + t) (s = -1: t' = 1 -
  cos(pi t / 2)) of F5-TTS 1.1's grid: its EPSS grid at 5, 6, 7, 10, 12 and 16 steps,
  else uniform (``epss=False``: always uniform); sigma_i = 1 - t'_i;
- guidance: F5's ``pred + (pred - null) * cfg_strength`` is alignflow's w = 1 +
  cfg_strength; the null branch drops the text and the audio prompt together;
- duration: F5's rule, ref frames + ref frames * bytes(text) / bytes(ref_text) / speed,
  with ref frames = reference samples // hop and speed 0.3 for a text under 10 bytes.

Latents are [B, max_frames, n_mels] (one storage shape, so that groups and batches
concatenate). Frames of one sample:

    [0, prompt)          the reference audio's frames (given, F5's ``cond``)
    [prompt, length)     the generated speech
    [length, max_frames) padding, silence

What the DiT sees, ``frame_padding``:

- ``batch`` (F5-TTS's batching): the DiT runs on the batch's longest sample,
  ``length.max()`` frames, with a frame mask, so padding costs no compute and a
  sample's velocity is the same alone and in any batch (see
  :mod:`alignflow.adapters.speech.dit`);
- ``max_frames``: every sample is padded with silence to ``max_frames`` and the DiT sees
  the padding, unmasked. A model pretrained that way (the tiny default's shipped base)
  needs it: it reads where the silence starts.

Either way padding frames follow the exact straight path to silence, (x - silence) /
sigma, which no policy changes (their log-prob terms cancel in every ratio). The
prompt frames, ``prompt_frames``:

- ``free`` (F5-TTS's default): the model's velocity moves them, as F5-TTS's ODE does,
  and F5's ``torch.where(cond_mask, cond, out)`` puts the prompt back at the end
  (:meth:`F5Policy.decode`);
- ``pinned``: the straight path to the prompt, (x - cond) / sigma, the noisy prompt the
  DiT saw in training; the prompt frames' log-prob terms cancel in the ratio.

The output is F5-TTS's: the frames from ``samples // hop`` (the reference's last mel
frame, then the generated ones) through the vocoder, scaled back by the reference's
loudness gain when F5 raised a quiet reference to RMS 0.1.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from alignflow.adapters.speech.dit import DiT, DiTConfig, checkpoint_file, load_state
from alignflow.adapters.speech.text import CharVocab, f5_tokens, reference_text
from alignflow.modalities.speech.audio import Waveform
from alignflow.modalities.speech.mel import MelCodec, MelConfig, make_vocoder
from alignflow.modalities.speech.prompts import ReferenceAudio
from alignflow.sdk.batching import SHARED
from alignflow.sdk.errors import ConfigError, DataError
from alignflow.sdk.random import Generators, randn
from alignflow.sdk.weights import resolve_dtype

# Attention projections of every DiT block: the usual LoRA targets.
F5_LORA_TARGETS = ("to_q", "to_k", "to_v", "to_out.0")
TARGET_RMS = 0.1  # F5-TTS raises quieter reference audio to this RMS
PROMPT_FRAMES = ("free", "pinned")  # how sampling treats the reference's frames (module doc)
FRAME_PADDING = ("batch", "max_frames")  # what the DiT sees past a sample's end (module doc)


# F5-TTS 1.1's empirically pruned step sampling (EPSS, ``get_epss_timesteps``): at these
# step counts its ``CFM.sample`` starts from these t (in 32nds) instead of a uniform grid,
# then applies sway sampling on top. Other step counts use the uniform grid.
EPSS = {
    5: (0, 2, 4, 8, 16, 32),
    6: (0, 2, 4, 6, 8, 16, 32),
    7: (0, 2, 4, 6, 8, 16, 24, 32),
    10: (0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32),
    12: (0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32),
    16: (0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32),
}


def sway_sigmas(num_steps: int, coef: float = -1.0, epss: bool = True) -> torch.Tensor:
    """[N+1] float32 sigmas 1 -> 0 of F5's time grid: EPSS at the step counts that have
    one (``epss``, F5-TTS 1.1's default), else uniform, then sway sampling with coef s
    (-1 default; 0 none). Small steps near the noise end (sigma ~ 1)."""
    if num_steps < 1:
        raise ConfigError("sample.num_steps", num_steps, "an int >= 1")
    if epss and num_steps in EPSS:
        t = torch.tensor(EPSS[num_steps], dtype=torch.float64) / 32
    else:
        t = torch.linspace(0, 1, num_steps + 1, dtype=torch.float64)
    t = t + coef * (torch.cos(math.pi / 2 * t) - 1 + t)
    t[0], t[-1] = 0.0, 1.0  # exactly, whatever the rounding of cos(pi / 2)
    return (1 - t).float()


@dataclass
class SpeechCondition:
    """Attributes:
    text: [B, max_frames] long character ids of ref_text + text, -1 padded;
    cond: [B, max_frames, n_mels] the prompt's frames, zero elsewhere;
    prompt: [B] long number of prompt frames; length: [B] long total frames;
    drop: [B] bool, the sample is the unconditional branch (pretraining's dropout);
    gain: [B] float, the output's loudness factor (F5 scales a reference quieter than
    RMS 0.1 up, and the generated speech back down by the same factor);
    silence: the log-mel value of the padding (shared)."""

    text: torch.Tensor
    cond: torch.Tensor
    prompt: torch.Tensor
    length: torch.Tensor
    drop: torch.Tensor
    gain: torch.Tensor
    silence: float = field(default=math.log(1e-5), metadata=SHARED)

    def frame_masks(self, frames: int) -> tuple[torch.Tensor, torch.Tensor]:
        """(prompt [B, frames], generated [B, frames]) bool masks."""
        pos = torch.arange(frames, device=self.prompt.device)[None]
        prompt = pos < self.prompt[:, None]
        return prompt, ~prompt & (pos < self.length[:, None])


class F5Policy:
    modality = "speech"
    default_lora_targets = F5_LORA_TARGETS

    def __init__(
        self,
        transformer: DiT,
        vocab: CharVocab,
        codec: MelCodec,
        max_frames: int,
        sway: float = -1.0,
        speed: float = 1.0,
        audio_root: str = "",
        dtype: torch.dtype = torch.float32,
        epss: bool = True,
        prompt_frames: str = "free",
        frame_padding: str = "batch",
        gradient_checkpointing: bool = False,
    ):
        if prompt_frames not in PROMPT_FRAMES:
            raise ConfigError("policy.prompt_frames", prompt_frames, f"one of {PROMPT_FRAMES}")
        if frame_padding not in FRAME_PADDING:
            raise ConfigError("policy.frame_padding", frame_padding, f"one of {FRAME_PADDING}")
        if transformer.config.mel_dim != codec.config.n_mels:
            raise ConfigError(
                "policy.mel",
                codec.config.n_mels,
                f"the DiT's mel_dim ({transformer.config.mel_dim})",
            )
        if transformer.config.text_num_embeds < len(vocab):
            raise ConfigError(
                "policy.vocab", len(vocab), f"at most {transformer.config.text_num_embeds} tokens"
            )
        self.transformer = transformer.to(dtype).eval().requires_grad_(False)
        self.transformer.gradient_checkpointing = gradient_checkpointing
        self.vocab, self.codec, self.max_frames, self.sway, self.speed = (
            vocab,
            codec,
            max_frames,
            sway,
            speed,
        )
        self.epss, self.prompt_frames, self.frame_padding = epss, prompt_frames, frame_padding
        self.references = ReferenceAudio(audio_root, codec.config.sample_rate)
        self.device = torch.device("cpu")

    # ------------------------------------------------------------------ conditions

    def encode(
        self, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]] | None = None
    ) -> SpeechCondition:
        """F5-TTS's inference inputs for B (text, reference) pairs; ``metadata`` rows carry
        ``ref_audio`` and ``ref_text`` (:mod:`alignflow.modalities.speech.prompts`)."""
        if metadata is None or len(metadata) != len(prompts):
            raise DataError(
                f"speech prompts need one metadata row (ref_audio, ref_text) per prompt; got "
                f"{0 if metadata is None else len(metadata)} rows for {len(prompts)} prompts"
            )
        hop, rows, gains = self.codec.config.hop_length, [], []
        for text, meta in zip(prompts, metadata):
            wave = self.references(meta).samples
            rms = float(wave.pow(2).mean().sqrt())
            if rms < 1e-6:
                raise DataError(
                    f"speech reference {self.references.path(meta)} is silent (RMS {rms:.1e}); "
                    "a reference needs audible speech"
                )
            gain = min(1.0, rms / TARGET_RMS)
            wave = wave / gain
            # [prompt, n_mels]
            mel = self.codec.encode(Waveform(wave, self.codec.config.sample_rate))[0]
            ref_text = reference_text(meta["ref_text"])
            ref_len = wave.shape[-1] // hop
            speed = 0.3 if len(text.encode()) < 10 else self.speed  # F5's rule for short texts
            duration = ref_len + int(ref_len / len(ref_text.encode()) * len(text.encode()) / speed)
            ids = self.vocab.encode(f5_tokens(ref_text + text))
            rows.append((mel, ids, max(duration, max(len(ids), len(mel)) + 1)))
            gains.append(gain)
        sources = [str(self.references.path(m)) for m in metadata]
        return self._condition(rows, sources, prompts, gains)

    def _condition(self, rows, sources, prompts, gains=None) -> SpeechCondition:
        """rows: (prompt mel, text ids, total frames) per sample; gains: the output
        loudness factors (1 when None)."""
        B, F, M = len(rows), self.max_frames, self.codec.config.n_mels
        too_long = [i for i, (_, _, n) in enumerate(rows) if n > F]
        if too_long:
            i = too_long[0]
            raise DataError(
                f"speech prompt {prompts[i]!r} (reference {sources[i]}) needs {rows[i][2]} mel "
                f"frames; policy.max_frames is {F}: raise it or shorten the text/reference"
            )
        text = torch.full((B, F), -1, dtype=torch.long)
        cond = torch.zeros(B, F, M)
        for b, (mel, ids, _) in enumerate(rows):
            text[b, : len(ids)] = torch.tensor(ids[:F], dtype=torch.long)
            cond[b, : len(mel)] = mel
        dev = self.device
        return SpeechCondition(
            text.to(dev),
            cond.to(dev),
            torch.tensor([len(m) for m, _, _ in rows], device=dev),
            torch.tensor([n for _, _, n in rows], device=dev),
            torch.zeros(B, dtype=torch.bool, device=dev),
            torch.ones(B, device=dev) if gains is None else torch.tensor(gains, device=dev),
            math.log(self.codec.config.log_floor),
        )

    def pretrain_inputs(
        self,
        x0: torch.Tensor,
        prompts: Sequence[str],
        metadata: Sequence[Mapping[str, Any]],
        drop: torch.Tensor,
    ) -> tuple[SpeechCondition, torch.Tensor]:
        """Flow-matching pretraining on known utterances: x0 [B, max_frames, n_mels] holds
        the reference and the target back to back; ``metadata`` gives ``ref_text``,
        ``prompt_frames`` and ``frames`` (total). Returns the condition and the loss
        weights [B, max_frames, 1] (1 on the generated span, as F5-TTS's masked loss). An
        utterance longer than max_frames is trained on its first max_frames frames, where
        :meth:`to_latents` cut it."""
        rows = []
        for b, (text, meta) in enumerate(zip(prompts, metadata)):
            ids = self.vocab.encode(f5_tokens(reference_text(meta["ref_text"]) + text))
            rows.append(
                (
                    x0[b, : int(meta["prompt_frames"])].cpu(),
                    ids,
                    min(int(meta["frames"]), self.max_frames),
                )
            )
        cond = self._condition(rows, ["pretraining data"] * len(rows), prompts)
        cond.drop = drop.to(self.device)
        _, generated = cond.frame_masks(self.max_frames)
        return cond, generated[..., None].float()

    # ------------------------------------------------------------------ sampling

    def noise(self, batch_size: int, generator: Generators) -> torch.Tensor:
        return randn(
            (batch_size, self.max_frames, self.codec.config.n_mels), generator, device=self.device
        )

    def sigmas(self, num_steps: int) -> torch.Tensor:
        return sway_sigmas(num_steps, self.sway, self.epss)

    def velocity(
        self, x: torch.Tensor, sigma: torch.Tensor, cond: SpeechCondition, guidance: float = 1.0
    ) -> torch.Tensor:
        B, F, _ = x.shape
        sigma = torch.as_tensor(sigma, device=x.device, dtype=torch.float32).expand(B)
        dtype = next(self.transformer.parameters()).dtype
        t = (1 - sigma).to(dtype)
        n, mask = F, None  # max_frames: all frames, padding visible
        if self.frame_padding == "batch":  # the batch's longest sample, masked
            n = int(cond.length.max())
            if int(cond.length.min()) < n:
                mask = torch.arange(n, device=x.device)[None] < cond.length[:, None]
        inputs = (x[:, :n].to(dtype), cond.cond[:, :n].to(dtype), cond.text)
        if guidance != 1.0:  # one batched call: conditional and null branches
            drop = torch.cat([cond.drop, torch.ones_like(cond.drop)])
            u = self.transformer(
                *(v.repeat(2, *[1] * (v.ndim - 1)) for v in inputs),
                t.repeat(2),
                drop=drop,
                mask=None if mask is None else mask.repeat(2, 1),
            )
            u_c, u_u = u.float().chunk(2)
            u = u_u + guidance * (u_c - u_u)
        else:
            u = self.transformer(*inputs, t, drop=cond.drop, mask=mask).float()
        u = torch.nn.functional.pad(u, (0, 0, 0, F - n))
        prompt, generated = cond.frame_masks(F)
        if self.prompt_frames == "free":
            generated = generated | prompt
        target = torch.where(prompt[..., None], cond.cond.float(), cond.silence)
        pinned = (x.float() - target) / sigma.clamp_min(1e-6).view(B, 1, 1)
        return torch.where(generated[..., None], -u, pinned)

    # ------------------------------------------------------------------ media

    def decode(self, latents: torch.Tensor, cond: SpeechCondition | None = None) -> Waveform:
        """Each sample's speech -> Waveform [B, N] with ``lengths``. With ``cond``, as
        F5-TTS's inference: the prompt's frames are put back (``torch.where(cond_mask,
        cond, out)``), the output starts at frame ``samples // hop`` of the reference
        (its last mel frame, ``prompt - 1``) and ends at ``length``, and the audio is
        scaled by ``gain``. Without, every frame is decoded."""
        frames = latents.float()
        if cond is None:
            spans, gains = [frames[b] for b in range(len(frames))], [1.0] * len(frames)
        else:
            prompt, _ = cond.frame_masks(frames.shape[1])
            frames = torch.where(prompt[..., None], cond.cond.float(), frames)
            spans = [
                frames[b, max(int(p) - 1, 0) : int(n)]
                for b, (p, n) in enumerate(zip(cond.prompt, cond.length))
            ]
            gains = cond.gain.tolist()
        silence = math.log(self.codec.config.log_floor)
        # one frame of silence: Griffin-Lim returns (T - 1) * hop samples
        T = max(len(s) for s in spans) + 1
        batch = torch.full((len(spans), T, frames.shape[-1]), silence, device=frames.device)
        for b, s in enumerate(spans):
            batch[b, : len(s)] = s
        wave = self.codec.decode(batch)
        samples = wave.samples.cpu() * torch.tensor(gains)[:, None]
        hop = self.codec.config.hop_length
        lengths = torch.tensor([min(len(s) * hop, samples.shape[1]) for s in spans])
        return Waveform(samples, wave.sample_rate, lengths)

    def to_latents(self, media: Waveform) -> torch.Tensor:
        """Waveform [B, N] (with lengths) -> [B, max_frames, n_mels]: F5's log-mel, silence
        after each item's last frame and up to max_frames."""
        mel = self.codec.encode(media.resample(self.codec.config.sample_rate))
        F = self.max_frames
        out = torch.full((len(mel), F, mel.shape[-1]), math.log(self.codec.config.log_floor))
        for b in range(len(mel)):
            n = min(F, self.codec.config.frames(media.length(b)), mel.shape[1])
            out[b, :n] = mel[b, :n].cpu()
        return out.to(self.device)

    # ------------------------------------------------------------------ modules

    def trainable_modules(self) -> dict[str, nn.Module]:
        return {"transformer": self.transformer}

    def to(self, device: torch.device | str) -> F5Policy:
        self.device = torch.device(device)
        self.transformer.to(self.device)
        return self

    def save_pretrained(self, folder: str | Path) -> None:
        """config.json (architecture, mel, policy settings), model.safetensors, vocab.txt."""
        from safetensors.torch import save_file

        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        net = getattr(self.transformer, "module", self.transformer)
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()},
            folder / "model.safetensors",
        )
        self.vocab.save(folder / "vocab.txt")
        self._write_config(folder, net.config.to_dict())

    def _write_config(self, folder: Path, arch: dict[str, Any]) -> None:
        """config.json: what :func:`load_f5_policy` reads back besides the weights."""
        config = {
            "arch": arch,
            "mel": vars(self.codec.config),
            "max_frames": self.max_frames,
            "sway": self.sway,
            "epss": self.epss,
            "prompt_frames": self.prompt_frames,
            "frame_padding": self.frame_padding,
            "speed": self.speed,
        }
        (folder / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    # ------------------------------------------------------------------ export

    EXPORT_FORMATS = ("f5-tts",)

    def export_formats(self) -> tuple[str, ...]:
        return self.EXPORT_FORMATS

    def export(self, fmt: str, out: Path) -> str:
        """``f5-tts``: the checkpoint in F5-TTS's release layout (``model.safetensors`` with
        the keys ``ema_model.transformer.*``, which its ``load_checkpoint`` reads into
        ``CFM``), the LoRA merged, and ``vocab.txt``. F5-TTS sizes the text embedding
        from the vocab file (one row per token, plus the filler), so rows past the
        vocabulary, which no token reaches, are left out. ``config.json`` keeps the
        architecture and mel settings for alignflow (``policy.path=DIR``)."""
        from safetensors.torch import save_file

        from alignflow.adapters.common import merge_lora

        net = getattr(self.transformer, "module", self.transformer)
        merge_lora(net)
        state = {k: v.detach().contiguous().cpu() for k, v in net.state_dict().items()}
        rows = len(self.vocab) + 1
        state["text_embed.text_embed.weight"] = state["text_embed.text_embed.weight"][:rows].clone()
        arch = {**net.config.to_dict(), "text_num_embeds": len(self.vocab)}
        save_file(
            {f"ema_model.transformer.{k}": v for k, v in state.items()}, out / "model.safetensors"
        )
        self.vocab.save(out / "vocab.txt")
        self._write_config(out, arch)
        f5_arch = {
            k: arch[k] for k in ("dim", "depth", "heads", "ff_mult", "text_dim", "conv_layers")
        }
        return (
            "from f5_tts.infer.utils_infer import load_model\n"
            "from f5_tts.model import DiT\n"
            f"model = load_model(DiT, {f5_arch!r},\n"
            f'                   "{out}/model.safetensors", vocab_file="{out}/vocab.txt")\n'
            f"# mel: {self.codec.config.n_mels} bins at {self.codec.config.sample_rate} Hz, "
            f"hop {self.codec.config.hop_length}; sway {self.sway}\n"
            f"# or in alignflow: policy.name=f5_tts policy.path={out}"
        )


def load_f5_policy(
    path: str,
    max_frames: int = 0,
    sway: float = -1.0,
    speed: float = 1.0,
    vocoder: str = "griffin_lim",
    vocoder_path: str = "",
    audio_root: str = "",
    dtype: str = "float32",
    arch: dict[str, Any] | None = None,
    epss: bool = True,
    prompt_frames: str | None = None,
    frame_padding: str | None = None,
    gradient_checkpointing: bool = False,
) -> F5Policy:
    """An F5-TTS policy from a local folder: a released checkpoint (``F5TTS_v1_Base``:
    ``model_1250000.safetensors`` + ``vocab.txt``; the architecture defaults to v1 Base,
    override with ``arch``) or a folder written by :meth:`F5Policy.save_pretrained`
    (``config.json`` gives the architecture). ``vocoder``: ``griffin_lim`` (offline) or
    ``vocos`` with ``vocoder_path`` a local Vocos folder (config.yaml, pytorch_model.bin).
    ``max_frames`` (the latent length, prompt included; 0 = the saved value, else 2048 =
    21.8 s) bounds prompt + generated speech. ``sway`` and ``epss``: the time grid (see
    :func:`sway_sigmas`; F5-TTS 1.1's defaults). ``prompt_frames``: ``free`` (F5-TTS's
    sampling) or ``pinned``; ``frame_padding``: ``batch`` (F5-TTS's) or ``max_frames``
    (module doc); None: the value in the folder's config.json (a model pretrained with
    ``max_frames`` keeps it), else F5-TTS's. ``gradient_checkpointing``: recompute each
    DiT block in the backward pass."""
    folder = Path(path).expanduser()
    if not folder.is_dir():
        raise ConfigError(
            "policy.path",
            path,
            "a local folder with an F5-TTS checkpoint and vocab.txt "
            "(download F5TTS_v1_Base once while online; see docs/speech.md)",
        )
    if not (folder / "vocab.txt").is_file():
        raise ConfigError(
            "policy.path", path, "a folder that also holds vocab.txt (the checkpoint's vocabulary)"
        )
    vocab = CharVocab.from_file(folder / "vocab.txt")
    saved = (
        json.loads((folder / "config.json").read_text())
        if (folder / "config.json").is_file()
        else {}
    )
    settings = {**saved.get("arch", {"text_num_embeds": len(vocab)}), **(arch or {})}
    unknown = sorted(set(settings) - set(DiTConfig.__dataclass_fields__))
    if unknown:
        raise ConfigError(
            "policy.arch", unknown, f"keys of {sorted(DiTConfig.__dataclass_fields__)}"
        )
    model = DiT(DiTConfig(**settings))
    state = load_state(checkpoint_file(folder))
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as e:
        raise ConfigError(
            "policy.path",
            path,
            f"an F5-TTS checkpoint matching the architecture {settings} "
            f"(set policy.arch to the checkpoint's): {str(e)[:400]}",
        ) from e
    mel = MelConfig(**saved.get("mel", {}))
    codec = MelCodec(mel, make_vocoder(vocoder, vocoder_path, mel))
    return F5Policy(
        model,
        vocab,
        codec,
        max_frames=max_frames or saved.get("max_frames", 2048),
        sway=sway,
        speed=speed,
        audio_root=audio_root,
        dtype=resolve_dtype(dtype),
        epss=epss,
        prompt_frames=prompt_frames or saved.get("prompt_frames", "free"),
        frame_padding=frame_padding or saved.get("frame_padding", "batch"),
        gradient_checkpointing=gradient_checkpointing,
    )
