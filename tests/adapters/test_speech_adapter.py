"""The F5-TTS policy: checkpoint layout and loading, the text front-end, latents, and
training iterations at tiny size (how it samples: test_f5_sampling.py)."""

import json
import math
from pathlib import Path

import pytest
import torch

from alignflow.adapters.speech.dit import DiT, DiTConfig
from alignflow.adapters.speech.f5 import F5Policy, load_f5_policy
from alignflow.adapters.speech.text import CharVocab
from alignflow.adapters.speech.tiny import TINY_ARCH, load_tiny_f5
from alignflow.modalities.speech.mel import MelCodec
from alignflow.sdk.errors import ConfigError

TINY = DiTConfig(
    dim=64, depth=2, heads=4, dim_head=16, ff_mult=2, text_num_embeds=40, text_dim=32, conv_layers=2
)


def f5_layout(cfg: DiTConfig) -> dict[str, tuple[int, ...]]:
    """Key -> shape of an F5-TTS DiT checkpoint (F5-TTS v1.1 ``backbones/dit.py`` with
    ``modules.py``; x-transformers' rotary buffer), written out from the released layout."""
    d, td, m, ff = cfg.dim, cfg.text_dim, cfg.mel_dim, cfg.dim * cfg.ff_mult
    inner = cfg.heads * cfg.dim_head
    keys = {
        "time_embed.time_mlp.0.weight": (d, 256),
        "time_embed.time_mlp.0.bias": (d,),
        "time_embed.time_mlp.2.weight": (d, d),
        "time_embed.time_mlp.2.bias": (d,),
        "text_embed.text_embed.weight": (cfg.text_num_embeds + 1, td),
        "input_embed.proj.weight": (d, 2 * m + td),
        "input_embed.proj.bias": (d,),
        "input_embed.conv_pos_embed.conv1d.0.weight": (d, d // 16, 31),
        "input_embed.conv_pos_embed.conv1d.0.bias": (d,),
        "input_embed.conv_pos_embed.conv1d.2.weight": (d, d // 16, 31),
        "input_embed.conv_pos_embed.conv1d.2.bias": (d,),
        "rotary_embed.inv_freq": (cfg.dim_head // 2,),
        "norm_out.linear.weight": (2 * d, d),
        "norm_out.linear.bias": (2 * d,),
        "proj_out.weight": (m, d),
        "proj_out.bias": (m,),
    }
    for i in range(cfg.conv_layers):
        p = f"text_embed.text_blocks.{i}."
        keys |= {
            p + "dwconv.weight": (td, 1, 7),
            p + "dwconv.bias": (td,),
            p + "norm.weight": (td,),
            p + "norm.bias": (td,),
            p + "pwconv1.weight": (2 * td, td),
            p + "pwconv1.bias": (2 * td,),
            p + "grn.gamma": (1, 1, 2 * td),
            p + "grn.beta": (1, 1, 2 * td),
            p + "pwconv2.weight": (td, 2 * td),
            p + "pwconv2.bias": (td,),
        }
    for i in range(cfg.depth):
        p = f"transformer_blocks.{i}."
        keys |= {
            p + "attn_norm.linear.weight": (6 * d, d),
            p + "attn_norm.linear.bias": (6 * d,),
            p + "attn.to_out.0.weight": (d, inner),
            p + "attn.to_out.0.bias": (d,),
            p + "ff.ff.0.0.weight": (ff, d),
            p + "ff.ff.0.0.bias": (ff,),
            p + "ff.ff.2.weight": (d, ff),
            p + "ff.ff.2.bias": (d,),
        }
        for proj in ("to_q", "to_k", "to_v"):
            keys |= {p + f"attn.{proj}.weight": (inner, d), p + f"attn.{proj}.bias": (inner,)}
    return keys


def test_dit_matches_the_f5_tts_v1_base_layout_at_full_size():
    with torch.device("meta"):  # shapes only: no 336M parameters allocated
        model = DiT(DiTConfig())
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert ours == f5_layout(DiTConfig())
    assert sum(math.prod(s) for k, s in ours.items() if k != "rotary_embed.inv_freq") > 330e6


def write_release(folder, cfg: DiTConfig, vocab: CharVocab) -> dict[str, torch.Tensor]:
    """A folder as F5-TTS releases it: model_*.safetensors with ``ema_model.transformer.*``
    keys (plus EMA bookkeeping and mel buffers) and vocab.txt. Returns the weights."""
    from safetensors.torch import save_file

    g = torch.Generator().manual_seed(3)
    weights = {k: torch.randn(shape, generator=g) * 0.05 for k, shape in f5_layout(cfg).items()}
    weights["rotary_embed.inv_freq"] = 1.0 / 10000 ** (
        torch.arange(0, cfg.dim_head, 2).float() / cfg.dim_head
    )
    release = {f"ema_model.transformer.{k}": v for k, v in weights.items()}
    release |= {
        "ema_model.initted": torch.tensor(True),
        "ema_model.step": torch.tensor(1250000),
        "ema_model.mel_spec.mel_stft.mel_scale.fb": torch.zeros(513, 100),
    }
    folder.mkdir(parents=True, exist_ok=True)
    save_file(release, str(folder / "model_1250000.safetensors"))
    vocab.save(folder / "vocab.txt")
    return weights


def test_an_f5_release_folder_loads_with_its_weights(tmp_path):
    vocab = CharVocab([" "] + list("abcdefghijklmnopqrstuvwxyz.,'"))
    weights = write_release(tmp_path / "F5TTS_v1_Base", TINY, vocab)
    policy = load_f5_policy(
        str(tmp_path / "F5TTS_v1_Base"), arch={k: v for k, v in TINY.to_dict().items()}
    )
    state = policy.transformer.state_dict()
    for k, v in weights.items():
        torch.testing.assert_close(state[k], v)
    assert len(policy.vocab) == len(vocab) and policy.vocab.encode("ab ?") == [
        1,
        2,
        0,
        0,
    ]  # unknown -> 0
    with pytest.raises(
        ConfigError, match="policy.path"
    ):  # the wrong architecture is named, not half-loaded
        load_f5_policy(str(tmp_path / "F5TTS_v1_Base"), arch={**TINY.to_dict(), "depth": 3})
    with pytest.raises(ConfigError, match="vocab.txt"):
        (tmp_path / "F5TTS_v1_Base" / "vocab.txt").unlink()
        load_f5_policy(str(tmp_path / "F5TTS_v1_Base"))


def test_save_pretrained_round_trip(tmp_path):
    policy = load_tiny_f5(random_init=True, seed=1, prompt_frames="pinned")
    policy.save_pretrained(tmp_path / "p")
    again = load_f5_policy(str(tmp_path / "p"))
    assert again.transformer.config == TINY_ARCH and again.max_frames == policy.max_frames
    # how the model was trained to be sampled is kept, unless asked otherwise
    assert (again.frame_padding, again.prompt_frames) == ("max_frames", "pinned")
    other = load_f5_policy(str(tmp_path / "p"), frame_padding="batch", prompt_frames="free")
    assert (other.frame_padding, other.prompt_frames) == ("batch", "free")
    for (k, a), b in zip(
        policy.transformer.state_dict().items(), again.transformer.state_dict().values()
    ):
        torch.testing.assert_close(a, b, msg=k)


def test_pretraining_utterances_longer_than_max_frames_train_on_what_fits():
    policy = load_tiny_f5(random_init=True, max_frames=64)
    x0 = torch.randn(2, 64, 100)
    meta = [
        {"ref_text": "thank you", "prompt_frames": 20, "frames": 50},
        {"ref_text": "thank you", "prompt_frames": 20, "frames": 80},
    ]  # cut at 64 by to_latents
    cond, weight = policy.pretrain_inputs(
        x0, ["the cat sat", "open the door"], meta, torch.zeros(2, dtype=torch.bool)
    )
    assert cond.length.tolist() == [50, 64]
    assert weight[:, :, 0].sum(1).tolist() == [30, 44]


def test_codec_latents_round_trip_lengths():
    policy = load_tiny_f5(random_init=True)
    from alignflow.modalities.speech.audio import Waveform

    wave = Waveform.from_items([torch.randn(24000) * 0.1, torch.randn(12000) * 0.1], 24000)
    lat = policy.to_latents(wave)
    assert lat.shape == (2, policy.max_frames, 100)
    assert bool((lat[1, 12000 // 256 + 1 :] == math.log(1e-5)).all()) and lat[1, 10].std() > 0.1
    assert isinstance(policy.codec, MelCodec)


def test_one_grpo_iteration_on_the_tiny_f5(tmp_path):
    """The speech default's configuration (real WER and speaker rewards) with Flow-GRPO
    (SDE rollouts with log-probs, the first sway step ODE) on a random tiny F5 whose
    adaLN gates are open, so that LoRA on the attention gets gradients."""
    from alignflow.sdk.config import compose
    from alignflow.sdk.trainer import Trainer

    policy = load_tiny_f5(random_init=True, seed=3)
    for p in policy.transformer.parameters():
        p.data.normal_(0, 0.05)
    policy.save_pretrained(tmp_path / "base")
    cfg = compose(
        "train",
        [
            "experiment=speech_tiny",
            "algorithm=flow_grpo",
            f"policy.path={tmp_path / 'base'}",
            f"output_dir={tmp_path / 'run'}",
            "train.iterations=1",
            "sample.num_steps=4",
            "sample.group_size=2",
            "sample.prompts_per_iteration=2",
            "sample.batch_size=4",
            "train.micro_batch_size=4",
            "++algorithm.ode_first=1",
            "++algorithm.train_fraction=0.99",
            "eval.every=0",
            "eval.samples_per_prompt=1",
            "eval.num_steps=2",
            "data.eval=",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
        ],
    )
    tr = Trainer(cfg)
    before = {k: v.clone() for k, v in tr.finetune.state_dict().items()}
    m = tr.train_iteration(0)
    assert math.isfinite(m["train/reward_mean"]) and m["train/trained_steps"] == 2
    assert {"train/asr/wer_mean", "train/speaker/sim_mean"} <= set(m)
    after = tr.finetune.state_dict()
    assert any((after[k] - before[k]).abs().max() > 0 for k in before)


def test_an_evaluation_between_iterations_does_not_change_training(tmp_path):
    """The same run with and without evaluations gives the same training numbers (the
    Griffin-Lim vocoder once drew its phases from the global RNG, so an evaluation
    changed the next iteration's audio and rewards)."""
    from alignflow.sdk.config import compose
    from alignflow.sdk.data import PromptSet
    from alignflow.sdk.trainer import Trainer

    cfg = compose(
        "train",
        [
            "experiment=speech_tiny",
            f"output_dir={tmp_path}",
            "sample.num_steps=4",
            "sample.group_size=2",
            "sample.prompts_per_iteration=2",
            "sample.batch_size=4",
            "train.micro_batch_size=4",
            "eval.every=0",
            "eval.samples_per_prompt=1",
            "eval.num_steps=2",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            "logging.media=false",
        ],
    )
    runs = []
    for evaluate in (True, False):
        tr = Trainer(cfg)
        tr.eval_set = PromptSet(tr.eval_set.prompts[:3], tr.eval_set.metadata[:3])
        rows = []
        for it in range(2):
            if evaluate:
                tr.evaluate()
            rows.append({k: v for k, v in tr.train_iteration(it).items() if k.startswith("train/")})
        runs.append(rows)
    assert runs[0] == runs[1]


def test_policy_protocol():
    from alignflow.sdk.policy import FlowPolicy

    assert isinstance(load_tiny_f5(random_init=True), FlowPolicy)
    assert F5Policy.modality == "speech"


def test_tiny_architecture_overrides_are_checked():
    assert load_tiny_f5(random_init=True, arch={"depth": 2}).transformer.config.depth == 2
    with pytest.raises(ConfigError, match="policy.arch"):
        load_tiny_f5(random_init=True, arch={"width": 2})
    with pytest.raises(ConfigError, match="speech_tiny"):
        load_tiny_f5(path="/nonexistent/base")


def test_the_text_front_end_tokenises_as_f5_tts_does():
    """Mixed Chinese / English / punctuation sentences against the tokens f5-tts 1.1's
    own convert_char_to_pinyin gave (tests/adapters/data/f5_text_frontend.json), and
    the ids the released vocab's pinyin tokens get."""
    from alignflow.adapters.speech.text import f5_tokens

    fixture = json.loads((Path(__file__).parent / "data" / "f5_text_frontend.json").read_text())
    for text, tokens in fixture["cases"].items():
        assert list(f5_tokens(text)) == tokens, text
    vocab = CharVocab([" ", ",", "a", "b", "ni2", "hao3"])  # 你好: ni3 -> ni2 (tone sandhi)
    # " ni2 hao3, ab": a space before each syllable and before a word after punctuation
    assert vocab.encode(f5_tokens("你好,ab")) == [0, 4, 0, 5, 1, 0, 2, 3]
    assert vocab.encode("ab") == [2, 3]  # a plain string is its characters
