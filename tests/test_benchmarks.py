"""benchmarks/realscale.py --smoke: the real-scale script's whole code path (published
configs counted on the meta device; rollout against the stock pipelines; a Flow-GRPO
and a DiffusionNFT iteration per product adapter; LoRA and full fine-tuning under
FSDP2) at tiny size on the CPU, so that the GPU script cannot rot between GPU runs."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parents[1]


@pytest.mark.slow(seconds=40)
def test_realscale_smoke_runs_every_model_and_its_checks_hold(tmp_path):
    out = tmp_path / "realscale.json"
    proc = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks/realscale.py"), "--smoke", "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    assert "every check holds" in proc.stdout and "| SD3.5-medium |" in proc.stdout
    rows = {r["model"]: r for r in json.loads(out.read_text())["rows"]}
    models = {"sd35_medium", "flux1_dev", "wan21_1_3b", "f5_v1_base"}
    assert set(rows) == models | {"sd35_medium_fsdp2"}
    # the published configs, counted: within 10% of the model cards' figures
    sizes = {k: round(rows[k]["checkpoint_params_b"], 2) for k in rows if "fsdp2" not in k}
    assert sizes == {"sd35_medium": 2.47, "flux1_dev": 11.9, "wan21_1_3b": 1.42, "f5_v1_base": 0.34}
    for name in models:
        r = rows[name]
        assert r["throughput"]["samples_max_abs_diff"] < 1e-4  # the stock pipeline's samples
        grpo, nft = r["flow_grpo"], r["diffusion_nft"]
        assert grpo["first_ratio_min"] == grpo["first_ratio_max"] == 1.0
        assert nft["algorithm"] == "diffusion_nft" and nft["first_kl_ref_max"] == 0.0
        assert grpo["rollout_s"] > 0 and grpo["train_s"] > 0 and grpo["finite"]
    fsdp = rows["sd35_medium_fsdp2"]  # sharded on the CPU through benchmarks/_fsdp_cpu.py
    assert fsdp["lora"]["finetune"] == "lora" and fsdp["full"]["finetune"] == "full"
    for job in ("lora", "full"):
        assert fsdp[job]["fsdp2"] and fsdp[job]["sharded_parameters"] > 0
        assert fsdp[job]["first_kl_ref_max"] == 0.0  # LoRA off / the frozen copy
