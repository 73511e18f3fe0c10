"""Speech rewards: Seed-TTS-eval's WER with real ASR models, speaker similarity with
real speaker embedders, DNSMOS; on flite speech (real recorded voices) and tiny
random transformers models built from config."""

import math
from pathlib import Path

import numpy as np
import pytest
import torch

from alignflow.modalities.speech.audio import Waveform
from alignflow.modalities.speech.mel import MelCodec
from alignflow.modalities.speech.sentences import flite
from alignflow.rewards.speech.asr import WERReward, normalize, wer
from alignflow.sdk.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]

SENTENCES = ("we like green apples", "open the red door", "she reads a book")


@pytest.fixture(scope="module")
def speech():
    """{voice: Waveform of the three sentences at 24 kHz}."""
    return {
        v: Waveform.from_items([flite(s, v).resample(24000).samples[0] for s in SENTENCES], 24000)
        for v in ("awb", "rms", "slt")
    }


@pytest.fixture(scope="module")
def asr_reward():
    return WERReward()


@pytest.mark.parametrize(
    "truth, hypothesis, expected",
    [
        ("Hello, world!", "hello world", 0.0),  # punctuation and case
        ("It's a test.", "its a test", 1 / 3),  # the apostrophe is kept
        ("the cat sat", "the cat sat down", 1 / 3),  # one insertion
        ("the  cat sat", "the cat", 1 / 3),  # double space collapsed; one deletion
        ("open the door", "", 1.0),  # nothing heard: all deleted
        ("a-b c", "ab c", 0.0),  # hyphen removed, not split
        ("call me now", "call me now call me now", 1.0),  # a repeated hypothesis
    ],
)
def test_wer_normalisation_matches_seed_tts_eval(truth, hypothesis, expected):
    assert wer(truth, hypothesis) == pytest.approx(expected)


@pytest.mark.parametrize(
    "truth, hypothesis, expected",
    [
        ("你好，世界！", "你好世界", 0.0),  # CJK punctuation removed
        ("今天天气不错。", "今天天气不措", 1 / 6),  # per character: 1 of 6
        ("我们走吧", "我們走吧", 0.0),  # the hypothesis goes to simplified characters
        ("好的．", "好", 1 / 2),  # U+FF0E, in zhon's set: a deletion of 1 of 2
        ("用GPT写", "用gpt写", 3 / 5),  # no lower-casing for Chinese: G P T against g p t
    ],
)
def test_chinese_wer_is_per_character_after_seed_tts_evals_normalisation(
    truth, hypothesis, expected
):
    assert wer(truth, hypothesis, "zh") == pytest.approx(expected)


def test_wer_edge_cases():
    assert math.isnan(wer("...", "anything"))  # no words to read: not applicable
    assert normalize("“Quoted”—text，中文。") == "quotedtext中文"
    assert normalize("你好，世界。", "zh") == "你 好 世 界"
    with pytest.raises(ConfigError, match="reward.language"):
        wer("a", "a", "fr")


def test_offline_whisper_reads_flite_and_not_noise(speech, asr_reward):
    audio = Waveform.from_items([x for v in speech.values() for x in v.items()], 24000)
    prompts = list(SENTENCES) * len(speech)
    out = asr_reward(audio, prompts, [{}] * len(prompts))
    assert out.components["wer"].mean() < 0.2, asr_reward.last_transcripts
    torch.testing.assert_close(out.scores, 1 - out.components["wer"])
    noise = Waveform(torch.randn(2, 24000) * 0.3, 24000)
    assert asr_reward(noise, list(SENTENCES[:2]), [{}, {}]).components["wer"].min() >= 0.99


def test_likelihood_score_ranks_the_spoken_text_first(speech):
    """score: likelihood: the text's mean log-probability per token, teacher-forced on the
    clip, is highest for the sentence actually spoken; WER is still reported."""
    reward = WERReward(score="likelihood")
    clips = speech["rms"]
    logp = torch.stack(
        [
            reward(clips, [SENTENCES[(i + shift) % 3] for i in range(3)], [{}] * 3).scores
            for shift in range(3)
        ]
    )  # [shift, clip]: shift 0 is the spoken text
    assert (logp[0] > logp[1:].max(0).values).all(), logp
    assert logp.max() <= 0 and logp.min() >= np.log(1e-5)
    out = reward(clips, list(SENTENCES), [{}] * 3)
    assert set(out.components) == {"wer", "text_logp"} and out.components["wer"].mean() < 0.3
    with pytest.raises(ConfigError, match="reward.score"):
        WERReward(score="cer")


