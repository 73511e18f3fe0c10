"""The Wan 2.1 adapter on a real diffusers WanPipeline at tiny size, saved to disk and
loaded back through the adapter's loading path; the shapes toy's policy."""

import pytest
import torch

from alignflow.adapters.video.tiny import load_shapes_wan, tiny_wan_pipeline
from alignflow.adapters.video.wan import WanPolicy, load_wan_policy
from alignflow.modalities.video.video import Video
from alignflow.sdk.config import compose
from alignflow.sdk.errors import ConfigError
from alignflow.sdk.random import generator
from alignflow.sdk.trainer import Trainer
from tests.helpers import ode_rollout

PROMPTS = ["a red square moving left", "a cat surfing a wave"]
SIZE = dict(height=32, width=32, num_frames=9)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    folder = tmp_path_factory.mktemp("wan")
    tiny_wan_pipeline(seed=0).save_pretrained(folder)
    return folder


def load(folder, **kw):
    return load_wan_policy(str(folder), dtype="float32", max_sequence_length=16, **SIZE, **kw)


def test_loads_back_with_the_latent_shape_of_the_pipeline(folder):
    policy = load(folder)
    assert policy.latent_shape == (16, 3, 4, 4)  # 1 + (9 - 1) / 4 latent frames, 32 / 8 pixels
    assert type(policy.transformer).__name__ == "WanTransformer3DModel"
    assert type(policy.codec.vae).__name__ == "AutoencoderKLWan"


@pytest.mark.parametrize("guidance", [1.0, 5.0])
def test_noise_level_zero_rollout_is_wan_pipelines_output(folder, guidance):
    policy = load(folder)
    N = 4
    traj, noise = ode_rollout(policy, policy.encode(PROMPTS), N, guidance)
    common = dict(
        num_inference_steps=N,
        guidance_scale=guidance,
        latents=noise,
        max_sequence_length=16,
        **SIZE,
    )
    ref = policy.pipeline(PROMPTS, output_type="latent", **common).frames
    torch.testing.assert_close(traj.x0, ref, rtol=1e-5, atol=1e-5)
    frames = policy.pipeline(
        PROMPTS, output_type="pt", **common
    ).frames  # [B, F, C, H, W] in [0, 1]
    video = policy.decode(traj.x0)
    assert isinstance(video, Video) and video.frames.shape == (2, 9, 3, 32, 32)
    torch.testing.assert_close(video.frames, frames, rtol=1e-4, atol=1e-4)


def test_prompt_embeddings_are_the_pipelines(folder):
    policy = load(folder, negative_prompt="blurry")
    cond = policy.encode(PROMPTS)
    embeds, neg = policy.pipeline.encode_prompt(
        PROMPTS, ["blurry"] * 2, do_classifier_free_guidance=True, max_sequence_length=16
    )
    torch.testing.assert_close(cond.embeds, embeds)
    torch.testing.assert_close(cond.null_embeds, neg)


def test_memory_controls_and_offloaded_text_encoder_give_the_same_velocity(folder):
    plain = load(folder)
    saving = load(
        folder,
        gradient_checkpointing=True,
        vae_slicing=True,
        vae_tiling=True,
        offload_text_encoder=True,
    )
    assert saving.transformer.gradient_checkpointing and "text_encoder" not in saving.other_modules
    x = plain.noise(2, [generator("m", 0), generator("m", 1)])
    sig = torch.tensor([0.7, 0.7])
    with torch.no_grad():
        a = plain.velocity(x, sig, plain.encode(PROMPTS), 3.0)
    x.requires_grad_(True)
    b = saving.velocity(x, sig, saving.encode(PROMPTS), 3.0)
    b.square().mean().backward()  # the checkpointed backward runs
    torch.testing.assert_close(a, b.detach())
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_bad_arguments(folder, tmp_path):
    with pytest.raises(ConfigError, match="policy.path = .*model_index.json"):
        load_wan_policy(str(tmp_path))
    with pytest.raises(ConfigError, match="policy.num_frames = 8: expected 1 \\+ 4 k"):
        load_wan_policy(str(folder), dtype="float32", height=32, width=32, num_frames=8)
    with pytest.raises(ConfigError, match="policy.height = 24: expected a positive multiple of 16"):
        load_wan_policy(str(folder), dtype="float32", height=24, width=32, num_frames=9)
    with pytest.raises(ConfigError, match="policy.attention = 'warp-drive'"):
        load(folder, attention="warp-drive")


