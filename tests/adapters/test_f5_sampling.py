"""F5Policy samples as F5-TTS 1.1's inference does: its time grid, its prompt handling
(transcript, duration, loudness, the reference's frames) and its batching."""

import json
import math

import pytest
import torch

from alignflow.adapters.speech.f5 import F5Policy, sway_sigmas
from alignflow.adapters.speech.text import reference_text
from alignflow.adapters.speech.tiny import load_tiny_f5
from alignflow.modalities.speech import sentences
from alignflow.sdk.batching import select
from alignflow.sdk.errors import ConfigError, DataError
from alignflow.sdk.kernels import KERNELS


def test_sway_schedule_is_f5s_time_grid_in_sigma():
    sig = sway_sigmas(8)
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    torch.testing.assert_close(sig, torch.cos(math.pi / 2 * t).float(), atol=1e-6, rtol=0)  # s = -1
    assert sig[0] == 1 and sig[-1] == 0 and bool((sig[1:] < sig[:-1]).all())
    torch.testing.assert_close(sway_sigmas(4, coef=0.0), torch.tensor([1.0, 0.75, 0.5, 0.25, 0.0]))
    # small steps near the noise end: the first step is the smallest
    assert (sig[0] - sig[1]) < (sig[3] - sig[4])


# F5-TTS 1.1's get_epss_timesteps (f5_tts/model/utils.py), in 32nds, as published
PUBLISHED_EPSS = {
    5: [0, 2, 4, 8, 16, 32],
    6: [0, 2, 4, 6, 8, 16, 32],
    7: [0, 2, 4, 6, 8, 16, 24, 32],
    10: [0, 2, 4, 6, 8, 12, 16, 20, 24, 28, 32],
    12: [0, 2, 4, 6, 8, 10, 12, 14, 16, 20, 24, 28, 32],
    16: [0, 1, 2, 3, 4, 5, 6, 7, 8, 10, 12, 14, 16, 20, 24, 28, 32],
}


@pytest.mark.parametrize("steps", [5, 6, 7, 8, 10, 12, 16, 32])
def test_the_time_grid_is_f5s_epss_where_it_has_one_then_sway(steps):
    """CFM.sample: t = EPSS grid (steps with one) or linspace, then the sway
    t + s (cos(pi t / 2) - 1 + t); s = -1 makes sigma = 1 - t' = cos(pi t / 2)."""
    grid = PUBLISHED_EPSS.get(steps)
    t = (
        torch.tensor(grid, dtype=torch.float64) / 32
        if grid
        else torch.linspace(0, 1, steps + 1, dtype=torch.float64)
    )
    torch.testing.assert_close(
        sway_sigmas(steps), torch.cos(math.pi / 2 * t).float(), atol=1e-6, rtol=0
    )
    uniform = torch.cos(math.pi / 2 * torch.linspace(0, 1, steps + 1, dtype=torch.float64))
    torch.testing.assert_close(sway_sigmas(steps, epss=False), uniform.float(), atol=1e-6, rtol=0)
    assert load_tiny_f5(random_init=True).sigmas(steps).equal(sway_sigmas(steps))
    assert (
        load_tiny_f5(random_init=True, epss=False)
        .sigmas(steps)
        .equal(sway_sigmas(steps, epss=False))
    )


def test_duration_text_and_prompt_follow_f5s_rule():
    policy = load_tiny_f5(random_init=True)
    row = json.loads(sentences.PROMPT_FILES["eval"].read_text().splitlines()[0])
    cond = policy.encode([row["prompt"]], [row])
    ref = policy.references(row).samples
    ref_len, ref_text = ref.shape[-1] // 256, reference_text(row["ref_text"])
    assert ref_text == "hello there.  "  # F5's '. ' and infer_batch_process's extra space
    expected = ref_len + int(ref_len / len(ref_text.encode()) * len(row["prompt"].encode()))
    assert int(cond.length[0]) == expected and int(cond.prompt[0]) == ref.shape[-1] // 256 + 1
    ids = cond.text[0][cond.text[0] >= 0].tolist()
    assert ids == policy.vocab.encode(ref_text + row["prompt"])
    assert bool((cond.cond[0, int(cond.prompt[0]) :] == 0).all())
    # a text under 10 bytes is spoken at speed 0.3, as F5-TTS's infer_batch_process does
    short = policy.encode(["the cat"], [row])
    assert int(short.length[0]) == ref_len + int(ref_len / len(ref_text.encode()) * 7 / 0.3)
    with pytest.raises(DataError, match="max_frames"):
        load_tiny_f5(random_init=True, max_frames=64).encode([row["prompt"]], [row])
    with pytest.raises(DataError, match="ref_audio"):
        policy.encode(["hello"], [{"ref_text": "hi"}])


