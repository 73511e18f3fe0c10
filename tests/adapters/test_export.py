"""``alignflow export``: what a run trained, loaded by the stock diffusers pipeline,
gives the samples alignflow gives (same prompt, noise, steps and guidance)."""

import json

import pytest
import torch

from alignflow.sdk.api import load_policy
from alignflow.sdk.errors import CheckpointError, ConfigError
from alignflow.sdk.export import export
from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.plans import AllSDE
from alignflow.sdk.random import generator
from alignflow.sdk.rollout import rollout
from alignflow.sdk.trainer import Trainer
from tests.adapters.test_image_adapters import LOADERS, PROMPTS
from tests.adapters.test_video_adapter import wan_cfg
from tests.helpers import tiny_image_cfg

STEPS = 4
GUIDANCE = {"sd3": 4.5, "flux": 3.5, "wan": 5.0}
WAN_SIZE = {"height": 32, "width": 32, "num_frames": 9}


@pytest.fixture(scope="module", params=["sd3", "flux", "wan"])
def trained(request, tmp_path_factory):
    """A tiny real pipeline saved to disk, and one Flow-GRPO iteration of LoRA on it
    with a large step, so that the LoRA moves the samples."""
    from alignflow.adapters.video.tiny import tiny_wan_pipeline

    kind = request.param
    tmp = tmp_path_factory.mktemp(kind)
    (tiny_wan_pipeline if kind == "wan" else LOADERS[kind][0])(seed=0).save_pretrained(tmp / "base")
    prompts = tmp / "prompts.jsonl"
    rows = [{"prompt": p, "direction": "left"} for p in PROMPTS]
    prompts.write_text("".join(json.dumps(r) + "\n" for r in rows))
    make = wan_cfg if kind == "wan" else (lambda *a: tiny_image_cfg(a[0], kind, *a[1:]))
    Trainer(make(tmp / "run", tmp / "base", prompts, "train.lr=3e-2")).train()
    return kind, tmp / "base", tmp / "run"


def pixels(media):
    return getattr(media, "frames", media)  # a Video's frames [B, F, C, H, W], or images


def alignflow_media(policy, guidance):
    """alignflow's own sampling (an SDE rollout at noise level 0: the ODE), decoded."""
    n = len(PROMPTS)
    with torch.no_grad():
        traj = rollout(
            policy,
            policy.encode(PROMPTS),
            policy.sigmas(STEPS),
            AllSDE()(STEPS, 0, 0),
            KERNELS["flow_sde"],
            noise_level=0.0,
            guidance=guidance,
            group_size=1,
            noise_generators=[generator("x", i) for i in range(n)],
            sde_generators=[generator("x", i) for i in range(n)],
        )
        return pixels(policy.decode(traj.x0))


def stock_media(pipe, policy, guidance):
    noise = policy.noise(len(PROMPTS), [generator("x", i) for i in range(len(PROMPTS))])
    size = WAN_SIZE | {"max_sequence_length": 16} if "Wan" in type(pipe).__name__ else {}
    out = pipe(
        PROMPTS,
        num_inference_steps=STEPS,
        guidance_scale=guidance,
        latents=noise,
        output_type="pt",
        **(size or {"height": 32, "width": 32}),
    )
    return out.frames if hasattr(out, "frames") else out.images