def wan_cfg(out, folder, prompts, *extra):
    """A one-iteration LoRA run of the tiny Wan pipeline saved in ``folder``."""
    return compose(
        "train",
        [
            "policy.name=wan",
            f"+policy.path={folder}",
            *(f"+policy.{k}={v}" for k, v in SIZE.items()),
            "+policy.dtype=float32",
            "+policy.max_sequence_length=16",
            "+reward.flow.name=video_flow",
            "+reward.flow.direction=1.0",
            "+reward.flow.consistency=1.0",
            f"data.train={prompts}",
            "sample.num_steps=4",
            "sample.group_size=2",
            "sample.prompts_per_iteration=2",
            "sample.batch_size=4",
            "sample.guidance=5.0",
            "train.micro_batch_size=4",
            "train.iterations=1",
            "train.lora_rank=4",
            "train.lora_alpha=8",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
            "logging.media=false",
            f"output_dir={out}",
            *extra,
        ],
    )


def test_a_grpo_iteration_of_wan_runs_with_a_video_reward(folder, tmp_path):
    prompts = tmp_path / "prompts.jsonl"
    prompts.write_text("".join(f'{{"prompt": "{p}", "direction": "left"}}\n' for p in PROMPTS))
    cfg = wan_cfg(
        tmp_path / "run",
        folder,
        prompts,
        "train.optimizer_steps=1",
        "+algorithm.aggregate=advantage",
    )
    tr = Trainer(cfg)
    assert tr.reward.advantage_terms() == {"flow/direction": 1.0, "flow/consistency": 1.0}
    m = tr.train_iteration(0)
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0 and m["train/kl_ref"] == 0.0
    assert 0 <= m["train/flow/consistency_mean"] <= 1 and m["train/grad_norm"] > 0


def test_shapes_policy_round_trips_pixels_and_saves(tmp_path):
    policy = load_shapes_wan(random_init=True)
    x = policy.noise(2, [generator("s", 0), generator("s", 1)]).clamp(-1, 1)
    torch.testing.assert_close(policy.to_latents(policy.decode(x)), x)
    policy.save_pretrained(tmp_path / "base")
    again = load_shapes_wan(str(tmp_path / "base"))
    cond = again.encode(["a red square moving left"] * 2)
    with torch.no_grad():
        torch.testing.assert_close(
            again.velocity(x, torch.tensor([0.5, 0.5]), cond),
            policy.velocity(
                x, torch.tensor([0.5, 0.5]), policy.encode(["a red square moving left"] * 2)
            ),
        )
    with pytest.raises(ConfigError, match="policy.path"):
        load_shapes_wan(str(tmp_path / "nothing"))


def test_position_channels_are_frame_row_column_concatenated_to_the_latents():
    policy = load_shapes_wan(random_init=True)
    x = policy.noise(2, [generator("p", 0), generator("p", 1)])
    cond = policy.encode(["a red square moving left", "a blue circle moving up"])
    f, h, w = x.shape[2:]
    grid = torch.meshgrid(
        torch.linspace(-1, 1, f), torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij"
    )
    pos = torch.stack(grid)[None].expand(2, -1, -1, -1, -1)
    assert (
        pos[0, 0, 0].eq(-1).all()
        and pos[0, 1, :, -1].eq(1).all()
        and pos[0, 2, :, :, 0].eq(-1).all()
    )
    with torch.no_grad():
        want = policy.transformer(
            hidden_states=torch.cat([x, pos], 1),
            timestep=torch.tensor([500.0, 500.0]),
            encoder_hidden_states=cond.embeds,
            return_dict=False,
        )[0]
        torch.testing.assert_close(policy.velocity(x, torch.tensor(0.5), cond), want)
    with pytest.raises(
        ConfigError,
        match=r"policy.transformer.in_channels = 6: expected 3 \(the 3 latent channels\)",
    ):
        WanPolicy(
            policy.transformer,
            policy.prompt_encoder,
            policy.codec,
            policy.scheduler,
            (3, 8, 16, 16),
        )
    with pytest.raises(ConfigError, match=r"in_channels = 6.*expected 7"):
        WanPolicy(
            policy.transformer,
            policy.prompt_encoder,
            policy.codec,
            policy.scheduler,
            (4, 8, 16, 16),
            position_channels=True,
        )


