"""Reference-conditioned image policies: FLUX.1 Kontext on a real diffusers
``FluxKontextPipeline`` at tiny size, saved to disk and loaded back; the source image
comes from each prompt's metadata, is encoded once per prompt and reused by its group."""

import json

import numpy as np
import pytest
import torch
from PIL import Image

from alignflow.adapters.image.flux import load_flux_kontext_policy
from alignflow.adapters.image.tiny import tiny_flux_pipeline
from alignflow.sdk.config import compose
from alignflow.sdk.errors import ConfigError, DataError
from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.plans import AllSDE
from alignflow.sdk.random import generator
from alignflow.sdk.rollout import rollout
from alignflow.sdk.trainer import Trainer
from tests.adapters import image_rewards_for_tests  # noqa: F401  (declares the Redness reward)
from tests.helpers import TINY_IMAGE_RUN, ode_rollout

PROMPTS = ["make the sky red", 'write "hello" on the wall']


@pytest.fixture(scope="module")
def kontext(tmp_path_factory):
    """A saved tiny FluxKontextPipeline and two 32 x 32 source images."""
    root = tmp_path_factory.mktemp("kontext")
    tiny_flux_pipeline(seed=0, kontext=True).save_pretrained(root / "pipe")
    rng = np.random.default_rng(0)
    for i in range(2):
        pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(root / f"src{i}.png")
    return root


def load(root, **kw):
    return load_flux_kontext_policy(
        str(root / "pipe"),
        resolution=32,
        dtype="float32",
        attention="sdpa",
        source_root=str(root),
        **kw,
    )


META = [{"source": "src0.png"}, {"source": "src1.png"}]


def stock_edit(policy, noise, steps, guidance):
    """FluxKontextPipeline's arguments for the edits of META's sources from ``noise``:
    at the policy's fixed size (``max_area``: the pipeline rescales the output to it)."""
    return dict(
        image=torch.stack([policy.sources(m) for m in META]),
        num_inference_steps=steps,
        guidance_scale=guidance,
        height=32,
        width=32,
        latents=noise,
        _auto_resize=False,
        max_area=32 * 32,
    )


def group_rollout(policy, guidance):
    """Flow-GRPO's SDE rollout of both edit prompts, 2 samples each."""
    gens = [generator("g", i) for i in range(4)]
    return rollout(
        policy,
        policy.encode(PROMPTS, META),
        policy.sigmas(3),
        AllSDE()(3, 0, 0),
        KERNELS["flow_sde"],
        noise_level=0.7,
        guidance=guidance,
        group_size=2,
        noise_generators=gens,
        sde_generators=gens,
    )


def test_noise_level_zero_rollout_is_the_kontext_pipelines_edit(kontext):
    """The source's packed latents follow the image tokens with ids (1, row, col), and
    only the image tokens' velocity is kept: FluxKontextPipeline's own edit, bit for bit
    in latents, for the same source, noise, steps and guidance."""
    policy = load(kontext)
    N, w = 4, 2.5
    cond = policy.encode(PROMPTS, META)
    assert cond.reference.shape == (2, 64, 16)  # 8 x 8 tokens of 2 x 2 x 4 channels
    traj, noise = ode_rollout(policy, cond, N, w)
    common = stock_edit(policy, noise, N, w)
    ref = policy.pipeline(prompt=PROMPTS, output_type="latent", **common).images
    torch.testing.assert_close(traj.x0, ref, rtol=1e-5, atol=1e-5)
    images = policy.pipeline(prompt=PROMPTS, output_type="pt", **common).images
    torch.testing.assert_close(policy.decode(traj.x0), images, rtol=1e-4, atol=1e-4)


def test_the_source_changes_the_velocity_and_a_group_shares_it(kontext):
    policy = load(kontext)
    cond = policy.encode([PROMPTS[0]] * 2, [META[0], META[1]])
    x = policy.noise(1, [generator("x", 0)]).expand(2, -1, -1)
    v = policy.velocity(x, torch.tensor([0.5, 0.5]), cond, 2.5)
    assert (v[0] - v[1]).abs().max() > 1e-4  # the same prompt and x, other sources
    traj = group_rollout(policy, 2.5)
    assert traj.x0.shape[0] == 4 and torch.isfinite(traj.log_prob).all()


def test_bad_sources_are_one_line_data_errors(kontext):
    policy = load(kontext)
    with pytest.raises(DataError, match="one metadata row with its 'source' per prompt"):
        policy.encode(PROMPTS)
    with pytest.raises(DataError, match=r"missing or empty column\(s\) \['source'\]"):
        policy.encode(PROMPTS[:1], [{"other": 1}])
    with pytest.raises(DataError, match="source='nope.png': no file"):
        policy.encode(PROMPTS[:1], [{"source": "nope.png"}])