def test_the_reference_transcript_ends_as_f5_tts_makes_it():
    """preprocess_ref_audio_text's ending, then infer_batch_process's space after a
    single-byte last character; the duration counts the bytes of the result."""
    assert reference_text("Some call me nature.") == "Some call me nature.  "
    assert reference_text("Some call me nature") == "Some call me nature.  "
    assert reference_text("Some call me nature. ") == "Some call me nature.  "
    assert reference_text("对，这就是我。") == "对，这就是我。"
    assert reference_text("对，这就是我") == "对，这就是我.  "
    assert reference_text("hi ") == "hi .  "  # not stripped, as F5-TTS does not


def test_a_quiet_reference_is_raised_and_the_output_lowered_as_f5_does(tmp_path):
    """RMS below 0.1: the reference is scaled to 0.1 before its mel is taken, and the
    generated audio by rms / 0.1 after the vocoder; a silent reference is refused."""
    import soundfile

    policy = load_tiny_f5(random_init=True)
    row = json.loads(sentences.PROMPT_FILES["eval"].read_text().splitlines()[0])
    ref = policy.references(row).samples[0]
    rms = float(ref.pow(2).mean().sqrt())
    for name, level in (("loud", 0.3), ("soft", 0.05), ("quiet", 0.02)):
        soundfile.write(
            tmp_path / f"{name}.wav", (ref * level / rms).numpy(), 24000, subtype="FLOAT"
        )
    soundfile.write(tmp_path / "silent.wav", torch.zeros(24000).numpy(), 24000)
    rows = [
        {"ref_audio": str(tmp_path / f"{n}.wav"), "ref_text": row["ref_text"]}
        for n in ("loud", "soft", "quiet")
    ]
    cond = policy.encode([row["prompt"]] * 3, rows)
    torch.testing.assert_close(cond.cond[1], cond.cond[2], atol=1e-3, rtol=1e-3)  # both at 0.1
    assert (cond.cond[0] - cond.cond[1]).abs().max() > 0.5  # a loud one is kept as it is
    torch.testing.assert_close(cond.gain, torch.tensor([1.0, 0.5, 0.2]), atol=1e-3, rtol=0)
    x = torch.randn(1, policy.max_frames, 100)
    soft, quiet = (policy.decode(x, select(cond, [i])).samples[0] for i in (1, 2))
    assert 0.02 < soft.abs().max() < 10
    torch.testing.assert_close(quiet / 0.2, soft / 0.5, atol=1e-3, rtol=0)
    with pytest.raises(DataError, match="silent"):
        policy.encode(["hello"], [{"ref_audio": str(tmp_path / "silent.wav"), "ref_text": "a"}])


def random_tiny(seed: int, **kwargs) -> F5Policy:
    """A tiny F5 whose adaLN-zero layers are randomised, so its output is not 0."""
    policy = load_tiny_f5(random_init=True, seed=seed, **kwargs)
    for p in policy.transformer.parameters():
        p.data.normal_(0, 0.05)
    return policy


def eval_rows(n: int) -> list[dict]:
    return [
        json.loads(line) for line in sentences.PROMPT_FILES["eval"].read_text().splitlines()[:n]
    ]


@pytest.mark.parametrize("prompt_frames", ["free", "pinned"])
@pytest.mark.parametrize("kernel", ["ode", "flow_sde"])
def test_which_frames_depend_on_the_model(kernel, prompt_frames):
    """Padding frames (and, pinned, the prompt's) get the exact straight-path velocity:
    two different models agree there, and the ODE lands exactly on silence (and on the
    prompt). Free prompt frames move with the model, as in F5-TTS's ODE."""
    rows = eval_rows(2)
    a, b = random_tiny(1, prompt_frames=prompt_frames), random_tiny(2, prompt_frames=prompt_frames)
    cond = a.encode([r["prompt"] for r in rows], rows)
    sig = a.sigmas(6)
    x = a.noise(2, [torch.Generator().manual_seed(i) for i in range(2)])
    prompt, generated = cond.frame_masks(a.max_frames)
    padding = ~prompt & ~generated
    pinned = padding | prompt if prompt_frames == "pinned" else padding
    for i in range(6):
        va, vb = a.velocity(x, sig[i], cond, 2.0), b.velocity(x, sig[i], cond, 2.0)
        torch.testing.assert_close(va[pinned], vb[pinned])
        assert (va[~pinned] - vb[~pinned]).abs().max() > 1e-3
        if prompt_frames == "free":
            assert (va[prompt] - vb[prompt]).abs().max() > 1e-3
        out = KERNELS[kernel](
            x, va, sig, i, noise_level=0.7, generator=[torch.Generator().manual_seed(9)] * 2
        )
        x = out.x_next
    if kernel == "ode":
        torch.testing.assert_close(
            x[padding], torch.full_like(x[padding], cond.silence), atol=1e-4, rtol=0
        )
        if prompt_frames == "pinned":
            torch.testing.assert_close(x[prompt], cond.cond[prompt], atol=1e-4, rtol=0)
    media = a.decode(x, cond)  # from the reference's last frame (samples // hop), as F5
    assert media.lengths.tolist() == [
        (int(n) - int(p) + 1) * 256 for p, n in zip(cond.prompt, cond.length)
    ]


