"""Will a training config fit on the GPUs? The memory and token arithmetic of one optimizer
step, per GPU, for each way of running it (``swe-srl plan``).

Pure arithmetic on a :class:`~swe_srl.model_shape.ModelShape` and a train config: nothing is
loaded, no torch. Parameters, gradients and AdamW states are exact counts (what the trainer's
tensors hold; ``tests/test_plan.py`` measures them on a real model); activations and logits are
estimates of the tensors autograd keeps, term by term, for the transformers decoder the trainer
runs (RMSNorm upcasts to float32, SDPA, gated SiLU MLP) and the trainer's log-prob pass (logits
only over completion tokens, cast to float32, not chunked): :mod:`swe_srl.plan_activations`.

Strategies: ``ddp`` (every GPU holds everything; the trainer's gradient all-reduce) and ``fsdp``
(FSDP2 with bf16 compute: parameters, gradients and optimizer states sharded over the GPUs,
the embeddings/head unit and two decoder layers gathered at a time), each with or without
activation checkpointing (each decoder layer keeps only its input, and is recomputed in the
backward pass) and with or without the AdamW states offloaded to CPU memory.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import Any, Literal

from .errors import ConfigError
from .model_shape import ModelShape
from .plan_activations import activation_bytes

GiB = 1024**3
# The trainer all-reduces gradients in flat buckets of this many elements (a bucket closes once
# it holds at least this many, so it can also hold the largest tensor): swe_srl.rl.distributed.
DDP_BUCKET_ELEMENTS = 16 * 1024 * 1024
ADAMW_STATES = 2  # exp_avg and exp_avg_sq, each the size and dtype of its parameter
STEP_BYTES = 4  # AdamW's per-tensor ``step`` count: a float32 scalar

Sharding = Literal["ddp", "fsdp"]


@dataclass(frozen=True)
class PlanConfig:
    """The ``plan:`` section of a preset: the hardware and the prompt budget to plan for."""

    model: str = ""
    """Model to plan for when ``model.path`` is empty (a folder, a config.json, or a hub name that
    is cached locally or in the built-in table, e.g. Qwen/Qwen2.5-Coder-7B-Instruct)."""
    prompt_tokens: int = 4096
    """Longest prompt in tokens (system prompt + problem statement + ``context_rounds`` rounds of
    action and truncated observation); the train config bounds only the completion."""
    gpus: int = 1
    gpu_memory_gb: float = 80.0
    """Memory of one GPU in GiB (an '80 GB' A100/H100 has 80 GiB)."""
    headroom: float = 0.10
    """Fraction of GPU memory left for the CUDA context, NCCL buffers and allocator fragmentation."""
    reserve_gb: float = 0.0
    """GiB per GPU held by something else during training, e.g. a colocated vLLM engine's share."""

    def __post_init__(self) -> None:
        if self.gpus < 1:
            raise ConfigError(f"--gpus must be >= 1, got {self.gpus}")
        if not self.gpu_memory_gb > 0:
            raise ConfigError(f"--gpu-memory-gb must be > 0, got {self.gpu_memory_gb}")
        if not 0 <= self.headroom < 1:
            raise ConfigError(f"plan.headroom must be in [0, 1), got {self.headroom}")
        if self.prompt_tokens < 0:
            raise ConfigError(f"plan.prompt_tokens must be >= 0, got {self.prompt_tokens}")
        if self.reserve_gb < 0:
            raise ConfigError(f"plan.reserve_gb must be >= 0, got {self.reserve_gb}")

    @property
    def usable_bytes(self) -> int:
        """What training may use on one GPU: the memory less the headroom and the reserve."""
        return int(self.gpu_memory_gb * GiB * (1 - self.headroom) - self.reserve_gb * GiB)