def editing_run(tmp, policy: str, folder, sources, guidance: float) -> list[str]:
    """Overrides of one LoRA iteration of the editing ``policy`` config on a tiny saved
    pipeline, over PROMPTS with META's sources, with a large step (so that the LoRA
    moves the edits)."""
    rows = "".join(json.dumps({"prompt": p, **m}) + "\n" for p, m in zip(PROMPTS, META))
    (tmp / "edits.jsonl").write_text(rows)
    return [
        f"+policy={policy}",
        f"policy.path={folder}",
        f"policy.source_root={sources}",
        "policy.resolution=32",
        "policy.dtype=float32",
        "policy.attention=sdpa",
        "policy.gradient_checkpointing=false",
        f"data.train={tmp / 'edits.jsonl'}",
        *TINY_IMAGE_RUN,
        f"sample.guidance={guidance}",
        "train.lr=3e-2",
        f"output_dir={tmp / 'run'}",
    ]


@pytest.fixture(scope="module")
def trained(kontext, tmp_path_factory):
    """One Flow-GRPO iteration of LoRA on the tiny Kontext through the trainer (a large
    step, so that the LoRA moves the edits), and its first metrics."""
    tmp = tmp_path_factory.mktemp("kontext_run")
    cfg = editing_run(tmp, "flux1_kontext_dev", kontext / "pipe", kontext, 2.5)
    cfg = compose("train", cfg + ["policy.offload_text_encoders=false"])
    tr = Trainer(cfg)
    metrics = tr.train_iteration(0)
    tr.iteration = 1
    tr.save()
    tr.close()
    return tmp / "run", metrics


def test_an_editing_grpo_iteration_trains_lora_on_kontext(trained):
    """The trainer, rollouts and Flow-GRPO unchanged: the condition carries the source."""
    _, m = trained
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0 and m["train/kl_ref"] == 0.0
    assert m["train/grad_norm"] > 0


def test_the_stock_kontext_pipeline_with_the_exported_lora_edits_as_alignflow(
    kontext, trained, tmp_path
):
    from diffusers import FluxKontextPipeline

    from alignflow.sdk.api import load_policy
    from alignflow.sdk.export import export

    run, _ = trained
    policy = load_policy(run, device="cpu").policy
    traj, noise = ode_rollout(policy, policy.encode(PROMPTS, META), 4, 2.5)
    expected = policy.decode(traj.x0)
    common = stock_edit(policy, noise, 4, 2.5) | {"output_type": "pt"}
    lora = export(run, tmp_path / "lora", "diffusers-lora")
    pipe = FluxKontextPipeline.from_pretrained(kontext / "pipe")
    assert (pipe(prompt=PROMPTS, **common).images - expected).abs().max() > 1e-3
    pipe.load_lora_weights(lora)
    torch.testing.assert_close(pipe(prompt=PROMPTS, **common).images, expected, atol=1e-5, rtol=0)
    card = (lora / "README.md").read_text()
    assert "pipeline_tag: image-to-image" in card and "FluxKontextPipeline" in card


