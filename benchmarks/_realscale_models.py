"""What benchmarks/realscale.py measures: the product models, each with its published
size, the product experiment it trains with, the overrides that fit one rollout batch
into its time budget, and the tiny-size overrides of ``--smoke``; the prompts."""

from __future__ import annotations

from dataclasses import dataclass, field

PROMPTS = [
    "a red fox running through fresh snow, cinematic light",
    "a bowl of ramen on a wooden table, studio photo",
    'a neon sign that says "open late" above a door',
    "an astronaut riding a horse on the moon",
]
# F5: 9.3 s clips (the 0.8 s reference and 8.5 s of new speech), the 10 s setting
SPEECH = (
    "the morning train was late again, so we walked along the river, talked about the "
    "books we had read this winter and stopped for coffee near the old stone bridge"
)


# ---------------------------------------------------------------------- the models


@dataclass(frozen=True)
class Model:
    name: str
    title: str
    card: float  # the denoiser's parameters as its model card states them, billions
    card_source: str
    experiment: tuple[str, ...]  # the product config the iterations use
    bench: tuple[str, ...]  # one rollout batch per iteration, few trained steps
    nft: tuple[str, ...]  # DiffusionNFT's overrides
    steps: int  # rollout comparison: steps, guidance, batch
    guidance: float
    batch: int
    timeout: int  # seconds for everything of this model on an H200
    repeats: int = 3  # timed rollouts of each kind
    smoke: tuple[str, ...] = ()  # overrides for the tiny pipelines on the CPU
    remove_rewards: tuple[str, ...] = field(default=())


SMALL_GROUP = ("sample.group_size=4", "sample.batch_size=4", "train.micro_batch_size=4")
SD35 = Model(
    "sd35_medium",
    "SD3.5-medium",
    2.5,
    "stabilityai/stable-diffusion-3.5-medium: MMDiT-X, 2.5B",
    ("experiment=sd35_pickscore",),
    # paper: group 24, rollout batch 24, micro-batch 24, 10 steps; 2 of 10 trained
    ("sample.prompts_per_iteration=1", "algorithm.train_fraction=0.2"),
    ("algorithm.timestep_fraction=0.2", "algorithm.kl_beta=0.0001"),
    steps=10,
    guidance=4.5,
    batch=8,
    timeout=100,
    smoke=("policy.resolution=32", *SMALL_GROUP),
    remove_rewards=("pickscore",),
)
FLUX = Model(
    "flux1_dev",
    "FLUX.1-dev",
    12.0,
    "black-forest-labs/FLUX.1-dev: 12B rectified flow transformer",
    ("experiment=flux1_dev_pickscore",),
    # paper: group 24, 6 steps; one batch of 8 (micro-batch 8) for the time budget
    (
        "sample.prompts_per_iteration=1",
        "sample.group_size=8",
        "sample.batch_size=8",
        "train.micro_batch_size=8",
        "algorithm.train_fraction=0.34",
    ),
    ("algorithm.timestep_fraction=0.34", "algorithm.kl_beta=0.0001"),
    steps=6,
    guidance=3.5,
    batch=4,
    timeout=110,
    smoke=("policy.resolution=32", *SMALL_GROUP),
    remove_rewards=("pickscore",),
)
WAN = Model(
    "wan21_1_3b",
    "Wan2.1-T2V-1.3B",
    1.3,
    "Wan-AI/Wan2.1-T2V-1.3B: 1.3B (dim 1536, FFN 8960, 12 heads, 30 layers)",
    ("experiment=wan21_t2v_1_3b",),
    # the product config: 480p, 33 frames, batch 2, micro-batch 1; 4 samples, 10 steps
    (
        "sample.prompts_per_iteration=1",
        "sample.group_size=2",
        "sample.num_steps=10",
        "algorithm.window=1",
    ),
    ("algorithm.timestep_fraction=0.1", "algorithm.kl_beta=0.0001"),
    steps=10,
    guidance=5.0,
    batch=1,
    timeout=120,
    repeats=1,  # a 480p clip's VAE decode alone is seconds
    smoke=("policy.height=32", "policy.width=32", "policy.num_frames=5"),
    remove_rewards=("flow", "clip"),
)
F5 = Model(
    "f5_v1_base",
    "F5-TTS v1 Base",
    0.336,
    "SWivid/F5-TTS F5TTS_v1_Base: 336M (22 layers, width 1024)",
    ("experiment=speech_tiny", "policy=f5_tts_v1_base", "algorithm=flow_grpo"),
    (
        "sample.prompts_per_iteration=1",
        "sample.group_size=16",
        "sample.batch_size=16",
        "sample.num_steps=16",
        "train.micro_batch_size=16",
        "algorithm.train_fraction=0.125",
    ),
    ("algorithm.timestep_fraction=0.125",),
    steps=16,
    guidance=2.0,
    batch=8,
    timeout=60,
    smoke=SMALL_GROUP,
    remove_rewards=("asr", "speaker"),
)
MODELS = {m.name: m for m in (SD35, FLUX, WAN, F5)}