@dataclass(frozen=True)
class Workload:
    """What one optimizer step runs, and what one forward/backward pass holds on one GPU."""

    method: str
    gpus: int
    batch_size: int
    """Items per optimizer step (step targets; tasks for episodes)."""
    samples_per_item: int
    """Sequences per item: G completions (srl), 1 (sft), G episodes x max turns (rlvr/hybrid)."""
    prompt_tokens: int
    completion_tokens: int
    micro_sequences: int
    """Sequences per forward/backward pass on one GPU."""
    weight_bytes: int
    compute_bytes: int
    attn_implementation: str = "sdpa"
    reference_model: bool = False
    token_budget: int = 0
    """``optim.max_tokens_per_microbatch`` when the config has it (0: not set)."""

    @property
    def seq_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def micro_tokens(self) -> int:
        return self.micro_sequences * self.seq_tokens

    @property
    def logit_tokens(self) -> int:
        """Positions whose logits are computed: the completion and one more (``logits_to_keep``)."""
        return self.micro_sequences * (self.completion_tokens + 1)

    @property
    def sequences_per_step(self) -> int:
        return self.batch_size * self.samples_per_item

    @property
    def per_gpu_sequences(self) -> int:
        return math.ceil(self.sequences_per_step / self.gpus)

    @property
    def tokens_per_step(self) -> int:
        return self.sequences_per_step * self.seq_tokens

    @property
    def completion_tokens_per_step(self) -> int:
        return self.sequences_per_step * self.completion_tokens

    @property
    def autocast(self) -> bool:
        return self.compute_bytes < self.weight_bytes


def _dtype_bytes(name: str) -> int:
    return 4 if name in ("float32", "fp32", "") else 2


