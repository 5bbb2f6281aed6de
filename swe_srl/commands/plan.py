"""`swe-srl plan`: will a training config fit on N GPUs? Per-GPU memory of weights, gradients,
AdamW states, activations and logits under ddp / fsdp, with and without activation
checkpointing and optimizer offload, from the model's config.json alone (no weights)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

import typer

from ..config import TrainConfig
from ..config_loader import apply_overrides, from_mapping, load_config, read_yaml
from ..model_shape import ModelShape, resolve_shape, tiny_model_config
from ..paths import DEFAULT_MODEL_DIR
from ..plan import GiB, Plan, PlanConfig, largest_micro_batch, make_plan, plan_dict


@dataclass(frozen=True)
class _PlanSection:
    plan: PlanConfig = field(default_factory=PlanConfig)


def _model_shape(model_config: str | None, cfg: TrainConfig, plan_cfg: PlanConfig) -> ModelShape:
    """--model-config, else model.path (what train loads), else plan.model, else the tiny model."""
    ref = model_config or cfg.model.path or plan_cfg.model
    if ref and Path(ref).is_dir() and not (Path(ref) / "config.json").is_file():
        from ..rl.checkpoint import latest_checkpoint  # a run folder, as train --model takes: its latest model

        found = latest_checkpoint(ref)
        if found is not None:
            ref = str(found.model_dir)
    if ref:
        return resolve_shape(ref)
    if (DEFAULT_MODEL_DIR / "config.json").is_file():
        return resolve_shape(str(DEFAULT_MODEL_DIR))
    return ModelShape.from_config(tiny_model_config(), name="tiny offline model", source="built-in table")


def _gib(n: float) -> str:
    return f"{n / GiB:.1f}"


def _seqs(n: int) -> str:
    return f"{n} sequence" + ("" if n == 1 else "s")


def _count(n: int) -> str:
    return f"{n / 1e9:.2f}B" if n >= 1e9 else f"{n / 1e6:.1f}M"


def _header(plan: Plan) -> list[str]:
    """Model, dtypes, tokens per step, micro-batch."""
    s, w = plan.shape, plan.workload
    dtype = {4: "float32", 2: "bf16"}
    if w.autocast:
        precision = "float32 master weights, bf16 compute (ddp: autocast; fsdp: gathered in bf16); AdamW states float32"
    else:
        precision = f"{dtype[w.weight_bytes]} weights and compute; AdamW states {dtype[w.weight_bytes]}"
        if w.weight_bytes == 2:
            precision += " (no float32 master: updates far below bf16 resolution are lost)"
    item = {"sft": "step targets", "srl": f"step targets x G={w.samples_per_item}"}.get(
        w.method, f"tasks x {w.samples_per_item} (G episodes x max turns)")
    budget = f", max_tokens_per_microbatch {w.token_budget:,}" if w.token_budget else ""
    return [
        f"model    {s.name} ({s.source}): {_count(s.param_count)} parameters",
        f"         {s.describe()}",
        f"dtypes   {precision}",
        f"step     {w.method}: {w.batch_size} {item} = {w.sequences_per_step:,} sequences of <= "
        f"{w.prompt_tokens:,} prompt + {w.completion_tokens:,} new tokens",
        f"         = {w.tokens_per_step:,} tokens per optimizer step ({w.completion_tokens_per_step:,} completion "
        f"tokens)",
        f"micro    {w.gpus} GPU(s), grad_accumulation {plan.grad_accumulation}{budget}: "
        f"{_seqs(w.micro_sequences)} = {w.micro_tokens:,} tokens per forward/backward per GPU",
        f"         logits over {w.logit_tokens:,} completion positions x {s.vocab_size:,} vocab in float32, "
        "not chunked",
    ]


def _table(plan: Plan) -> list[str]:
    """One row per strategy, GiB per GPU, and what the columns mean."""
    pc = plan.config
    reserved = f" - {pc.reserve_gb:g} GiB reserved" if pc.reserve_gb else ""
    head = ("per GPU, GiB", "weights", "grads", "AdamW", "bf16/gath", "activ.", "recomp", "logits", "step", "peak",
            f"fits in {_gib(pc.usable_bytes)} ({pc.gpu_memory_gb:g} GiB - {pc.headroom:.0%}{reserved})")
    rows = [head]
    for e in plan.estimates:
        adam = f"cpu {_gib(e.host_optimizer)}" if e.strategy.offload else _gib(e.optimizer)
        rows.append((e.strategy.label, _gib(e.weights + e.reference), _gib(e.grads), adam, _gib(e.compute_params),
                     _gib(e.activations), _gib(e.recompute), _gib(e.logits), _gib(e.step_transient),
                     _gib(e.peak), "fits" if e.fits else "does not fit"))
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    last = len(head) - 1
    lines = ["  ".join(c.ljust(widths[0]) if i == 0 else c if i == last else c.rjust(widths[i])
                       for i, c in enumerate(r)).rstrip() for r in rows]
    lines.append("")
    if plan.workload.reference_model:
        lines.append("weights include the frozen KL reference model (grpo.beta > 0).")
    lines.append("peak = weights + grads + AdamW + max(bf16/gath + activ. + logits, step); with checkpointing "
                 "max(logits, recomp)\n       in place of logits. step: the optimizer step's temporaries. "
                 "AdamW 'cpu': host memory per GPU process.\n       Not counted: rollout generation "
                 "(KV cache; for a colocated vLLM engine set plan.reserve_gb).")
    return lines


def _verdict(plan: Plan) -> list[str]:
    """What fits, the fastest of it, and what a smaller micro-batch would allow."""
    w, rec = plan.workload, plan.recommended
    if rec is not None:
        most = largest_micro_batch(plan, rec.strategy)
        more = ""
        if most > w.micro_sequences:
            more = f"; it holds up to {_seqs(most)} ({most * w.seq_tokens:,} tokens) per micro-batch"
        lines = [f"verdict: {len(plan.fitting)} of {len(plan.estimates)} fit; fastest that fits: "
                 f"{rec.strategy.label} (peak {_gib(rec.peak)} GiB){more}"]
        if plan.smaller:
            lines.append("         faster strategies that fit with a smaller micro-batch:")
    elif plan.smaller:
        lines = [f"verdict: nothing fits as configured ({_seqs(w.micro_sequences)} per micro-batch); "
                 f"{plan.smaller[0].strategy.label} fits with a smaller micro-batch:"]
    else:
        lines = [f"verdict: nothing fits, not even 1 sequence of {w.seq_tokens:,} tokens per micro-batch with "
                 "fsdp + checkpointing + offload: use more GPUs, shorter prompts (plan.prompt_tokens) or "
                 "completions (generation.max_new_tokens), or a smaller model"]
    for a in plan.smaller:
        lines.append(f"           {a.strategy.label}: {_seqs(a.micro_sequences)} "
                     f"({a.micro_sequences * w.seq_tokens:,} tokens) per micro-batch, --set {a.setting}")
    return lines


def format_plan(plan: Plan) -> str:
    """The plan as a few header lines, a table (GiB per GPU) and a verdict."""
    return "\n".join(_header(plan) + [""] + _table(plan) + _verdict(plan))


def plan_command(
    config: str = typer.Option("tiny-cpu", "--config", "-c", help="A preset name (tiny-cpu, paper) or a YAML file."),
    gpus: int | None = typer.Option(None, "--gpus", help="GPUs the run is spread over. Default: the config's "
                                       "plan.gpus (1 without it)."),
    gpu_memory_gb: float | None = typer.Option(
        None, "--gpu-memory-gb", help="Memory of one GPU in GiB (default: plan.gpu_memory_gb, 80)."),
    model_config: str | None = typer.Option(
        None, "--model-config", help="config.json (or its folder) of the model to plan for, instead of "
        "model.path / plan.model."),
    prompt_tokens: int | None = typer.Option(
        None, "--prompt-tokens", help="Longest prompt in tokens (default: plan.prompt_tokens, 4096)."),
    overrides: list[str] = typer.Option(
        [], "--set", "-s", help="Dotted override of the train config (optim.grad_accumulation=128) or of "
        "the plan section (plan.headroom=0.15), repeatable."),
    as_json: bool = typer.Option(False, "--json", help="Print the plan as JSON."),
) -> None:
    """Per-GPU memory and tokens per step of a training config, for each strategy, with a verdict."""
    flags: dict[str, object] = {}
    if gpus is not None:
        flags["plan.gpus"] = gpus
    if gpu_memory_gb is not None:
        flags["plan.gpu_memory_gb"] = gpu_memory_gb
    if prompt_tokens is not None:
        flags["plan.prompt_tokens"] = prompt_tokens
    plan_sets = [o for o in overrides if o.strip().startswith("plan.")]
    train_sets = [o for o in overrides if not o.strip().startswith("plan.")]
    # loaded as the `plan:` key of a mapping, so errors name it (plan.gpus, not gpus)
    section = apply_overrides({"plan": read_yaml(config).get("plan") or {}}, plan_sets)
    plan_cfg = from_mapping(_PlanSection, apply_overrides(section, flags)).plan
    cfg = load_config(TrainConfig, config, train_sets)
    shape = _model_shape(str(Path(model_config)) if model_config else None, cfg, plan_cfg)
    plan = make_plan(cfg, plan_cfg, shape)
    typer.echo(json.dumps(plan_dict(plan), indent=2) if as_json else format_plan(plan))


def register(app: typer.Typer) -> None:
    """Add ``plan`` to the CLI."""
    app.command("plan")(plan_command)