def test_the_stock_pipeline_with_the_exported_lora_or_merged_folder_samples_as_alignflow(
    trained, tmp_path
):
    kind, base_folder, run = trained
    guidance = GUIDANCE[kind]
    ours = load_policy(run, device="cpu")
    expected = alignflow_media(ours.policy, guidance)
    cls = type(ours.policy.pipeline)

    lora = export(run, tmp_path / "lora", "diffusers-lora")
    assert (lora / "pytorch_lora_weights.safetensors").is_file()
    pipe = cls.from_pretrained(base_folder)  # saved in float32
    base = stock_media(pipe, ours.policy, guidance)
    assert (base - expected).abs().max() > 1e-3  # the LoRA did change the samples
    pipe.load_lora_weights(lora)
    torch.testing.assert_close(
        stock_media(pipe, ours.policy, guidance), expected, atol=1e-5, rtol=0
    )

    merged = export(run, tmp_path / "merged", "diffusers")
    pipe = cls.from_pretrained(merged)  # saved in float32
    torch.testing.assert_close(
        stock_media(pipe, ours.policy, guidance), expected, atol=1e-4, rtol=0
    )

    card = (lora / "README.md").read_text()
    assert card.startswith("---\n") and "library_name: diffusers" in card
    tag = "text-to-video" if kind == "wan" else "text-to-image"
    assert f"pipeline_tag: {tag}" in card and "load_lora_weights" in card
    assert f'"{lora}"' in card and ".tmp-" not in card  # the final folder, not the temporary one


def test_bad_exports_are_refused_before_anything_is_written(trained, tmp_path):
    kind, _, run = trained
    with pytest.raises(ConfigError, match="export --format.*f5-tts.*one of"):
        export(run, tmp_path / "a", "f5-tts")
    with pytest.raises(ConfigError, match="export --format.*onnx"):
        export(run, tmp_path / "a", "onnx")
    with pytest.raises(ConfigError, match="export --checkpoint.*7.*saved iterations \\[1\\]"):
        export(run, tmp_path / "a", "diffusers", checkpoint=7)
    with pytest.raises(CheckpointError, match="no checkpoint"):
        export(tmp_path, tmp_path / "a", "diffusers")
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "notes.txt").write_text("keep")
    with pytest.raises(ConfigError, match="export --out.*--overwrite"):
        export(run, mine, "diffusers-lora")
    assert not (tmp_path / "a").exists() and (mine / "notes.txt").read_text() == "keep"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]  # no temporary folder left

    export(run, mine, "diffusers-lora", overwrite=True)
    assert not (mine / "notes.txt").exists() and (mine / "README.md").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine"]


def test_the_digits_toy_exports_merged_to_its_diffusers_folder_and_loads_back(tmp_path):
    """The toy has no stock pipeline (pixel space, no VAE): its export is its component
    folders with the LoRA merged, which `policy.path=` loads back to the same velocity."""
    from alignflow.sdk.build import build_policy
    from alignflow.sdk.cli import main
    from tests.helpers import digits_cfg

    Trainer(digits_cfg(tmp_path / "run", "train.iterations=1", "train.lr=3e-2")).train()
    out = tmp_path / "merged"
    assert main(["export", str(tmp_path / "run"), "--format", "diffusers", "--out", str(out)]) == 0
    assert (
        main(
            [
                "export",
                str(tmp_path / "run"),
                "--format",
                "diffusers-lora",
                "--out",
                str(tmp_path / "x"),
            ]
        )
        == 2
    )
    trained = load_policy(tmp_path / "run", device="cpu").policy
    again = build_policy(digits_cfg(tmp_path / "o", f"policy.path={out}"), "cpu")
    base = build_policy(digits_cfg(tmp_path / "o"), "cpu")
    x = trained.noise(2, [generator("v", 0), generator("v", 1)])
    cond = trained.encode(["a handwritten digit seven", "a handwritten digit two"])
    sigma = torch.tensor([0.7, 0.7])
    with torch.no_grad():
        v, v_again, v_base = (p.velocity(x, sigma, cond) for p in (trained, again, base))
    assert (v - v_base).abs().max() > 1e-3
    torch.testing.assert_close(v_again, v, atol=1e-5, rtol=0)
    assert "policy.path=" in (out / "README.md").read_text()