def workload(config: Any, plan: PlanConfig, shape: ModelShape) -> Workload:
    """The workload of train config ``config`` (a :class:`~swe_srl.config.TrainConfig`) on
    ``plan.gpus`` GPUs. Micro-batch: each GPU's share of the step's sequences split into
    ``optim.grad_accumulation`` parts (capped by ``optim.max_tokens_per_microbatch`` when the
    config has it, and by ``episodes.update_chunk_turns`` for episodes). Sequences: srl, G of
    ``plan.prompt_tokens`` + ``generation.max_new_tokens`` per step target; sft, one of at most
    ``sft.max_length`` per step target; rlvr/hybrid, one per turn, G episodes of at most
    ``agent.max_steps`` turns per task."""
    method = config.method
    completion = config.generation.max_new_tokens
    prompt = plan.prompt_tokens
    if method == "sft":
        samples = 1
        completion = min(completion, config.sft.max_length)
        prompt = max(0, min(prompt, config.sft.max_length - completion))
    elif method in ("rlvr", "hybrid"):
        samples = config.grpo.num_generations * config.episodes.harness.agent.max_steps
    else:
        samples = config.grpo.num_generations
    dtype = config.model.dtype
    if dtype == "auto":
        dtype = shape.checkpoint_dtype or "float32"
    weight_bytes = _dtype_bytes(dtype)
    # precision auto = bf16 on a GPU that supports it (this plan is for GPUs)
    compute_bytes = weight_bytes if config.run.precision == "fp32" else 2
    per_gpu = math.ceil(config.optim.batch_size * samples / plan.gpus)
    micro = math.ceil(per_gpu / config.optim.grad_accumulation)
    budget = int(getattr(config.optim, "max_tokens_per_microbatch", 0) or 0)
    if budget > 0:
        micro = min(micro, max(1, budget // (prompt + completion)))
    if method in ("rlvr", "hybrid"):
        micro = min(micro, config.episodes.update_chunk_turns)
    return Workload(
        method=method, gpus=plan.gpus, batch_size=config.optim.batch_size, samples_per_item=samples,
        prompt_tokens=prompt, completion_tokens=completion, micro_sequences=max(1, micro),
        weight_bytes=weight_bytes, compute_bytes=compute_bytes,
        attn_implementation=config.model.attn_implementation or "sdpa",
        reference_model=config.grpo.beta > 0 and method != "sft", token_budget=budget)


# ----------------------------------------------------------------------------- strategies


@dataclass(frozen=True)
class Strategy:
    sharding: Sharding
    checkpointing: bool = False
    offload: bool = False

    @property
    def label(self) -> str:
        return self.sharding + (" +ckpt" if self.checkpointing else "") + (" +offload" if self.offload else "")


# Fastest first: sharding costs communication, checkpointing ~1/3 more compute, offload a CPU step.
STRATEGIES = tuple(Strategy(s, ck, off) for off in (False, True) for ck in (False, True) for s in ("ddp", "fsdp"))


@dataclass(frozen=True)
class MemoryEstimate:
    """Per-GPU bytes of one strategy. ``peak`` = the static part + the larger of the
    forward/backward working set and the optimizer step's temporaries."""

    strategy: Strategy
    weights: int
    grads: int
    optimizer: int
    compute_params: int
    """ddp under autocast: the bf16 copy of every weight; fsdp: gathered units and their gradients."""
    reference: int
    activations: int
    recompute: int
    logits: int
    step_transient: int
    """The optimizer step: foreach AdamW's temporary (ddp: the gradient all-reduce bucket if larger)."""
    host_optimizer: int
    """CPU memory per GPU process for offloaded AdamW states."""
    usable: int

    @property
    def static(self) -> int:
        return self.weights + self.grads + self.optimizer + self.reference

    @property
    def forward_backward(self) -> int:
        if self.strategy.checkpointing:  # the logits' gradient is gone before the first recompute
            return self.compute_params + self.activations + max(self.logits, self.recompute)
        return self.compute_params + self.activations + self.logits

    @property
    def peak(self) -> int:
        return self.static + max(self.forward_backward, self.step_transient)

    @property
    def fits(self) -> bool:
        return self.peak <= self.usable


def estimate(shape: ModelShape, w: Workload, strategy: Strategy, plan: PlanConfig) -> MemoryEstimate:
    """Per-GPU memory of ``w`` under ``strategy``."""
    P, n = shape.param_count, (w.gpus if strategy.sharding == "fsdp" else 1)
    wb, c = w.weight_bytes, w.compute_bytes
    weights, grads = P * wb / n, P * wb / n
    optimizer = ADAMW_STATES * P * wb / n + shape.param_tensors * STEP_BYTES
    step = P * wb / n  # foreach AdamW: sqrt(exp_avg_sq) for all parameters at once
    if strategy.sharding == "ddp":
        compute = shape.matmul_params * c if w.autocast else 0  # autocast's copy of each weight
        if w.gpus > 1:
            step = max(step, (DDP_BUCKET_ELEMENTS + shape.largest_tensor) * wb)
    else:
        # the embeddings/head unit stays gathered, a layer plus the prefetched next one, and one
        # layer's unsharded gradient with its float32 reduce-scatter buffer
        compute = (shape.outer_params + 2 * shape.layer_params) * c + shape.layer_params * (c + 4)
    host = 0
    if strategy.offload:
        host, optimizer, step = optimizer + step, 0, 0
        if strategy.sharding == "ddp" and w.gpus > 1:
            step = (DDP_BUCKET_ELEMENTS + shape.largest_tensor) * wb
    reference = P * wb / n if w.reference_model else 0
    act = activation_bytes(shape, w, strategy.sharding, strategy.checkpointing)
    usable = plan.usable_bytes
    return MemoryEstimate(strategy=strategy, weights=int(weights), grads=int(grads), optimizer=int(optimizer),
                          compute_params=int(compute), reference=int(reference), activations=act.saved,
                          recompute=act.recompute, logits=act.logits, step_transient=int(step),
                          host_optimizer=int(host), usable=usable)


# ----------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Advice:
    """A strategy at a smaller micro-batch than configured, and the ``--set`` that gives it."""

    strategy: Strategy
    micro_sequences: int
    grad_accumulation: int
    setting: str
    """The ``--set`` that gives this micro-batch."""


@dataclass(frozen=True)
class Plan:
    shape: ModelShape
    workload: Workload
    config: PlanConfig
    grad_accumulation: int
    estimates: tuple[MemoryEstimate, ...]
    smaller: tuple[Advice, ...] = ()
    """Strategies faster than the fastest that fits as configured (all of them when none fits)
    that fit with fewer sequences per micro-batch, fastest first, each at the most it holds."""

    @property
    def fitting(self) -> list[MemoryEstimate]:
        return [e for e in self.estimates if e.fits]

    @property
    def recommended(self) -> MemoryEstimate | None:
        return self.fitting[0] if self.fitting else None


def _setting(w: Workload, micro: int, grad_accumulation: int) -> str:
    if w.token_budget > 0:
        return f"optim.max_tokens_per_microbatch={micro * w.seq_tokens}"
    return f"optim.grad_accumulation={grad_accumulation}"


def _shrink(shape: ModelShape, w: Workload, strategy: Strategy, plan: PlanConfig) -> Advice | None:
    """``strategy`` with the most sequences per micro-batch below the configured that fit."""
    for micro in range(w.micro_sequences - 1, 0, -1):
        if estimate(shape, replace(w, micro_sequences=micro), strategy, plan).fits:
            accum = math.ceil(w.per_gpu_sequences / micro)
            return Advice(strategy, micro, accum, _setting(w, micro, accum))
    return None


def make_plan(config: Any, plan: PlanConfig, shape: ModelShape) -> Plan:
    """Every strategy's memory for train config ``config`` on ``plan.gpus`` x ``plan.gpu_memory_gb``,
    and which faster strategies a smaller micro-batch would allow."""
    w = workload(config, plan, shape)
    estimates = tuple(estimate(shape, w, s, plan) for s in STRATEGIES)
    first_fit = next((i for i, e in enumerate(estimates) if e.fits), len(STRATEGIES))
    smaller = tuple(a for s in STRATEGIES[:first_fit] if (a := _shrink(shape, w, s, plan)) is not None)
    return Plan(shape, w, plan, config.optim.grad_accumulation, estimates, smaller)


def largest_micro_batch(plan: Plan, strategy: Strategy, limit: int = 4096) -> int:
    """The most sequences per micro-batch that still fit under ``strategy`` (0: none)."""
    best = 0
    for micro in range(1, min(limit, plan.workload.per_gpu_sequences) + 1):
        if not estimate(plan.shape, replace(plan.workload, micro_sequences=micro), strategy, plan.config).fits:
            break
        best = micro
    return best


def plan_dict(plan: Plan) -> dict[str, Any]:
    """The plan as plain JSON-able data (bytes as integers)."""
    w = plan.workload
    rec = plan.recommended
    return {
        "model": {**asdict(plan.shape), "parameters": plan.shape.param_count,
                  "parameter_tensors": plan.shape.param_tensors, "matmul_parameters": plan.shape.matmul_params},
        "hardware": {"gpus": w.gpus, "gpu_memory_gib": plan.config.gpu_memory_gb, "headroom": plan.config.headroom,
                     "reserve_gib": plan.config.reserve_gb, "usable_bytes": plan.config.usable_bytes},
        "workload": {**asdict(w), "seq_tokens": w.seq_tokens, "micro_tokens": w.micro_tokens,
                     "logit_tokens": w.logit_tokens, "logits_chunked": False,
                     "sequences_per_step": w.sequences_per_step, "tokens_per_step": w.tokens_per_step,
                     "completion_tokens_per_step": w.completion_tokens_per_step,
                     "grad_accumulation": plan.grad_accumulation},
        "strategies": [{"strategy": e.strategy.label, **asdict(e.strategy),
                        **{k: v for k, v in asdict(e).items() if k != "strategy"},
                        "forward_backward": e.forward_backward, "peak": e.peak, "fits": e.fits}
                       for e in plan.estimates],
        "recommended": rec.strategy.label if rec else None,
        "smaller_micro_batch": [{**asdict(a), "strategy": a.strategy.label} for a in plan.smaller],
    }

