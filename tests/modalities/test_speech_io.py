"""The speech modality's codec and I/O: F5-TTS log-mel frames, Griffin-Lim back to audio,
WAV files through soundfile."""

import math

import numpy as np
import pytest
import torch

from alignflow.modalities.speech.audio import Waveform, read_wav, write_wav
from alignflow.modalities.speech.mel import MelCodec, MelConfig
from alignflow.sdk.errors import ConfigError

SR = 24000


def tone(freq: float, seconds: float = 1.0, sr: int = SR, amp: float = 0.3) -> torch.Tensor:
    t = torch.arange(int(sr * seconds)) / sr
    return amp * torch.sin(2 * math.pi * freq * t)


def voiced(seconds: float = 1.5) -> torch.Tensor:
    """A harmonic source with vibrato: speech-like spectral structure."""
    t = torch.arange(int(SR * seconds)) / SR
    phase = 2 * math.pi * torch.cumsum(140 + 25 * torch.sin(2 * math.pi * 4 * t), 0) / SR
    return 0.2 * sum(torch.sin(k * phase) / k for k in range(1, 10))


@pytest.fixture(scope="module")
def codec():
    return MelCodec()


def test_f5_mel_frames_shape_floor_and_pitch(codec):
    cfg = MelConfig()
    wave = Waveform(torch.stack([tone(1000), torch.zeros(SR)]), SR)
    mel = codec.encode(wave)
    assert mel.shape == (2, cfg.frames(SR), 100) and mel.dtype == torch.float32
    # silence sits on the floor
    assert torch.allclose(mel[1], torch.full_like(mel[1], math.log(cfg.log_floor)))
    import torchaudio.functional as AF

    fbank = AF.melscale_fbanks(
        cfg.n_fft // 2 + 1, 0.0, SR / 2, cfg.n_mels, SR, norm=None, mel_scale="htk"
    )
    # the mel bin of the 1 kHz FFT bin
    expected = int(fbank[round(1000 / (SR / cfg.n_fft))].argmax())
    peak = mel[0, 10:-10].mean(0).argmax().item()
    assert abs(peak - expected) <= 1


def test_griffin_lim_round_trip_keeps_the_spectrum(codec):
    x = voiced()
    mel = codec.encode(Waveform(x, SR))
    y = codec.decode(mel)
    assert y.sample_rate == SR and y.samples.shape == (
        1,
        (mel.shape[1] - 1) * MelConfig().hop_length,
    )
    assert y.samples.abs().max() <= 1.0
    again = codec.encode(Waveform(y.samples, SR))
    T = min(mel.shape[1], again.shape[1])
    err = (mel[:, :T] - again[:, :T]).abs().mean()
    noise = (
        (
            mel
            - codec.encode(
                Waveform(0.2 * torch.randn(x.shape, generator=torch.Generator().manual_seed(0)), SR)
            )
        )
        .abs()
        .mean()
    )
    assert err < 0.5 and err < noise / 10, (err, noise)


def test_griffin_lim_does_not_depend_on_the_global_rng(codec):
    mel = codec.encode(Waveform(voiced(0.5), SR))
    torch.manual_seed(1)
    a = codec.decode(mel).samples
    state = torch.random.get_rng_state()
    b = codec.decode(mel).samples
    assert torch.equal(a, b)
    assert torch.equal(torch.random.get_rng_state(), state)  # and leaves it alone


def test_codec_rejects_wrong_rate_and_shape(codec):
    with pytest.raises(ValueError, match="24000 Hz"):
        codec.encode(Waveform(tone(440, sr=16000), 16000))
    with pytest.raises(ValueError, match=r"\[B, T, 100\]"):
        codec.decode(torch.zeros(1, 100, 80))