def test_the_video_toy_merges_its_lora_into_the_folder_it_loads_from(tmp_path):
    from alignflow.adapters.video.tiny import load_shapes_wan
    from alignflow.sdk.finetune import LoRA

    policy = load_shapes_wan()
    LoRA(policy, rank=4, alpha=8, targets=["to_q", "to_v"])
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    x = policy.noise(1, [generator("v", 0)])
    cond = policy.encode(["a red circle moving left"])
    with torch.no_grad():
        v = policy.velocity(x, torch.tensor([0.5]), cond)
        policy.export("diffusers", tmp_path)
        again = load_shapes_wan(str(tmp_path))
        assert not any("lora" in k for k in again.transformer.state_dict())
        torch.testing.assert_close(
            again.velocity(x, torch.tensor([0.5]), cond), v, atol=1e-5, rtol=0
        )


def test_best_is_the_checkpoint_with_the_highest_held_out_reward(tmp_path):
    from alignflow.sdk.checkpoint import iteration_of
    from alignflow.sdk.export import _checkpoint_path
    from alignflow.sdk.tracking import read_metrics
    from tests.helpers import digits_cfg

    run = tmp_path / "run"
    Trainer(
        digits_cfg(run, "train.iterations=3", "eval.every=1", "checkpoint.every=1", "train.lr=3e-2")
    ).train()
    scores = {
        r["iteration"]: r["eval/reward_mean"] for r in read_metrics(run) if "eval/reward_mean" in r
    }
    saved = [iteration_of(p) for p in run.glob("checkpoint-*")]
    assert len(saved) >= 2  # the last ones (checkpoint.keep_last)
    best = max(saved, key=scores.get)
    assert _checkpoint_path(run, "best") == run / f"checkpoint-{best}"
    assert _checkpoint_path(run, "latest") == run / "checkpoint-3"

    plain = tmp_path / "plain"
    Trainer(digits_cfg(plain, "data.eval=")).train()
    with pytest.raises(ConfigError, match="export --checkpoint = 'best'.*evaluated"):
        _checkpoint_path(plain, "best")


def test_the_f5_export_is_a_release_layout_checkpoint_that_loads_strictly(tmp_path):
    """F5-TTS's `load_checkpoint(use_ema=True)` reads `ema_model_state_dict` (a
    safetensors file is that dict), strips `ema_model.` and loads the rest strictly
    into `CFM`, whose DiT is `transformer`; `load_model` sizes the text embedding from
    vocab.txt. The export is checked against that layout, then loaded back (through
    the same key mapping a release goes through) to the same velocity with the LoRA merged."""
    from safetensors.torch import load_file

    from alignflow.adapters.speech.f5 import load_f5_policy
    from alignflow.adapters.speech.tiny import load_tiny_f5
    from alignflow.sdk.finetune import LoRA

    policy = load_tiny_f5()
    lora = LoRA(policy, rank=4, alpha=8)
    torch.manual_seed(0)
    with torch.no_grad():
        for name, p in policy.transformer.named_parameters():
            if "lora_B" in name:
                p.normal_(0, 0.05)
    tokens = policy.transformer.text_embed.text_embed.weight.shape[0]
    with torch.no_grad():
        probe = torch.randn(1, 40, policy.transformer.config.mel_dim)
        text = torch.tensor([[1, 2, 3, 4]])
        v = policy.transformer(probe, torch.zeros_like(probe), text, torch.tensor([0.4]))
        with lora.reference():
            v_base = policy.transformer(probe, torch.zeros_like(probe), text, torch.tensor([0.4]))
        assert (v - v_base).abs().max() > 1e-3
        policy.export("f5-tts", tmp_path)

    state = load_file(str(tmp_path / "model.safetensors"))
    assert all(k.startswith("ema_model.transformer.") for k in state)
    assert not any("lora" in k for k in state)
    vocab = (tmp_path / "vocab.txt").read_text().splitlines()
    embed = state["ema_model.transformer.text_embed.text_embed.weight"]
    assert embed.shape[0] == len(vocab) + 1 < tokens  # F5-TTS: Embedding(len(vocab) + 1)

    again = load_f5_policy(str(tmp_path))
    with torch.no_grad():
        v_again = again.transformer(probe, torch.zeros_like(probe), text, torch.tensor([0.4]))
    torch.testing.assert_close(v_again, v, atol=1e-5, rtol=0)
