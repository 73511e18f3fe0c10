"""Where an iteration of the speech default spends its time, and how fast each speech
reward backend runs relative to real time.

    .venv/bin/python benchmarks/speech.py [--iterations 3] [overrides ...]

1. Runs `experiment=speech_tiny` (no evaluation, checkpoints or media) for a warm-up
   iteration and ``--iterations`` timed ones: wall clock and the trainer's split.
2. In the same process, on the same shapes, times each part of an iteration alone:
   the rollout's denoiser forwards, the vocoder (decode), the ASR (WER) and speaker
   rewards, and training (forward + backward per micro-batch).
3. The denoiser forward of a batch of 16 different prompts with F5-TTS's batching
   (``frame_padding=batch``: the batch's longest sample, masked) against every sample
   padded to ``max_frames`` (the tiny base's way), at the default's max_frames (224)
   and at 1024.
4. The real-time factor (compute seconds / audio seconds; < 1 is faster than real
   time) of every offline backend on the same flite speech: Whisper tiny.en batched in
   a 10 s window (the default) and one clip at a time in Whisper's 30 s window,
   resemblyzer, DNSMOS, and the Griffin-Lim vocoder.
Everything runs in one process, back to back: ratios are meaningful on a noisy machine.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
from _timing import iteration_split, parts, print_parts, timed  # noqa: E402

from alignflow.sdk.config import compose  # noqa: E402
from alignflow.sdk.trainer import Trainer  # noqa: E402


def real_time_factors() -> list[tuple[str, float, float]]:
    """(backend, seconds per audio second, audio seconds) on 32 flite sentences."""
    from alignflow.modalities.speech.audio import Waveform
    from alignflow.modalities.speech.mel import MelCodec
    from alignflow.modalities.speech.sentences import TARGETS, VOICES, flite
    from alignflow.rewards.speech.asr import FasterWhisperASR
    from alignflow.rewards.speech.quality import DNSMOSReward
    from alignflow.rewards.speech.speaker import ResemblyzerEmbedder

    clips = [flite(t, v).samples[0] for v in VOICES for t in TARGETS]
    audio16 = [c.numpy() for c in clips]
    seconds = sum(len(c) for c in clips) / 16000
    wave16 = Waveform.from_items(clips, 16000)
    wave24 = wave16.resample(24000)
    codec = MelCodec()
    mel = codec.encode(wave24)
    asr = FasterWhisperASR(threads=torch.get_num_threads())
    embed, dnsmos = ResemblyzerEmbedder(), DNSMOSReward()
    rows = [
        ("whisper tiny.en, batched 10 s window", timed(lambda: asr.transcribe(audio16), 1)),
        (
            "whisper tiny.en, 30 s window, per clip",
            timed(
                lambda: [
                    list(asr.model.transcribe(a, language="en", beam_size=1)[0])
                    for a in audio16[:8]
                ],
                1,
            )
            * 4,
        ),
        ("resemblyzer d-vector", timed(lambda: embed(audio16), 1)),
        ("DNSMOS P.835", timed(lambda: dnsmos(wave16, [""] * len(clips), [{}] * len(clips)), 1)),
        ("Griffin-Lim vocoder (32 iters)", timed(lambda: codec.decode(mel), 1)),
    ]
    return [(name, sec / seconds, seconds) for name, sec in rows]


def padding_forwards(tr: Trainer) -> list[tuple[int, float, float, float]]:
    """(max_frames, mean length, seconds per velocity call with ``batch`` padding, with
    ``max_frames``) for 16 prompts of the training set, guidance 1; the second of two
    passes (the first warms the kernels for every shape)."""
    policy = tr.policy
    saved = policy.max_frames, policy.frame_padding
    prompts, meta = tr.train_set.prompts[:16], tr.train_set.metadata[:16]
    rows = []
    for max_frames in (saved[0], 1024) * 2:
        policy.max_frames = max_frames
        cond = policy.encode(prompts, meta)
        x = policy.noise(len(prompts), [torch.Generator().manual_seed(b) for b in range(16)])
        seconds = {}
        for padding in ("batch", "max_frames"):
            policy.frame_padding = padding
            with torch.no_grad():
                seconds[padding] = timed(
                    lambda x=x, cond=cond: policy.velocity(x, torch.tensor(0.5), cond), 5
                )
        rows.append((max_frames, cond.length.float().mean().item(), *seconds.values()))
    policy.max_frames, policy.frame_padding = saved
    return rows[2:]


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose(
        "train",
        [
            "experiment=speech_tiny",
            "output_dir=outputs/benchmark_speech",
            "data.eval=",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            "logging.media=false",
            "checkpoint.overwrite=true",
            *args.overrides,
        ],
    )
    tr = Trainer(cfg)
    wall, split = iteration_split(tr, args.warmup, args.iterations)
    alone = parts(tr, "vocoder")
    s = cfg.sample
    print(
        f"speech_tiny: {s.prompts_per_iteration} prompts x {s.group_size} samples, {s.num_steps} "
        f"steps, guidance {s.guidance}, {torch.get_num_threads()} threads"
    )
    print_parts(wall, split, alone)
    print(f"\n{'max_frames':>10}{'mean length':>13}{'batch s':>10}{'max_frames s':>14}{'ratio':>8}")
    for frames, mean, batch, padded in padding_forwards(tr):
        print(f"{frames:>10}{mean:>13.0f}{batch:>10.3f}{padded:>14.3f}{padded / batch:>8.2f}")
    rtf = real_time_factors()
    print(
        f"\n{'reward backend':<42}{'RTF':>8}   on {rtf[0][2]:.1f} s of flite speech "
        f"({torch.get_num_threads()} threads)"
    )
    for name, r, _ in rtf:
        print(f"{name:<42}{r:8.3f}")


if __name__ == "__main__":
    main()
