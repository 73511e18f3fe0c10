"""SD3 and FLUX adapters on real diffusers pipelines at tiny size, saved to disk and
loaded back through the adapters' loading path."""

import pytest
import torch

from alignflow.adapters.image.flux import load_flux_policy
from alignflow.adapters.image.sd3 import load_sd3_policy
from alignflow.adapters.image.tiny import tiny_flux_pipeline, tiny_sd3_pipeline
from alignflow.sdk.kernels import KERNELS
from alignflow.sdk.random import generator
from alignflow.sdk.trainer import Trainer
from tests.adapters import image_rewards_for_tests  # noqa: F401  (declares the Redness reward)
from tests.helpers import ode_rollout, tiny_image_cfg

PROMPTS = ["a red cat", 'a sign that says "hello"']
LOADERS = {
    "sd3": (tiny_sd3_pipeline, load_sd3_policy),
    "flux": (tiny_flux_pipeline, load_flux_policy),
}


@pytest.fixture(scope="module", params=["sd3", "flux"])
def saved(request, tmp_path_factory):
    make, _ = LOADERS[request.param]
    folder = tmp_path_factory.mktemp(request.param)
    make(seed=0).save_pretrained(folder)
    return request.param, folder


def load(kind, folder):
    return LOADERS[kind][1](str(folder), resolution=32, dtype="float32", attention="sdpa")


def test_noise_level_zero_rollout_is_the_pipelines_own_sampler(saved):
    kind, folder = saved
    policy = load(kind, folder)
    N, w = 5, (4.5 if kind == "sd3" else 3.5)
    traj, noise = ode_rollout(policy, policy.encode(PROMPTS), N, w)
    common = dict(num_inference_steps=N, guidance_scale=w, height=32, width=32, latents=noise)
    ref_latents = policy.pipeline(PROMPTS, output_type="latent", **common).images
    torch.testing.assert_close(traj.x0, ref_latents, rtol=1e-5, atol=1e-5)
    ref_images = policy.pipeline(PROMPTS, output_type="pt", **common).images
    torch.testing.assert_close(policy.decode(traj.x0), ref_images, rtol=1e-4, atol=1e-4)


def test_prompt_embeddings_are_the_pipelines(saved):
    kind, folder = saved
    policy = load(kind, folder)
    cond = policy.encode(PROMPTS)
    if kind == "sd3":
        embeds, neg, pooled, neg_pooled = policy.pipeline.encode_prompt(
            PROMPTS, None, None, do_classifier_free_guidance=True
        )
        torch.testing.assert_close(cond.null_embeds, neg)
    else:
        embeds, pooled, _ = policy.pipeline.encode_prompt(PROMPTS, None)
    torch.testing.assert_close(cond.embeds, embeds)
    torch.testing.assert_close(cond.pooled, pooled)


def test_decode_of_to_latents_is_close_to_the_image(saved):
    kind, folder = saved
    policy = load(kind, folder)
    x = policy.noise(2, [generator("z", 0), generator("z", 1)])
    assert x.shape[0] == 2 and policy.to_latents(policy.decode(x)).shape == x.shape


def test_a_grpo_iteration_runs_and_lora_reloads_to_the_same_log_probs(saved, tmp_path):
    kind, folder = saved
    prompts = tmp_path / "prompts.txt"
    prompts.write_text("\n".join(PROMPTS) + "\n")
    tr = Trainer(
        tiny_image_cfg(
            tmp_path / "run", kind, folder, prompts, "train.optimizer_steps=1", "train.lr=1e-2"
        )
    )
    encoded = []
    real_encode = tr.policy.encode
    tr.policy.encode = lambda p, m=None: encoded.append(len(p)) or real_encode(p, m)
    m = tr.train_iteration(0)
    assert encoded == [2]  # once per prompt, reused by the group's 2 samples
    assert m["train/ratio_min"] == m["train/ratio_max"] == 1.0 and m["train/kl_ref"] == 0.0
    tr.iteration = 1
    tr.save()

    # Log-probs of one fixed transition (x -> x_next drawn once), under the trained LoRA,
    # after reloading it from the checkpoint, and under the base.
    x_next = None

    def log_prob(trainer):
        nonlocal x_next
        pol = trainer.policy
        cond, sig = pol.encode(PROMPTS), pol.sigmas(4)
        x = pol.noise(2, [generator("lp", 0), generator("lp", 1)])
        with torch.no_grad():
            v = pol.velocity(x, sig[1].expand(2), cond, 1.0)
            out = KERNELS["flow_sde"](
                x,
                v,
                sig,
                1,
                noise_level=0.7,
                x_next=x_next,
                generator=[generator("e", 0), generator("e", 1)],
            )
        x_next = out.x_next
        return out.log_prob

    trained = log_prob(tr)
    reloaded = log_prob(
        Trainer(
            tiny_image_cfg(
                tmp_path / "run",
                kind,
                folder,
                prompts,
                "train.optimizer_steps=1",
                "train.lr=1e-2",
                "checkpoint.resume=latest",
            )
        )
    )
    assert torch.equal(trained, reloaded)
    base = log_prob(Trainer(tiny_image_cfg(tmp_path / "other", kind, folder, prompts)))
    assert (trained - base).abs().max() > 1e-6  # the LoRA did change the policy