def test_the_dit_masks_padding_so_a_sample_is_the_same_alone_and_batched():
    """In float64 (exact up to rounding): a sample's output on its frames with a mask in
    a batch padded to a longer sample equals its output alone at its own length."""
    net = random_tiny(0).transformer.double()
    n, m = 37, 50
    x, cond = (
        torch.randn(2, m, 100, dtype=torch.float64),
        torch.randn(2, m, 100, dtype=torch.float64),
    )
    cond[0, 20:] = 0
    text = torch.randint(0, 40, (2, m))
    text[0, 15:] = -1
    t = torch.tensor([0.3, 0.6], dtype=torch.float64)
    mask = torch.arange(m)[None] < torch.tensor([n, m])[:, None]
    with torch.no_grad():
        alone = net(x[:1, :n], cond[:1, :n], text[:1], t[:1])
        batched = net(x, cond, text, t, drop=torch.tensor([False, True]), mask=mask)
        unmasked = net(x, cond, text, t)
    torch.testing.assert_close(batched[0, :n], alone[0], atol=1e-10, rtol=0)
    assert bool((batched[0, n:] == 0).all())
    assert (unmasked[0, :n] - alone[0]).abs().max() > 1e-3  # without the mask, padding leaks in


@pytest.mark.parametrize("frame_padding", ["batch", "max_frames"])
def test_a_sample_is_the_same_alone_and_in_a_batch_with_longer_ones(frame_padding):
    """``batch``: the DiT runs on the batch's longest sample with F5's frame mask;
    ``max_frames``: on max_frames, silence padding visible. Either way the velocity
    (with guidance) and the whole ODE sample of the shorter sample are the same alone
    and batched."""
    from alignflow.sdk.rollout import sample

    policy = random_tiny(4, frame_padding=frame_padding)
    rows = eval_rows(3)
    texts = [
        "the cat sat on the mat",
        "open the door now",
        rows[2]["prompt"],
    ]
    cond = policy.encode(texts, rows)
    assert len(set(cond.length.tolist())) == 3 and int(cond.length.max()) < policy.max_frames
    short = int(cond.length.argmin())
    alone = select(cond, [short])
    seen = []
    hook = policy.transformer.register_forward_hook(lambda m, a, o: seen.append(a[0].shape[1]))
    x = policy.noise(3, [torch.Generator().manual_seed(i) for i in range(3)])
    v_batch = policy.velocity(x, torch.tensor(0.7), cond, 2.0)
    v_alone = policy.velocity(x[[short]], torch.tensor(0.7), alone, 2.0)
    hook.remove()
    if frame_padding == "batch":
        assert seen == [int(cond.length.max()), int(cond.length[short])]
    else:
        assert seen == [policy.max_frames] * 2
    torch.testing.assert_close(v_batch[short], v_alone[0], atol=1e-4, rtol=1e-4)
    gens = [torch.Generator().manual_seed(i) for i in range(3)]
    both = sample(policy, cond, 6, guidance=2.0, noise_generators=gens)
    gen = torch.Generator().manual_seed(short)
    one = sample(policy, alone, 6, guidance=2.0, noise_generators=[gen])
    n = int(cond.length[short])
    torch.testing.assert_close(both[short, :n], one[0, :n], atol=1e-4, rtol=1e-4)


def test_prompt_frames_is_checked():
    with pytest.raises(ConfigError, match="policy.prompt_frames"):
        load_tiny_f5(random_init=True, prompt_frames="frozen")


def test_gradient_checkpointing_gives_the_same_loss_and_gradients():
    from tests.helpers import checkpointing_matches

    plain = random_tiny(5, frame_padding="batch")
    saving = random_tiny(5, frame_padding="batch")
    saving.transformer.load_state_dict(plain.transformer.state_dict())
    saving.transformer.gradient_checkpointing = True
    rows = eval_rows(2)
    cond = plain.encode([r["prompt"] for r in rows], rows)
    x = plain.noise(2, [torch.Generator().manual_seed(i) for i in range(2)])
    blocks = saving.transformer.transformer_blocks
    sig = torch.tensor([0.6, 0.6])
    assert checkpointing_matches(plain, saving, blocks, x, sig, [cond, cond], 2.0) == 2
    assert load_tiny_f5(
        random_init=True, gradient_checkpointing=True
    ).transformer.gradient_checkpointing
