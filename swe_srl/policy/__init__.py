"""Policies: sample actions from a model (transformers, vLLM, an OpenAI-compatible server) or
replay scripted completions. See :mod:`swe_srl.policy.base` for the shared interface."""

from .base import (
    BACKENDS,
    GenerationConfig,
    LoraOptions,
    Policy,
    PolicyConfig,
    Sample,
    load_policy,
    render_conversation,
)
from .batching import BatchingPolicy

__all__ = [
    "BACKENDS",
    "BatchingPolicy",
    "GenerationConfig",
    "LoraOptions",
    "Policy",
    "PolicyConfig",
    "Sample",
    "load_policy",
    "render_conversation",
]
