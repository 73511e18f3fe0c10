"""The F5-TTS DiT (Chen et al., "F5-TTS: A Fairytaler that Fakes Fluent and Faithful
Speech with Flow Matching", arXiv 2410.06885), written for alignflow.

Why not the ``f5-tts`` package: it pins numpy<=1.26 and pulls gradio, wandb,
bitsandbytes and more, and its model needs x-transformers only for a rotary helper.
This file implements the same architecture with the same module names, so a released
checkpoint's state dict loads by stripping its prefixes (:func:`f5_state_dict`).

Inputs per forward, with n mel frames of dimension ``mel_dim``:
- ``x`` [B, n, mel_dim] the noisy mel (F5 time t: x_t = (1 - t) noise + t data);
- ``cond`` [B, n, mel_dim] the prompt's frames, zero where speech is generated;
- ``text`` [B, nt] character ids, -1 padded (id + 1 indexes the embedding; 0 = filler);
- ``time`` [B] F5's t in [0, 1];
- ``mask`` [B, n] bool, optional: the frames of each sample (a batch padded to its
  longest sample).
Output: u = data - noise [B, n, mel_dim] (alignflow's velocity is v = -u).

With ``mask``, each sample's output on its own frames equals its output alone (run at
its own length without a mask): padded frames are zeroed before every convolution (as
F5-TTS does), attention keys are masked (F5-TTS's ``attn_mask_enabled``, off in its v1
configs) and the text encoder's global response normalisation sums over the sample's
frames only (F5-TTS sums over the padding too, so its batched output depends on the
batch; its inference runs one sample at a time).

Text is padded with the filler to n, embedded, given sinusoidal positions and refined by
ConvNeXt-V2 blocks; [x, cond, text] are concatenated per frame and projected, plus a
convolutional position embedding; DiT blocks with adaLN-zero modulation by the time
embedding and rotary attention (interleaved pairs, as x-transformers applies it).
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from alignflow.sdk.errors import ConfigError


@dataclass(frozen=True)
class DiTConfig:
    """Architecture; the defaults are ``F5TTS_v1_Base`` (22 layers, width 1024, 16
    heads, text width 512, 4 ConvNeXt text blocks, 100 mels). ``text_num_embeds`` is
    the vocabulary size (2545 for the released zh/en pinyin vocabulary)."""

    dim: int = 1024
    depth: int = 22
    heads: int = 16
    dim_head: int = 64
    ff_mult: int = 2
    mel_dim: int = 100
    text_num_embeds: int = 2545
    text_dim: int = 512
    conv_layers: int = 4
    dropout: float = 0.1

    def to_dict(self) -> dict:
        return asdict(self)


def sinusoidal(x: torch.Tensor, dim: int, scale: float = 1000.0) -> torch.Tensor:
    """[B] -> [B, dim]: sin/cos of scale * x at dim/2 log-spaced frequencies."""
    half = dim // 2
    freqs = torch.exp(
        torch.arange(half, device=x.device, dtype=torch.float32) * -(math.log(10000) / (half - 1))
    )
    arg = scale * x.float()[:, None] * freqs[None]
    return torch.cat((arg.sin(), arg.cos()), dim=-1)


def text_positions(dim: int, length: int, theta: float = 10000.0) -> torch.Tensor:
    """[length, dim]: cos of position x frequency in the first half, sin in the second."""
    freqs = 1.0 / theta ** (torch.arange(0, dim, 2)[: dim // 2].float() / dim)
    angles = torch.outer(torch.arange(length).float(), freqs)
    return torch.cat((angles.cos(), angles.sin()), dim=-1)


def rotate(x: torch.Tensor, positions: torch.Tensor, inv_freq: torch.Tensor) -> torch.Tensor:
    """Rotary embedding of [B, H, n, d] over interleaved pairs (x0, x1), (x2, x3), ..."""
    angles = (positions.float()[:, None] * inv_freq[None]).repeat_interleave(2, dim=-1)  # [n, d]
    pairs = x.float().unflatten(-1, (-1, 2))
    rotated = torch.stack((-pairs[..., 1], pairs[..., 0]), dim=-1).flatten(-2)
    return (x.float() * angles.cos() + rotated * angles.sin()).to(x.dtype)


class TimestepEmbedding(nn.Module):
    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.time_mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return self.time_mlp(sinusoidal(t, self.freq_dim).to(self.time_mlp[0].weight.dtype))


class GRN(nn.Module):
    """Global response normalisation (ConvNeXt-V2) over the sequence axis."""

    def __init__(self, dim: int):
        super().__init__()
        self.gamma = nn.Parameter(torch.zeros(1, 1, dim))
        self.beta = nn.Parameter(torch.zeros(1, 1, dim))

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        """``valid`` [B, n, 1]: the frames the norm sums over (all when None)."""
        norm = torch.norm(x if valid is None else x * valid, p=2, dim=1, keepdim=True)
        return self.gamma * (x * (norm / (norm.mean(dim=-1, keepdim=True) + 1e-6))) + self.beta + x


class ConvNeXtV2Block(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.dwconv = nn.Conv1d(dim, dim, kernel_size=7, padding=3, groups=dim)
        self.norm = nn.LayerNorm(dim, eps=1e-6)
        self.pwconv1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()
        self.grn = GRN(hidden)
        self.pwconv2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor, valid: torch.Tensor | None = None) -> torch.Tensor:
        h = self.dwconv(x.transpose(1, 2)).transpose(1, 2)
        return x + self.pwconv2(self.grn(self.act(self.pwconv1(self.norm(h))), valid))


class TextEmbedding(nn.Module):
    """Character ids [B, nt] -> [B, n, text_dim], padded with the filler to n frames."""

    max_positions = 4096

    def __init__(self, num_embeds: int, dim: int, conv_layers: int):
        super().__init__()
        self.text_embed = nn.Embedding(num_embeds + 1, dim)  # row 0: filler and padding
        self.text_blocks = nn.Sequential(
            *[ConvNeXtV2Block(dim, 2 * dim) for _ in range(conv_layers)]
        )
        self.register_buffer("positions", text_positions(dim, self.max_positions), persistent=False)

    def forward(
        self,
        text: torch.Tensor,
        n: int,
        drop: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        ids = (text[:, :n] + 1).clamp_min(0)
        ids = F.pad(ids, (0, n - ids.shape[1]), value=0)
        if mask is not None:  # text past a sample's frames is cut, as at its own length
            ids = ids.masked_fill(~mask, 0)
        filler = (ids == 0)[..., None]  # of the real text, also in the dropped branch (as F5 does)
        if drop is not None:
            ids = ids.masked_fill(drop[:, None], 0)
        h = self.text_embed(ids)
        if len(self.text_blocks):
            where = torch.arange(n, device=ids.device).clamp_max(self.max_positions - 1)
            h = h + self.positions[where].to(h.dtype)
            valid = None if mask is None else mask[..., None].to(h.dtype)
            for block in self.text_blocks:  # filler frames are zeroed before and after every block
                h = block(h.masked_fill(filler, 0.0), valid)
            h = h.masked_fill(filler, 0.0)
        return h


class ConvPositionEmbedding(nn.Module):
    def __init__(self, dim: int, kernel_size: int = 31, groups: int = 16):
        super().__init__()
        pad = kernel_size // 2
        self.conv1d = nn.Sequential(
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
            nn.Conv1d(dim, dim, kernel_size, groups=groups, padding=pad),
            nn.Mish(),
        )

    def forward(self, x: torch.Tensor, mask: torch.Tensor | None = None) -> torch.Tensor:
        h = x.transpose(1, 2)
        if mask is None:
            return self.conv1d(h).transpose(1, 2)
        pad = ~mask[:, None]  # [B, 1, n]
        for layer in self.conv1d:  # padding is zero at every convolution's input (Mish(0) = 0)
            h = layer(h.masked_fill(pad, 0.0) if isinstance(layer, nn.Conv1d) else h)
        return h.masked_fill(pad, 0.0).transpose(1, 2)


class InputEmbedding(nn.Module):
    def __init__(self, mel_dim: int, text_dim: int, dim: int):
        super().__init__()
        self.proj = nn.Linear(2 * mel_dim + text_dim, dim)
        self.conv_pos_embed = ConvPositionEmbedding(dim, groups=min(16, dim))

    def forward(self, x, cond, text_embed, mask=None):
        h = self.proj(torch.cat((x, cond, text_embed), dim=-1))
        return self.conv_pos_embed(h, mask) + h


class AdaLayerNorm(nn.Module):
    """LayerNorm modulated by the time embedding: 6 chunks (shift, scale, gate) x 2, or
    2 (scale, shift) for the final norm."""

    def __init__(self, dim: int, chunks: int):
        super().__init__()
        self.silu = nn.SiLU()
        self.linear = nn.Linear(dim, dim * chunks)
        self.norm = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.chunks = chunks

    def forward(self, x, emb):
        return self.norm(x), self.linear(self.silu(emb)).chunk(self.chunks, dim=1)


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, dim_head: int, dropout: float):
        super().__init__()
        inner = heads * dim_head
        self.heads = heads
        self.to_q, self.to_k, self.to_v = (
            nn.Linear(dim, inner),
            nn.Linear(dim, inner),
            nn.Linear(dim, inner),
        )
        self.to_out = nn.ModuleList([nn.Linear(inner, dim), nn.Dropout(dropout)])

    def forward(
        self, x: torch.Tensor, inv_freq: torch.Tensor, mask: torch.Tensor | None = None
    ) -> torch.Tensor:
        B, n, _ = x.shape
        q, k, v = (
            proj(x).view(B, n, self.heads, -1).transpose(1, 2)
            for proj in (self.to_q, self.to_k, self.to_v)
        )
        pos = torch.arange(n, device=x.device)
        q, k = rotate(q, pos, inv_freq), rotate(k, pos, inv_freq)
        keys = None if mask is None else mask[:, None, None, :]  # [B, 1, 1, n]
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keys)
        out = out.transpose(1, 2).reshape(B, n, -1)
        return self.to_out[1](self.to_out[0](out))


class FeedForward(nn.Module):
    def __init__(self, dim: int, mult: int, dropout: float):
        super().__init__()
        self.ff = nn.Sequential(
            nn.Sequential(nn.Linear(dim, dim * mult), nn.GELU(approximate="tanh")),
            nn.Dropout(dropout),
            nn.Linear(dim * mult, dim),
        )

    def forward(self, x):
        return self.ff(x)


class DiTBlock(nn.Module):
    def __init__(self, cfg: DiTConfig):
        super().__init__()
        self.attn_norm = AdaLayerNorm(cfg.dim, 6)
        self.attn = Attention(cfg.dim, cfg.heads, cfg.dim_head, cfg.dropout)
        self.ff_norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.ff = FeedForward(cfg.dim, cfg.ff_mult, cfg.dropout)

    def forward(self, x, t, inv_freq, mask=None):
        normed, (shift_a, scale_a, gate_a, shift_f, scale_f, gate_f) = self.attn_norm(x, t)
        x = x + gate_a[:, None] * self.attn(
            normed * (1 + scale_a[:, None]) + shift_a[:, None], inv_freq, mask
        )
        h = self.ff_norm(x) * (1 + scale_f[:, None]) + shift_f[:, None]
        return x + gate_f[:, None] * self.ff(h)


class DiT(nn.Module):
    """F5-TTS's DiT backbone; ``forward`` returns u = data - noise [B, n, mel_dim]."""

    def __init__(self, cfg: DiTConfig = DiTConfig()):
        super().__init__()
        self.config = cfg
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.text_embed = TextEmbedding(cfg.text_num_embeds, cfg.text_dim, cfg.conv_layers)
        self.input_embed = InputEmbedding(cfg.mel_dim, cfg.text_dim, cfg.dim)
        self.rotary_embed = nn.Module()
        self.rotary_embed.register_buffer(
            "inv_freq", 1.0 / 10000 ** (torch.arange(0, cfg.dim_head, 2).float() / cfg.dim_head)
        )
        self.transformer_blocks = nn.ModuleList([DiTBlock(cfg) for _ in range(cfg.depth)])
        # recompute each block in the backward pass (F5-TTS's checkpoint_activations)
        self.gradient_checkpointing = False
        self.norm_out = AdaLayerNorm(cfg.dim, 2)
        self.proj_out = nn.Linear(cfg.dim, cfg.mel_dim)
        for block in self.transformer_blocks:  # adaLN-zero: every block starts as the identity
            nn.init.zeros_(block.attn_norm.linear.weight)
            nn.init.zeros_(block.attn_norm.linear.bias)
        for layer in (self.norm_out.linear, self.proj_out):
            nn.init.zeros_(layer.weight)
            nn.init.zeros_(layer.bias)

    def forward(
        self,
        x: torch.Tensor,
        cond: torch.Tensor,
        text: torch.Tensor,
        time: torch.Tensor,
        drop: torch.Tensor | None = None,
        mask: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``drop`` [B] bool: the unconditional branch for those samples (text and
        audio prompt both dropped, as F5-TTS's classifier-free guidance does). ``mask``
        [B, n] bool: each sample's frames (module doc); its padded frames output 0."""
        B, n, _ = x.shape
        if x.shape != cond.shape:
            raise ValueError(
                f"DiT: x {tuple(x.shape)} and cond {tuple(cond.shape)} must have the same shape"
            )
        if drop is not None:
            cond = cond.masked_fill(drop[:, None, None], 0.0)
        t = self.time_embed(time.expand(B) if time.ndim == 0 else time)
        h = self.input_embed(x, cond, self.text_embed(text, n, drop, mask), mask)
        for block in self.transformer_blocks:
            if self.gradient_checkpointing and torch.is_grad_enabled():
                h = checkpoint(block, h, t, self.rotary_embed.inv_freq, mask, use_reentrant=False)
            else:
                h = block(h, t, self.rotary_embed.inv_freq, mask)
        normed, (scale, shift) = self.norm_out(h, t)
        out = self.proj_out(normed * (1 + scale[:, None]) + shift[:, None])
        return out if mask is None else out.masked_fill(~mask[..., None], 0.0)


# Keys of a released checkpoint that are not the DiT's weights.
_NOT_MODEL = ("initted", "step")


def f5_state_dict(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A released F5-TTS checkpoint (``model_*.safetensors``: ``ema_model.transformer.*``,
    or ``.pt`` ``model_state_dict``: ``transformer.*``) -> this DiT's state dict. The EMA
    weights are the released ones; the mel front end's buffers are dropped."""
    if any(k.startswith("ema_model.") for k in state):
        state = {k[len("ema_model.") :]: v for k, v in state.items() if k.startswith("ema_model.")}
    out = {}
    for key, value in state.items():
        if key in _NOT_MODEL or key.startswith("mel_spec."):
            continue
        out[key.removeprefix("transformer.")] = value
    return out


def checkpoint_file(folder: Path) -> Path:
    """The checkpoint in an F5-TTS folder: safetensors first, then .pt (the last by name)."""
    for pattern in (
        "model.safetensors",
        "model_*.safetensors",
        "*.safetensors",
        "model_*.pt",
        "*.pt",
    ):
        found = sorted(folder.glob(pattern))
        if found:
            return found[-1]
    raise ConfigError(
        "policy.path",
        str(folder),
        "a folder with an F5-TTS checkpoint (*.safetensors or *.pt) and vocab.txt",
    )


def load_state(path: Path) -> dict[str, torch.Tensor]:
    """The DiT weights of an F5-TTS checkpoint file (safetensors, or a .pt read with
    ``weights_only=True``: EMA weights when present)."""
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        return f5_state_dict(load_file(str(path)))
    ckpt = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("ema_model_state_dict", "model_state_dict"):
        if key in ckpt:
            return f5_state_dict(ckpt[key])
    return f5_state_dict(ckpt)