def test_mel_round_trip_through_griffin_lim_keeps_the_words(speech, asr_reward):
    codec = MelCodec()
    clean = speech["rms"]
    vocoded = [
        codec.decode(codec.encode(Waveform(x[None], 24000))).samples[0] for x in clean.items()
    ]
    out = asr_reward(Waveform.from_items(vocoded, 24000), list(SENTENCES), [{}] * 3)
    assert out.components["wer"].mean() <= 0.25, asr_reward.last_transcripts


def test_wer_text_key_and_errors(speech):
    from alignflow.sdk.errors import RewardError

    reward = WERReward(text_key="text")
    one = Waveform(speech["awb"][0].samples, 24000)
    assert reward(one, ["ignored prompt"], [{"text": SENTENCES[0]}]).components["wer"][0] < 0.5
    with pytest.raises(RewardError, match="text_key"):
        reward(one, ["x"], [{}])
    with pytest.raises(ConfigError, match="reward.backend"):
        WERReward(backend="vosk")


def test_speaker_similarity_ranks_same_voice_above_other_voices(speech):
    from alignflow.rewards.speech.speaker import ResemblyzerEmbedder

    embed = ResemblyzerEmbedder()
    emb = {v: embed([x.numpy() for x in w.resample(16000).items()]) for v, w in speech.items()}
    voices = list(emb)
    for v in voices:
        same = [(emb[v][i] @ emb[v][j]).item() for i in range(3) for j in range(3) if i < j]
        other = [
            (emb[v][i] @ emb[u][j]).item()
            for u in voices
            if u != v
            for i in range(3)
            for j in range(3)
        ]
        assert min(same) > np.mean(other) and np.mean(same) > max(other) - 0.05, (v, same, other)


def test_speaker_similarity_reward_reads_the_reference(speech, tmp_path):
    from alignflow.modalities.speech.audio import write_wav
    from alignflow.rewards.speech.speaker import SpeakerSimilarity

    write_wav(tmp_path / "awb.wav", Waveform(speech["awb"][0].samples, 24000))
    reward = SpeakerSimilarity(audio_root=str(tmp_path))
    media = Waveform.from_items([speech["awb"].items()[1], speech["slt"].items()[1]], 24000)
    out = reward(media, ["x", "x"], [{"ref_audio": "awb.wav", "ref_text": SENTENCES[0]}] * 2)
    assert out.scores[0] > out.scores[1] + 0.1 and out.scores.abs().max() <= 1 + 1e-5


def test_wavlm_xvector_backend_at_tiny_size(tmp_path, speech):
    from transformers import Wav2Vec2FeatureExtractor, WavLMConfig, WavLMForXVector

    from alignflow.modalities.speech.audio import write_wav
    from alignflow.rewards.speech.speaker import SpeakerSimilarity

    cfg = WavLMConfig(
        hidden_size=32,
        num_hidden_layers=2,
        num_attention_heads=2,
        intermediate_size=64,
        conv_dim=(16, 16),
        conv_stride=(5, 4),
        conv_kernel=(10, 8),
        num_conv_pos_embeddings=16,
        num_conv_pos_embedding_groups=2,
        tdnn_dim=(16, 16),
        tdnn_kernel=(3, 1),
        tdnn_dilation=(1, 1),
        xvector_output_dim=24,
        num_buckets=32,
        max_bucket_distance=64,
    )
    WavLMForXVector(cfg).save_pretrained(tmp_path / "wavlm")
    Wav2Vec2FeatureExtractor(
        feature_size=1, sampling_rate=16000, return_attention_mask=True
    ).save_pretrained(tmp_path / "wavlm")
    write_wav(tmp_path / "ref.wav", Waveform(speech["awb"][0].samples, 24000))
    reward = SpeakerSimilarity(
        backend="wavlm", path=str(tmp_path / "wavlm"), audio_root=str(tmp_path)
    )
    out = reward(speech["rms"], list(SENTENCES), [{"ref_audio": "ref.wav", "ref_text": "x"}] * 3)
    assert out.scores.shape == (3,) and bool(out.scores.abs().le(1 + 1e-5).all())
    with pytest.raises(ConfigError, match="reward.path"):
        SpeakerSimilarity(backend="wavlm")