@pytest.mark.parametrize("kind", ["sd3", "flux"])
def test_bad_adapter_arguments(tmp_path, kind):
    from alignflow.sdk.errors import ConfigError

    loader = LOADERS[kind][1]
    with pytest.raises(ConfigError, match="policy.path = .*model_index.json"):
        loader(str(tmp_path))
    with pytest.raises(ConfigError, match="policy.dtype = 'fp8'"):
        loader(str(tmp_path), dtype="fp8")
    # a hub id that cannot be reached (HF_HUB_OFFLINE here, and nothing cached): one line,
    # no weights tried
    with pytest.raises(
        ConfigError, match="policy.path = 'no-such-org/no-such-model': .*reachable"
    ) as e:
        loader("no-such-org/no-such-model")
    assert "\n" not in str(e.value)


def test_bad_resolution_and_attention(saved, monkeypatch):
    import alignflow.adapters.common as common
    from alignflow.sdk.errors import ConfigError

    kind, folder = saved
    with monkeypatch.context() as m:  # refused from the configs, before any weights load
        m.setattr(common, "load_pipeline", None)
        with pytest.raises(
            ConfigError, match="policy.resolution = 30: expected a positive multiple of"
        ):
            LOADERS[kind][1](str(folder), resolution=30, dtype="float32")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="policy.attention = 'xformers'"):
            LOADERS[kind][1](str(folder), resolution=32, dtype="float32", attention="xformers")


def test_lora_on_a_bf16_model_trains_float32_adapters(saved):
    from alignflow.sdk.finetune import LoRA

    kind, folder = saved
    policy = LOADERS[kind][1](str(folder), resolution=32, dtype="bfloat16", attention="sdpa")
    lora = LoRA(policy, rank=4, alpha=8)
    assert {p.dtype for p in lora.parameters()} == {torch.float32}
    assert next(policy.transformer.parameters()).dtype == torch.bfloat16
    cond = policy.encode(PROMPTS)
    x = policy.noise(2, [generator("b", 0), generator("b", 1)])
    v = policy.velocity(x, torch.full((2,), 0.5), cond, 2.0)
    v.float().pow(2).mean().backward()
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in lora.parameters())


def test_memory_controls_give_the_same_loss_gradients_and_images(saved):
    """gradient_checkpointing recomputes each block in the backward pass with the same
    loss and weight gradients; offloaded text encoders give the same embeddings and do
    not move with the policy; VAE tiling and slicing decode the same images."""
    from tests.helpers import checkpointing_matches

    kind, folder = saved
    plain = load(kind, folder)
    saving = LOADERS[kind][1](
        str(folder),
        resolution=32,
        dtype="float32",
        attention="sdpa",
        gradient_checkpointing=True,
        vae_tiling=True,
        vae_slicing=True,
        offload_text_encoders=True,
    )
    assert saving.transformer.gradient_checkpointing
    assert set(saving.other_modules) == {"vae"} and "text_encoder" in plain.other_modules
    conds = [p.encode(PROMPTS) for p in (plain, saving)]
    for a, b in zip(vars(conds[0]).values(), vars(conds[1]).values()):
        torch.testing.assert_close(a, b)
    x = plain.noise(2, [generator("m", 0), generator("m", 1)])
    sig = torch.tensor([0.7, 0.7])
    blocks = saving.transformer.transformer_blocks
    assert checkpointing_matches(plain, saving, blocks, x, sig, conds, 3.0) == 2
    torch.testing.assert_close(plain.decode(x), saving.decode(x))


def test_prompts_encoded_once_are_the_same_and_the_text_encoders_are_freed(saved):
    from alignflow.sdk.errors import ConfigError

    kind, folder = saved
    plain = load(kind, folder)
    plain.prepare_prompts(PROMPTS)  # the option is off: nothing changes
    assert plain.pipeline.text_encoder is not None and "text_encoder" in plain.other_modules
    once = LOADERS[kind][1](
        str(folder), resolution=32, dtype="float32", attention="sdpa", encode_prompts_once=True
    )
    once.prepare_prompts([*PROMPTS, PROMPTS[0]])
    assert once.pipeline.text_encoder is None and once.pipeline.text_encoder_2 is None
    assert set(once.other_modules) == {"vae"}
    for a, b in zip(vars(plain.encode(PROMPTS)).values(), vars(once.encode(PROMPTS)).values()):
        torch.testing.assert_close(a, b)  # encoded in another batch: float rounding only
    with pytest.raises(ConfigError, match="policy.encode_prompts_once.*'a blue dog' was not"):
        once.encode(["a blue dog"])


def test_a_pipeline_built_in_memory_loads_as_its_folder_does(saved):
    """load_*_policy(pipeline object): a pipeline the caller built (random weights at
    real size, a quantised one) goes through the same adapter, cast to ``dtype``."""
    from alignflow.sdk.errors import ConfigError

    kind, folder = saved
    make, loader = LOADERS[kind]
    policies = [load(kind, folder), loader(make(seed=0), resolution=32, dtype="float32")]
    x = policies[0].noise(2, [generator("o", 0), generator("o", 1)])
    v = [p.velocity(x, torch.tensor([0.6, 0.6]), p.encode(PROMPTS), 2.0) for p in policies]
    torch.testing.assert_close(v[0], v[1])
    assert policies[1].pipeline.vae.dtype == torch.float32
    other = tiny_flux_pipeline() if kind == "sd3" else tiny_sd3_pipeline()
    with pytest.raises(ConfigError, match="policy.path = '(Flux|StableDiffusion3)Pipeline'"):
        loader(other, resolution=32)