def test_wav_round_trip_resample_and_channels(tmp_path):
    x = tone(440, 0.5)
    path = write_wav(tmp_path / "a" / "tone.wav", Waveform(x, SR))
    assert [p.name for p in path.parent.iterdir()] == ["tone.wav"]  # no temp file left behind
    back = read_wav(path)
    assert back.sample_rate == SR and torch.allclose(back.samples[0], x, atol=1e-4)
    up = read_wav(path, sample_rate=48000)
    assert up.sample_rate == 48000 and up.samples.shape[-1] == 2 * x.shape[0]
    import soundfile as sf

    stereo = np.stack([x.numpy(), -x.numpy() * 0 + 0.1], axis=1)
    sf.write(tmp_path / "stereo.wav", stereo, SR)
    assert torch.allclose(
        read_wav(tmp_path / "stereo.wav").samples[0], torch.from_numpy(stereo.mean(1)), atol=1e-4
    )


def test_bad_audio_files_are_named(tmp_path):
    with pytest.raises(ConfigError, match="missing.wav"):
        read_wav(tmp_path / "missing.wav")
    (tmp_path / "junk.wav").write_bytes(b"not audio at all")
    with pytest.raises(ConfigError, match="junk.wav"):
        read_wav(tmp_path / "junk.wav")
    with pytest.raises(ValueError, match="sample_rate"):
        Waveform(torch.zeros(10), 0)


def test_padded_batches_index_trim_and_resample():
    w = Waveform.from_items([tone(440, 0.5), tone(880, 0.25)], SR)
    assert (
        w.samples.shape == (2, SR // 2) and w.lengths.tolist() == [SR // 2, SR // 4] and len(w) == 2
    )
    assert w[1].samples.shape == (1, SR // 4) and torch.equal(w.items()[1], w.samples[1, : SR // 4])
    down = w.resample(16000)
    assert down.lengths.tolist() == [8000, 4000] and down.samples.shape[1] == 8000
    with pytest.raises(ValueError, match="lengths"):
        Waveform(torch.zeros(2, 10), SR, torch.tensor([5, 11]))


def test_wav_writes_only_the_valid_samples(tmp_path):
    w = Waveform.from_items([tone(440, 0.5), tone(880, 0.25)], SR)
    back = read_wav(write_wav(tmp_path / "b.wav", w, index=1))
    assert back.samples.shape == (1, SR // 4)


def test_speech_writer_writes_wavs_and_spectrograms(tmp_path):
    from alignflow.modalities.speech.io import SpeechWriter

    items = [Waveform(tone(220 * (i + 1), 0.3)[None], SR) for i in range(4)]
    png = SpeechWriter().save_samples(
        items, tmp_path / "eval-00010", per_row=2, title="iteration 10"
    )
    assert png.name == "eval-00010.png" and png.stat().st_size > 1000
    assert sorted(p.name for p in (tmp_path / "eval-00010").iterdir()) == [
        "000_00.wav",
        "000_01.wav",
        "001_00.wav",
        "001_01.wav",
    ]
    SpeechWriter().save_comparison(
        items, items, tmp_path / "before_after", per_row=2, titles=("base", "after")
    )
    assert (tmp_path / "before_after.png").is_file() and len(
        list((tmp_path / "before_after" / "after").iterdir())
    ) == 4


def test_pretraining_data_from_a_clips_file_is_the_data_from_flite(tmp_path):
    """dataset.clips: a machine without flite (a GPU box) builds the same pretraining
    data from the clips written on one with it; a file missing a clip is named."""
    from alignflow.modalities.speech import sentences

    path = sentences.save_clips(tmp_path / "clips.safetensors", stretches=(1.0,))
    args = dict(caption_noise=0.4, voice_noise=0.3, stretches=(1.0,))
    wave, captions, meta = sentences.sentences_dataset(**args)
    wave2, captions2, meta2 = sentences.sentences_dataset(**args, clips=str(path))
    assert torch.equal(wave.samples, wave2.samples) and torch.equal(wave.lengths, wave2.lengths)
    assert captions == captions2 and meta == meta2
    with pytest.raises(
        ConfigError, match="dataset.clips .* 32 missing, e.g. 'target/kal16/the cat sat/0.8'"
    ):
        sentences.sentences_dataset(**{**args, "stretches": (0.8, 1.0)}, clips=str(path))
    with pytest.raises(ConfigError, match="dataset.clips"):
        sentences.sentences_dataset(**args, clips=str(tmp_path / "none.safetensors"))
