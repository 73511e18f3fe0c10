"""realscale.py's report: the table it prints (and docs/benchmarks.md keeps) and the
checks whose failure makes it exit 1."""

from __future__ import annotations

from typing import Any


def fmt(v: Any, spec: str = ".2f") -> str:
    if v is None or (isinstance(v, float) and v != v):
        return "-"
    return format(v, spec) if isinstance(v, (int, float)) else str(v)


def table(rows: list[dict[str, Any]]) -> str:
    """The printed (and docs/benchmarks.md) table: one line per model and run."""
    head = (
        "| model | params (card) | rollout / stock | job | rollout s | reward s | train s "
        "| peak GiB | first ratio | KL ref | log-prob mismatch |"
    )
    lines = [head, "| " + " | ".join(["---"] * (head.count("|") - 1)) + " |"]
    for r in rows:
        if "error" in r and "title" not in r:
            lines.append(f"| {r['model']} | {r['error']} |" + " |" * 9)
            continue
        params = (
            f"{fmt(r.get('checkpoint_params_b'))}B ({fmt(r.get('card_params_b'), 'g')}B)"
            if "checkpoint_params_b" in r
            else ""
        )
        t = r.get("throughput", {})
        speed = (
            f"{fmt(t.get('ratio'))} ({fmt(t.get('adapter_s'))} / {fmt(t.get('stock_s'))} s, "
            f"max diff {fmt(t.get('samples_max_abs_diff'), '.0e')})"
            if "ratio" in t
            else t.get("error", "")
        )
        jobs = [(k, r[k]) for k in ("flow_grpo", "diffusion_nft", "lora", "full") if k in r]
        for i, (job, j) in enumerate(jobs):
            first = i == 0
            name = r["title"] if first else ""
            if "error" in j:
                lines.append(
                    f"| {name} | {params if first else ''} | {speed if first else ''} | {job} "
                    f"| {j['error'][:120]} |" + " |" * 6
                )
                continue
            label = f"{j['algorithm']}, {j['finetune']}" + (" (FSDP2)" if j.get("fsdp2") else "")
            ratio = (
                f"{fmt(j.get('first_ratio_min'), '.6f')}..{fmt(j.get('first_ratio_max'), '.6f')}"
            )
            lines.append(
                f"| {name} | {params if first else ''} | {speed if first else ''} | {label} "
                f"| {fmt(j['rollout_s'])} | {fmt(j['reward_s'])} | {fmt(j['train_s'])} "
                f"| {fmt(j['peak_gib'], '.1f')} | {ratio if 'first_ratio_min' in j else '-'} "
                f"| {fmt(j.get('first_kl_ref_max'), '.1e')} "
                f"| {fmt(j.get('first_logprob_mismatch_max'), '.1e')} |"
            )
    return "\n".join(lines)


def checks(row: dict[str, Any], smoke: bool) -> list[str]:
    """What must hold, as lines naming the model and what failed."""
    name, bad = row["model"], []
    if "error" in row:
        return [f"{name}: {row['error']}"]
    if "card_deviation" in row and abs(row["card_deviation"]) > 0.1:
        bad.append(f"{name}: {row['checkpoint_params_b']:.3f}B is not the card's {row['card']}")
    for job, j in row.items():
        if not isinstance(j, dict):
            continue
        if "error" in j:
            bad.append(f"{name} {job}: {j['error'][:200]}")
            continue
        if "first_ratio_min" in j and not j["first_ratio_min"] == j["first_ratio_max"] == 1.0:
            bad.append(f"{name} {job}: first ratio {j['first_ratio_min']}..{j['first_ratio_max']}")
        if j.get("first_kl_ref_max", 0.0) != 0.0:
            bad.append(f"{name} {job}: KL to the reference {j['first_kl_ref_max']} at the start")
        if j.get("finite") is False:
            bad.append(f"{name} {job}: non-finite loss statistics")
        if name.endswith("fsdp2") and not (j["fsdp2"] and j["sharded_parameters"]):
            bad.append(f"{name} {job}: FSDP2 did not shard ({j['distributed']})")
    return bad