def test_an_sd3_editing_model_takes_the_source_as_input_channels(kontext):
    """SD3's MMDiT trained with the source's latents as extra channels (the pixel toys'
    editing policy): the source enters every forward, both CFG branches, and a group."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel

    from alignflow.adapters.image.sd3 import CLIPPromptEncoder, SD3Policy
    from alignflow.adapters.image.tiny import _clip_text
    from alignflow.adapters.tokenizers import clip_tokenizer
    from alignflow.modalities.image.codec import PixelCodec
    from alignflow.modalities.image.io import read_image
    from alignflow.modalities.sources import SourceMedia

    torch.manual_seed(0)
    transformer = SD3Transformer2DModel(
        sample_size=8,
        patch_size=2,
        in_channels=2,  # the noisy image and the source
        out_channels=1,
        num_layers=1,
        attention_head_dim=8,
        num_attention_heads=2,
        joint_attention_dim=8,
        caption_projection_dim=16,
        pooled_projection_dim=8,
        pos_embed_max_size=8,
    )
    tok = clip_tokenizer()
    read = lambda path: read_image(path, (8, 8), mode="L")  # noqa: E731
    policy = SD3Policy(
        transformer,
        CLIPPromptEncoder(tok, _clip_text(len(tok), 8, True, 1), 16),
        PixelCodec(),
        FlowMatchEulerDiscreteScheduler(shift=1.0),
        latent_shape=(1, 8, 8),
        sources=SourceMedia("source", read, str(kontext)),
    )
    cond = policy.encode([PROMPTS[0]] * 2, META)
    assert cond.reference.shape == (2, 1, 8, 8)
    x = policy.noise(1, [generator("x", 0)]).expand(2, -1, -1, -1)
    for w in (1.0, 3.0):
        v = policy.velocity(x, torch.tensor([0.5, 0.5]), cond, w)
        assert v.shape == x.shape and (v[0] - v[1]).abs().max() > 1e-4
    traj = group_rollout(policy, 3.0)
    assert traj.x0.shape == (4, 1, 8, 8) and torch.isfinite(traj.log_prob).all()
    with pytest.raises(DataError, match="one metadata row with its 'source' per prompt"):
        policy.encode(PROMPTS)


def test_a_source_given_inline_is_the_same_as_its_file(kontext):
    """A row may carry the source itself (an array in [0, 1], or a PIL image from a
    ``datasets`` image column) instead of a path."""
    policy = load(kontext)
    with Image.open(kontext / "src0.png") as im:
        pil = im.copy()
    array = (np.asarray(pil, np.float32) / 255).transpose(2, 0, 1).tolist()
    by_path = policy.encode(PROMPTS[:1], [{"source": "src0.png"}]).reference
    for inline in (pil, array):
        torch.testing.assert_close(
            policy.encode(PROMPTS[:1], [{"source": inline}]).reference, by_path
        )
    with pytest.raises(DataError, match=r"source source: list is neither a path.*\[C, H, W\]"):
        policy.encode(PROMPTS[:1], [{"source": [[[[0.5]]]]}])


# ---------------------------------------------------------------- Qwen-Image-Edit


@pytest.fixture(scope="module")
def qwen(kontext, tmp_path_factory):
    """A saved tiny QwenImageEditPipeline (Qwen2.5-VL reads the instruction with the
    source), next to the Kontext fixture's sources."""
    from alignflow.adapters.image.tiny import tiny_qwen_edit_pipeline

    folder = tmp_path_factory.mktemp("qwen") / "pipe"
    tiny_qwen_edit_pipeline(seed=0).save_pretrained(folder)
    return folder


def load_qwen(folder, root, **kw):
    from alignflow.adapters.image.qwen import load_qwen_edit_policy

    return load_qwen_edit_policy(
        str(folder), resolution=32, source_root=str(root), dtype="float32", attention="sdpa", **kw
    )


def stock_qwen_edit(root, noise, steps, guidance, monkeypatch):
    """QwenImageEditPipeline's arguments for the edits of META's sources from ``noise``.
    The pipeline resizes every source to about 1024 x 1024 whatever the output size
    (alignflow reads it at the policy's resolution, the same at the card's 1024): here
    that area is the test's 32 x 32."""
    import diffusers.pipelines.qwenimage.pipeline_qwenimage_edit as stock

    dims = stock.calculate_dimensions
    monkeypatch.setattr(stock, "calculate_dimensions", lambda area, ratio: dims(32 * 32, ratio))
    images = []
    for m in META:
        with Image.open(root / m["source"]) as im:
            images.append(im.copy())
    negative = {"negative_prompt": [" "] * len(META)} if guidance != 1 else {}
    return dict(
        image=images,
        num_inference_steps=steps,
        true_cfg_scale=guidance,
        height=32,
        width=32,
        latents=noise,
        **negative,
    )


@pytest.mark.parametrize("guidance", [1.0, 4.0])
def test_noise_level_zero_rollout_is_qwen_image_edits_own_edit(
    kontext, qwen, guidance, monkeypatch
):
    """Qwen2.5-VL reads each instruction with its source; the source's packed latents
    follow the image tokens; true CFG keeps the conditional branch's norm: the stock
    QwenImageEditPipeline's edit for the same sources, noise, steps and scale."""
    policy = load_qwen(qwen, kontext)
    cond = policy.encode(PROMPTS, META)
    assert cond.reference.shape == (2, 64, 16) and cond.null_embeds is not None
    assert cond.mask.sum(1).tolist()[0] != cond.mask.sum(1).tolist()[1]  # padded to the longest
    traj, noise = ode_rollout(policy, cond, 4, guidance)
    common = stock_qwen_edit(kontext, noise, 4, guidance, monkeypatch)
    ref = policy.pipeline(prompt=PROMPTS, output_type="latent", **common).images
    torch.testing.assert_close(traj.x0, ref, rtol=1e-5, atol=1e-5)
    images = policy.pipeline(prompt=PROMPTS, output_type="pt", **common).images
    torch.testing.assert_close(policy.decode(traj.x0), images, rtol=1e-4, atol=1e-4)