def test_transformers_whisper_backend_at_tiny_size(tmp_path):
    """transformers' Whisper classes at tiny size with the real tiny.en tokenizer (from the
    offline package): the backend loads from a folder and returns one text per clip."""
    from transformers import (
        WhisperConfig,
        WhisperFeatureExtractor,
        WhisperForConditionalGeneration,
        WhisperProcessor,
        WhisperTokenizerFast,
    )

    from alignflow.rewards.speech.asr import offline_whisper_dir

    tok = WhisperTokenizerFast(
        tokenizer_file=f"{offline_whisper_dir()}/tokenizer.json",
        unk_token="<|endoftext|>",
        bos_token="<|endoftext|>",
        eos_token="<|endoftext|>",
    )
    cfg = WhisperConfig(
        vocab_size=len(tok),
        d_model=32,
        encoder_layers=1,
        decoder_layers=1,
        encoder_attention_heads=2,
        decoder_attention_heads=2,
        encoder_ffn_dim=64,
        decoder_ffn_dim=64,
        num_mel_bins=80,
        max_source_positions=1500,
        max_target_positions=64,
        decoder_start_token_id=tok.convert_tokens_to_ids("<|startoftranscript|>"),
        eos_token_id=tok.eos_token_id,
        pad_token_id=tok.eos_token_id,
        bos_token_id=tok.eos_token_id,
    )
    WhisperForConditionalGeneration(cfg).save_pretrained(tmp_path / "whisper")
    WhisperProcessor(WhisperFeatureExtractor(feature_size=80), tok).save_pretrained(
        tmp_path / "whisper"
    )
    reward = WERReward(backend="transformers", path=str(tmp_path / "whisper"))
    out = reward(Waveform(torch.randn(2, 16000) * 0.1, 16000), ["a b", "c d"], [{}, {}])
    assert out.scores.shape == (2,) and len(reward.last_transcripts) == 2
    dense = WERReward(backend="transformers", path=str(tmp_path / "whisper"), score="likelihood")
    out = dense(Waveform(torch.randn(2, 16000) * 0.1, 16000), ["a b", "the cat sat"], [{}, {}])
    assert out.scores.shape == (2,) and torch.equal(out.scores, out.components["text_logp"])
    assert ((out.scores <= 0) & (out.scores >= np.log(1e-5))).all()


def test_dnsmos_prefers_clean_speech(speech):
    from alignflow.rewards.speech.quality import DNSMOSReward

    clean = speech["slt"]
    noisy = Waveform(clean.samples + 0.05 * torch.randn_like(clean.samples), 24000, clean.lengths)
    reward = DNSMOSReward()
    a, b = reward(clean, list(SENTENCES), [{}] * 3), reward(noisy, list(SENTENCES), [{}] * 3)
    assert a.scores.mean() > b.scores.mean() + 0.3 and set(a.components) == {
        "ovrl",
        "sig",
        "bak",
        "p808",
    }


def test_building_and_calling_the_asr_keep_torchs_thread_count(asr_reward):
    """CTranslate2 sets the calling thread's OpenMP threads: it must not leave the
    trainer's own rollouts and training single-threaded."""
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    try:
        WERReward()
        asr_reward(Waveform(torch.randn(1, 16000) * 0.1, 16000), ["a b"], [{}])
        assert torch.get_num_threads() == 2
    finally:
        torch.set_num_threads(before)


def test_the_ge2e_port_embeds_as_resemblyzer_does():
    """rewards/speech/ge2e.py (shipped weights, no resemblyzer import) against the
    resemblyzer package (installed for this test only) on the reference clips and on
    audio with long silences, a quiet clip and one shorter than a window."""
    import resemblyzer

    from alignflow.modalities.speech.audio import read_wav
    from alignflow.rewards.speech import ge2e

    clips = []
    for path in sorted((ROOT / "modalities" / "speech" / "data" / "refs").glob("*.wav")):
        clips.append(read_wav(path).resample(16000).samples[0].numpy())
    g = np.random.default_rng(0)
    speechy = clips[0]
    clips += [
        np.concatenate([speechy, np.zeros(16000, np.float32), speechy]),  # a long silence to cut
        0.01 * speechy,
        speechy[:8000],
        g.normal(0, 0.1, 40000).astype(np.float32),
    ]
    theirs = resemblyzer.VoiceEncoder("cpu", verbose=False)
    ours = ge2e.load_ge2e()
    for k, wav in enumerate(clips):
        a, b = resemblyzer.preprocess_wav(wav, source_sr=16000), ge2e.preprocess(wav)
        assert np.array_equal(a, b), k
        if len(a) > 1600:
            torch.testing.assert_close(
                ge2e.embed_utterance(ours, b),
                torch.from_numpy(theirs.embed_utterance(a)),
                rtol=0,
                atol=1e-6,
            )
