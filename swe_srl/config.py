"""The configuration tree of ``swe-srl train``: typed, frozen dataclasses, one per section.

Loading (presets in ``swe_srl/configs``, YAML files, dotted ``--set`` overrides, validation
against the annotations) is generic and lives in :mod:`swe_srl.config_loader`. Each setting
is defined once and nested where it is used: the sampling settings are the policy's
:class:`~swe_srl.policy.base.GenerationConfig` (``generation``), the way an episode is run and
graded is the harness's :class:`~swe_srl.harness.HarnessConfig` (``episodes.harness``, the
same one ``swe-srl eval`` uses), how actions are compared is the reward's
:class:`~swe_srl.rewards.compare.RewardConfig` (``reward``, also read by ``swe-srl eval --mode
steps``), the GRPO loss fields are :class:`~swe_srl.rl.settings.GrpoLossConfig`'s (``grpo``, the
settings :mod:`swe_srl.rl.grpo` reads without importing this tree). The ``episodes`` and
``rollout`` sections (how rollouts are drawn) are declared in :mod:`swe_srl.config_rollouts`
and imported here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal

# The episodes and rollout sections are declared in config_rollouts; they and the types of
# their fields are imported from here, like every other section (``X as X``: re-exported).
from .calibration import FlakyMode as FlakyMode
from .config_rollouts import Credit as Credit
from .config_rollouts import EngineKind as EngineKind
from .config_rollouts import EpisodeConfig, RolloutConfig
from .config_rollouts import RewardWeights as RewardWeights
from .errors import ConfigError
from .harness import HarnessConfig as HarnessConfig
from .hosts import HostsConfig as HostsConfig
from .policy.base import GenerationConfig, LoraOptions
from .rewards.compare import RewardConfig
from .rewards.episode import TestRewardShape as TestRewardShape
from .rl.settings import AdvantageScale, GrpoLossConfig, Precision
from .rl.settings import LossWeighting as LossWeighting

Method = Literal["sft", "srl", "rlvr", "hybrid"]
Schedule = Literal["constant", "cosine", "linear"]
Parallel = Literal["ddp", "fsdp"]
LongPrompts = Literal["truncate", "drop"]
RolloutCorrection = Literal["auto", "tis", "bypass"]
SFTTarget = Literal["action", "thought_action"]
EPISODE_METHODS = ("rlvr", "hybrid")
# Collectives of an episode step wait while other ranks run Docker episodes and grade them.
EPISODE_DIST_TIMEOUT_S = 3 * 3600


# --------------------------------------------------------------------------- the train config


@dataclass(frozen=True)
class ModelConfig:
    """The policy model (a Hugging Face causal LM directory)."""

    path: str = ""
    """Model directory. Empty: a tiny model is created offline under the run directory."""
    backend: Literal["hf"] = "hf"
    """Policy backend used for sampling; training needs the in-process ``hf`` weights."""
    dtype: Literal["auto", "float32", "bfloat16"] = "float32"
    """Weights dtype (auto = float32). Training needs float32 master weights: for bf16 compute
    set ``run.precision: bf16`` (autocast). ``bfloat16`` weights are refused: plain AdamW on
    bf16 weights rounds most small updates away."""
    attn_implementation: str = ""
    """Passed to ``from_pretrained`` when set (e.g. ``sdpa``, ``flash_attention_2``)."""
    lora: LoraOptions | None = None
    """Train LoRA adapters (peft) instead of every weight; None = full fine-tuning. Checkpoints
    keep the adapter; ``swe-srl export`` merges it into a plain model folder."""

    def __post_init__(self) -> None:
        if self.path and not isinstance(self.path, str):
            raise ConfigError("model.path must be a string")


@dataclass(frozen=True)
class DataConfig:
    """Step targets written by ``swe-srl build-dataset`` (context is built upstream)."""

    train: str = ""
    """train.jsonl/.parquet, or a dataset directory holding train.jsonl. Empty: the default
    build-dataset output (runs/dataset)."""
    val: str = ""
    """Validation step targets. Empty: val.jsonl beside the train file, if present."""
    limit: int = 0
    """Use only the first N train step targets (0 = all)."""
    val_limit: int = 64
    """Validate on the first N val step targets (0 = all)."""
    shuffle: bool = True
    """Shuffle train step targets each epoch (a seeded, resumable order)."""
    max_prompt_tokens: int = 0
    """Longest prompt (chat template included) of a step target in training, sft and srl
    (0 = no limit). Validation prompts and episode turns (rlvr, hybrid: their context is the
    agent's, ``episodes.harness.agent``) are not affected."""
    long_prompts: LongPrompts = "truncate"
    """What happens to a longer prompt. truncate: its oldest context rounds are left out until
    it fits, then the middle of the issue is cut (a prompt that cannot keep any of its issue
    is dropped); drop: the step target is skipped. Counted per step as
    ``data/truncated_prompts`` and ``data/dropped_prompts``."""

    def __post_init__(self) -> None:
        if self.limit < 0 or self.val_limit < 0 or self.max_prompt_tokens < 0:
            raise ConfigError("data.limit, data.val_limit and data.max_prompt_tokens must be >= 0 (0 = all)")


@dataclass(frozen=True)
class GRPOConfig(GrpoLossConfig):
    """Sampling, rewards and the GRPO objective of SRL training: the loss fields (``beta``, the
    clip ranges, ``loss_aggregation``, the importance-sampling corrections) are
    :class:`~swe_srl.rl.settings.GrpoLossConfig`'s, declared and validated there."""

    num_generations: int = 8
    """G: completions sampled per step target (a group); temperature, top_p and the token
    budget are the run's ``generation`` settings."""
    reference_dtype: Literal["auto", "float32", "bfloat16"] = "auto"
    """The frozen reference's weights: auto = bfloat16 when the run trains in bf16 (its
    forwards run under bf16 autocast anyway: half the memory of a float32 copy), else the
    model's dtype."""
    advantage_scale: AdvantageScale = AdvantageScale.GROUP
    """Divide centred rewards by the group std (group), the batch std (batch), or not (none)."""
    dynamic_sampling_eps: float = 0.02
    """Dynamic sampling (DAPO): a group whose reward std is <= this carries no signal worth an
    update and is dropped (negative = keep all). The SRL reward is continuous: two actions that
    differ by a character differ by ~0.01 in similarity, and group-std scaling would blow such
    a difference up to a full +-1 advantage, so the default (0.02, 1% of the reward range [-1,
    1]) drops near-ties, not only exact ones. A 0/1 test reward is unaffected: a group with one
    success in G=64 still has std 0.12."""
    max_resample_rounds: int = 4
    """Sampling rounds per step while refilling dropped groups (1 = no refill)."""
    rollout_correction: RolloutCorrection = "auto"
    """How samples from another implementation than the trainer (``rollout.engine: vllm``) are
    corrected. tis: truncated importance sampling: the PPO ratio is the trainer's against its
    own detached log-probs, each token's loss times ``min(exp(trainer - engine), tis_cap)``;
    bypass: the engine's log-probs are the ratio's old log-probs (bounded for negative
    advantages only by ``dual_clip``); auto: tis with vllm, and with hf when the run trains in
    bf16 (KV-cache sampling and whole-sequence scoring under bf16 differ by ~0.03 nats/token on
    SmolLM2); nothing to correct with hf in float32."""
    moved_keys: ClassVar[dict[str, str]] = {"similarity": "reward.similarity"}

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.num_generations < 2:
            raise ConfigError("grpo.num_generations must be >= 2: advantages compare completions within a group")
        if self.max_resample_rounds < 1:
            raise ConfigError("grpo.max_resample_rounds must be >= 1 (1 = sample once, no refill)")
        if self.reference_dtype not in ("auto", "float32", "bfloat16"):
            raise ConfigError(f"grpo.reference_dtype must be auto, float32 or bfloat16, got {self.reference_dtype!r}")


@dataclass(frozen=True)
class SFTConfig:
    """The supervised baseline on the same step targets."""

    target: SFTTarget = "action"
    """action: learn '<think></think>' + the action; thought_action: learn the expert's thought
    inside <think> where the source has one."""
    max_length: int = 2048
    """Sequences longer than this (prompt + completion tokens) are cut from the left of the prompt."""


@dataclass(frozen=True)
class OptimConfig:
    """AdamW, learning-rate schedule and batch geometry."""

    lr: float = 5e-7
    weight_decay: float = 0.0
    betas: tuple[float, float] = (0.9, 0.999)
    warmup_steps: int = 0
    schedule: Schedule = "constant"
    max_grad_norm: float = 1.0
    """Clip the global gradient norm to this (0 = no clipping)."""
    batch_size: int = 512
    """Prompts (step targets) per optimizer step, over all processes."""
    grad_accumulation: int = 1
    """Each process splits its share of the batch into this many forward/backward chunks: a
    memory knob that leaves the update unchanged."""
    max_tokens_per_microbatch: int = 0
    """Token budget of one forward/backward pass (0 = split by ``grad_accumulation`` and
    ``episodes.update_chunk_turns``, which it replaces when set): sequences sorted by length
    are packed while (longest prompt + longest completion) x sequences stays within it; a
    longer sequence gets a pass of its own. Like ``grad_accumulation``, a memory knob that
    leaves the update unchanged."""
    logprob_chunk_tokens: int = 0
    """Completion positions per lm_head + log-softmax chunk of the update (0 = all at once).
    Each chunk's float32 [sequences, chunk, vocab] logits are made, used and freed (and made
    again in the backward pass), so the whole [sequences, tokens, vocab] never is: with a 150k
    vocabulary that tensor is 0.6 MB per token. Leaves the log-probs unchanged."""

    def __post_init__(self) -> None:
        if self.lr <= 0:
            raise ConfigError("optim.lr must be > 0")
        if self.batch_size < 1 or self.grad_accumulation < 1:
            raise ConfigError("optim.batch_size and optim.grad_accumulation must be >= 1")
        if self.max_tokens_per_microbatch < 0 or self.logprob_chunk_tokens < 0:
            raise ConfigError("optim.max_tokens_per_microbatch and optim.logprob_chunk_tokens must be >= 0 (0 = off)")
        if self.warmup_steps < 0 or self.max_grad_norm < 0 or self.weight_decay < 0:
            raise ConfigError("optim.warmup_steps, optim.max_grad_norm and optim.weight_decay must be >= 0")


@dataclass(frozen=True)
class RunConfig:
    """Where the run lives, how long it lasts, and what it records."""

    out_dir: str = "runs/train"
    seed: int = 0
    max_steps: int = 100
    """Optimizer steps to run (the data is cycled through in epochs as needed)."""
    save_every: int = 50
    """Checkpoint every N steps (and at the end; 0 = only at the end)."""
    eval_every: int = 50
    """Validate every N steps (and before the first and after the last; 0 = never)."""
    keep_start_model: bool = True
    """Keep what a resume needs of the start model inside the run (``start_model/``, hard links
    to its files where the filesystem allows, else a copy) when the run reads it again on
    resume: LoRA (the base weights), a KL reference (grpo.beta > 0), a vLLM rollout engine.
    Off: resume reads the original folder, which must then still exist."""
    eval_at_start: bool = True
    """Validate before the first step too (off where the start model was just validated, e.g.
    SRL from an SFT run's last checkpoint)."""
    log_every: int = 1
    keep_checkpoints: int = 2
    precision: Precision = "auto"
    """auto: bf16 autocast on a GPU that supports it, float32 elsewhere."""
    dist_timeout_s: int = 0
    """Seconds a collective of a multi-process run waits for the other processes before the
    run fails (the process group's timeout). 0 = 3 h for rlvr / hybrid, whose ranks run and
    grade Docker episodes of different lengths between collectives, and torch's default
    (10 min with nccl, 30 min with gloo) for sft / srl."""
    tensorboard: bool = True
    wandb: bool = False
    """Log to Weights & Biases too (needs the wandb package; project below)."""
    wandb_project: str = "swe-srl"
    progress: bool = True
    threads: int = 0
    """torch's intra-op CPU threads per process (0 = torch's default, one per core). On a
    loaded machine fewer threads can be faster (benchmarks/README.md, CPU recipe)."""
    parallel: Parallel = "ddp"
    """How several processes (torchrun) share the model. ddp: each holds everything and the
    gradients are all-reduced once per step; fsdp: FSDP2 shards weights, gradients and AdamW
    states over the processes (each decoder layer and the root), with sharded checkpoints
    (``swe-srl export`` turns one into a model folder)."""
    activation_checkpointing: bool = False
    """Keep only each decoder layer's input and recompute the layer in the backward pass
    (about 1/3 more compute for far less activation memory); ddp and fsdp."""
    cpu_offload: bool = False
    """fsdp only: keep the sharded weights, gradients and AdamW states in CPU memory (the
    optimizer step runs on the CPU; layers are copied to the GPU as they run)."""

    def __post_init__(self) -> None:
        if self.cpu_offload and self.parallel != "fsdp":
            raise ConfigError("run.cpu_offload needs run.parallel=fsdp (FSDP2 offloads the sharded states)")
        if self.max_steps < 1:
            raise ConfigError("run.max_steps must be >= 1")
        if min(self.save_every, self.eval_every, self.log_every) < 0 or self.keep_checkpoints < 1:
            raise ConfigError("run.save_every/eval_every/log_every must be >= 0 and run.keep_checkpoints >= 1")
        if self.dist_timeout_s < 0:
            raise ConfigError("run.dist_timeout_s must be >= 0 (0 = the method's default)")
        if self.threads < 0:
            raise ConfigError("run.threads must be >= 0 (0 = torch's default)")


@dataclass(frozen=True)
class TrainConfig:
    """Everything ``swe-srl train`` needs; written to ``RUN_DIR/config.yaml``."""

    method: Method = "srl"
    model: ModelConfig = field(default_factory=ModelConfig)
    generation: GenerationConfig = field(default_factory=lambda: GenerationConfig(max_new_tokens=512))
    """How the policy samples: SRL completions, every turn of an rlvr/hybrid episode, and (at
    temperature 0) validation. ``n`` stays 1: the group size is ``grpo.num_generations``."""
    data: DataConfig = field(default_factory=DataConfig)
    grpo: GRPOConfig = field(default_factory=GRPOConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    """How actions are compared with the expert's (SRL reward, validation, hybrid similarity)."""
    sft: SFTConfig = field(default_factory=SFTConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    run: RunConfig = field(default_factory=RunConfig)
    episodes: EpisodeConfig = field(default_factory=EpisodeConfig)
    rollout: RolloutConfig = field(default_factory=RolloutConfig)

    def __post_init__(self) -> None:
        if self.generation.n != 1:
            raise ConfigError("generation.n must be 1: the group size is grpo.num_generations")
        if self.rollout.engine == "vllm" and self.generation.top_p < 1:
            # vLLM reports log-probs of the top-p renormalised distribution, the trainer's are of
            # the full softmax: every ratio would be biased below 1 and clipped.
            raise ConfigError("rollout.engine=vllm needs generation.top_p=1: the engine's log-probs "
                              "(the importance ratio's old log-probs) are of the top-p truncated "
                              "distribution; use rollout.engine=hf for top-p sampling")
        if self.rollout.engine == "vllm" and self.on_episodes and self.episodes.harness.agent.context == "conversation":
            raise ConfigError("episodes.harness.agent.context=conversation samples each turn from token ids, which "
                              "the vLLM rollout engine does not take yet; use rollout.engine=hf or "
                              "agent.context=window")
        w = self.episodes.weights
        if self.method == "hybrid" and w.similarity == 0 and w.tests == 0:
            raise ConfigError("--method hybrid needs a nonzero episodes.weights.similarity or episodes.weights.tests")
        if self.model.dtype == "bfloat16":
            raise ConfigError("model.dtype bfloat16 would train bf16 weights with plain AdamW, which rounds most "
                              "updates away; use model.dtype float32 with run.precision bf16 (float32 master "
                              "weights, bf16 autocast)")

    @property
    def on_episodes(self) -> bool:
        """Whether this run trains on sandboxed episodes (rlvr, hybrid) rather than step targets."""
        return self.method in EPISODE_METHODS

    @property
    def dist_timeout_s(self) -> float | None:
        """The process group's timeout in seconds (``run.dist_timeout_s``); None = torch's default."""
        if self.run.dist_timeout_s:
            return float(self.run.dist_timeout_s)
        return float(EPISODE_DIST_TIMEOUT_S) if self.on_episodes else None