def test_the_wan_product_config_runs_an_iteration_on_tiny_weights(folder, tmp_path):
    from tests.helpers import save_tiny_clip

    clip = save_tiny_clip(tmp_path / "clip")
    prompts = tmp_path / "p.txt"
    prompts.write_text("a cat surfing\na red car driving\n")
    cfg = compose(
        "train",
        [
            "experiment=wan21_t2v_1_3b",
            f"policy.path={folder}",
            "policy.height=32",
            "policy.width=32",
            "policy.num_frames=9",
            "policy.dtype=float32",
            "policy.max_sequence_length=16",
            "policy.encode_prompts_once=true",
            f"reward.clip.path={clip}",
            f"data.train={prompts}",
            f"data.eval={prompts}",
            "sample.num_steps=4",
            "sample.group_size=2",
            "sample.prompts_per_iteration=2",
            "sample.batch_size=4",
            "train.micro_batch_size=4",
            "train.mixed_precision=no",
            "train.iterations=1",
            "eval.num_steps=3",
            f"output_dir={tmp_path / 'run'}",
            "logging.progress_bar=false",
            "logging.tensorboard=false",
        ],
    )
    tr = Trainer(cfg)  # the prompts are encoded, UMT5 is gone
    assert tr.policy.pipeline.text_encoder is None and set(tr.policy.other_modules) == {"vae"}
    assert set(tr.reward.advantage_terms()) == {
        "flow/consistency",
        "flow/smoothness",
        "flow/motion",
        "clip",
    }
    summary = tr.train()
    assert (
        summary["iterations"] == 1
        and summary["after"]["eval/reward_mean"] == summary["after"]["eval/reward_mean"]
    )
    assert (tmp_path / "run" / "samples" / "before_after.gif").is_file()


def test_video_shapes_same_seed_same_numbers(tmp_path):
    from alignflow.sdk.tracking import read_metrics
    from tests.helpers import strip_times

    def run(out):
        cfg = compose(
            "train",
            [
                "experiment=video_shapes",
                f"output_dir={out}",
                "train.iterations=1",
                "sample.prompts_per_iteration=2",
                "sample.group_size=4",
                "train.micro_batch_size=8",
                "eval.samples_per_prompt=1",
                "eval.every=1",
                "logging.progress_bar=false",
                "logging.tensorboard=false",
                "logging.media=false",
            ],
        )
        Trainer(cfg).train()
        return strip_times(read_metrics(out))

    first, second = run(tmp_path / "a"), run(tmp_path / "b")
    assert first == second and any("train/flow/direction_mean" in row for row in first)


def test_a_wan_pipeline_in_memory_keeps_its_float32_modules(folder):
    """A WanPipeline object cast to bf16 as from_pretrained loads it: RoPE, time
    embedder and norms stay float32, the VAE takes vae_dtype."""
    from alignflow.adapters.video.tiny import tiny_wan_pipeline

    policy = load_wan_policy(tiny_wan_pipeline(), height=32, width=32, num_frames=5)
    t = policy.transformer
    assert t.patch_embedding.weight.dtype == torch.bfloat16
    assert t.scale_shift_table.dtype == t.condition_embedder.time_embedder.linear_1.weight.dtype
    assert t.scale_shift_table.dtype == torch.float32 and policy.pipeline.vae.dtype == torch.float32