def test_qwen_edit_conditions_of_other_lengths_join_and_keep_their_velocity(kontext, qwen):
    """Prompts read into sequences of other lengths (each batch padded to its longest)
    join across batches, as the trainer joins its rollout batches, with the mask: a
    sample's velocity does not depend on the batch it was encoded in."""
    from alignflow.sdk.batching import concat

    policy = load_qwen(qwen, kontext)
    short, long = policy.encode(PROMPTS[:1], META[:1]), policy.encode(PROMPTS[1:], META[1:])
    assert short.embeds.shape[1] < long.embeds.shape[1]
    joined = concat([short, long])
    x = policy.noise(2, [generator("x", i) for i in range(2)])
    sigma = torch.tensor([0.6, 0.6])
    v = policy.velocity(x, sigma, joined, 4.0)
    alone = policy.velocity(x[:1], sigma[:1], short, 4.0)
    torch.testing.assert_close(v[:1], alone, rtol=1e-5, atol=1e-5)
    plain = load_qwen(qwen, kontext, negative_prompt=None)  # no negative branch
    with pytest.raises(ConfigError, match="sample.guidance"):
        plain.velocity(x[:1], sigma[:1], plain.encode(PROMPTS[:1], META[:1]), 4.0)


def test_qwen_edit_trains_lora_and_the_stock_pipeline_loads_the_export(
    kontext, qwen, tmp_path, monkeypatch
):
    """One Flow-GRPO iteration of LoRA through the trainer with +policy=qwen_image_edit;
    the exported LoRA in the stock QwenImageEditPipeline edits as alignflow does."""
    from diffusers import QwenImageEditPipeline

    from alignflow.sdk.api import load_policy
    from alignflow.sdk.export import export

    cfg = editing_run(tmp_path, "qwen_image_edit", qwen, kontext, 4.0)
    # the rows read once at the start (the trainer passes each prompt's metadata)
    once = ["policy.offload_text_encoder=false", "policy.encode_prompts_once=true"]
    tr = Trainer(compose("train", cfg + once))
    assert tr.policy.read_once is not None and tr.policy.pipeline.text_encoder is None
    m = tr.train_iteration(0)
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0 and m["train/grad_norm"] > 0
    tr.iteration = 1
    tr.save()
    tr.close()

    policy = load_policy(tmp_path / "run", device="cpu").policy
    traj, noise = ode_rollout(policy, policy.encode(PROMPTS, META), 4, 4.0)
    expected = policy.decode(traj.x0)
    common = stock_qwen_edit(kontext, noise, 4, 4.0, monkeypatch) | {"output_type": "pt"}
    lora = export(tmp_path / "run", tmp_path / "lora", "diffusers-lora")
    pipe = QwenImageEditPipeline.from_pretrained(qwen)
    assert (pipe(prompt=PROMPTS, **common).images - expected).abs().max() > 1e-3
    pipe.load_lora_weights(lora)
    torch.testing.assert_close(pipe(prompt=PROMPTS, **common).images, expected, atol=1e-5, rtol=0)
    card = (lora / "README.md").read_text()
    assert "pipeline_tag: image-to-image" in card and "QwenImageEditPipeline" in card


def test_qwen_edit_rows_read_once_are_the_same_and_qwen_vl_is_freed(kontext, qwen):
    """With encode_prompts_once each (prompt, source) row is read at the start, by its
    source's pixels (a path and the same image inline agree); Qwen2.5-VL is freed, and
    a row that was not read is a config error."""
    plain, once = load_qwen(qwen, kontext), load_qwen(qwen, kontext, encode_prompts_once=True)
    once.prepare_prompts([*PROMPTS, PROMPTS[0]], [*META, META[0]])
    assert once.pipeline.text_encoder is None and set(once.other_modules) == {"vae"}
    with Image.open(kontext / "src1.png") as im:
        inline = [META[0], {"source": im.copy()}]  # the second as a PIL image
    live, cached = plain.encode(PROMPTS, META), once.encode(PROMPTS, inline)
    for name in ("embeds", "mask", "null_embeds", "null_mask", "reference"):
        torch.testing.assert_close(getattr(cached, name), getattr(live, name))
    with pytest.raises(ConfigError, match="policy.encode_prompts_once.*was not read"):
        once.encode([PROMPTS[0]], [META[1]])  # a prompt with another row's source
