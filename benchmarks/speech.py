"""Where an iteration of the speech default spends its time, and how fast each speech
reward backend runs relative to real time.

    .venv/bin/python benchmarks/speech.py [--iterations 3] [overrides ...]

1. Runs `experiment=speech_tiny` (no evaluation, checkpoints or media) for a warm-up
   iteration and ``--iterations`` timed ones: wall clock and the trainer's split.
2. In the same process, on the same shapes, times each part of an iteration alone:
   the rollout's denoiser forwards, the vocoder (decode), the ASR (WER) and speaker
   rewards, and training (forward + backward per micro-batch).
3. The real-time factor (compute seconds / audio seconds; < 1 is faster than real
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
from _timing import iteration_split, timed  # noqa: E402

from alignflow.sdk.batching import repeat_interleave, select  # noqa: E402
from alignflow.sdk.cli import compose  # noqa: E402
from alignflow.sdk.random import generator  # noqa: E402
from alignflow.sdk.trainer import Trainer  # noqa: E402


def parts(tr: Trainer) -> dict[str, float]:
    """Seconds of each part of one iteration, timed alone."""
    cfg, policy = tr.cfg, tr.policy
    G, N, P = cfg.sample.group_size, cfg.sample.num_steps, cfg.sample.prompts_per_iteration
    rows = [tr.train_set.metadata[i] for i in range(P)]
    prompts = [tr.train_set.prompts[i] for i in range(P)]
    cond = repeat_interleave(policy.encode(prompts, rows), G)
    B = P * G
    x = policy.noise(B, [generator("bench", b) for b in range(B)])
    sigma = torch.full((B,), 0.5)
    plan = tr.algo.plan(N, 0, cfg.seed)  # the trained steps of an iteration

    def denoiser():
        with torch.no_grad():
            for _ in range(N):
                policy.velocity(x, sigma, cond, cfg.sample.guidance)

    media = policy.decode(x, cond)
    p_rep, m_rep = [p for p in prompts for _ in range(G)], [m for m in rows for _ in range(G)]
    terms = {name: r for name, (r, _) in tr.reward.terms.items()}
    mb, K = cfg.train.micro_batch_size, len(plan.trained_steps)

    def training():
        for start in range(0, B * K, mb):
            n = min(mb, B * K - start)
            idx = torch.arange(n) % B
            v = policy.velocity(x[idx], sigma[idx], select(cond, idx), cfg.sample.guidance)
            v.float().pow(2).mean().backward()
            if tr.algo.needs_reference:
                with torch.no_grad(), tr.finetune.reference():
                    policy.velocity(x[idx], sigma[idx], select(cond, idx), cfg.sample.guidance)
        tr.optimizer.zero_grad(set_to_none=True)

    out = {"rollout (denoiser)": timed(denoiser, 1), "vocoder": timed(lambda: policy.decode(x, cond), 2)}
    for name, reward in terms.items():
        out[f"reward: {name}"] = timed(lambda r=reward: r(media, p_rep, m_rep), 2)
    out["training"] = timed(training, 1)
    return out


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
        ("whisper tiny.en, 30 s window, per clip", timed(
            lambda: [list(asr.model.transcribe(a, language="en", beam_size=1)[0]) for a in audio16[:8]], 1) * 4),
        ("resemblyzer d-vector", timed(lambda: embed(audio16), 1)),
        ("DNSMOS P.835", timed(lambda: dnsmos(wave16, [""] * len(clips), [{}] * len(clips)), 1)),
        ("Griffin-Lim vocoder (32 iters)", timed(lambda: codec.decode(mel), 1)),
    ]
    return [(name, sec / seconds, seconds) for name, sec in rows]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--iterations", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=1)
    ap.add_argument("overrides", nargs="*")
    args = ap.parse_args()
    cfg = compose("train", ["experiment=speech_tiny", "output_dir=outputs/benchmark_speech", "data.eval=",
                            "logging.progress_bar=false", "logging.tensorboard=false", "logging.media=false",
                            "checkpoint.overwrite=true", *args.overrides])
    tr = Trainer(cfg)
    wall, split = iteration_split(tr, args.warmup, args.iterations)
    alone = parts(tr)
    s = cfg.sample
    print(f"speech_tiny: {s.prompts_per_iteration} prompts x {s.group_size} samples, {s.num_steps} steps, "
          f"guidance {s.guidance}, {torch.get_num_threads()} threads")
    print(f"{'trainer phase':<22}{'s/it':>8}{'share':>8}")
    for k, v in split.items():
        print(f"{k:<22}{v:8.2f}{v / wall:8.1%}")
    print(f"{'total':<22}{wall:8.2f}")
    print(f"\n{'part, timed alone':<34}{'s/it':>8}{'share':>8}")
    total = sum(alone.values())
    for k, v in alone.items():
        print(f"{k:<34}{v:8.2f}{v / total:8.1%}")
    print(f"{'sum':<34}{total:8.2f}   (trainer wall / sum of parts = {wall / total:.2f}x)")
    rtf = real_time_factors()
    print(f"\n{'reward backend':<42}{'RTF':>8}   on {rtf[0][2]:.1f} s of flite speech "
          f"({torch.get_num_threads()} threads)")
    for name, r, _ in rtf:
        print(f"{name:<42}{r:8.3f}")


if __name__ == "__main__":
    main()
