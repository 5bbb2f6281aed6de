"""What the trainer calls on a Hugging Face model (transformers, peft) beyond
``torch.nn.Module``'s own methods, typed.

The trained model is held as a ``torch.nn.Module``: a transformers causal LM, perhaps inside a
peft wrapper, perhaps sharded by FSDP (which swaps its class). torch's stub types every
attribute a Module does not declare as ``Tensor | Module`` (its ``__getattr__`` serves
parameters, buffers and submodules), which is wrong for the methods of those subclasses. Each
helper below looks for the method as the callers always did, then calls it through the
Protocol that describes it (the one ``cast`` per helper says so).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol, cast

import torch


class PeftWrapper(Protocol):
    """A peft ``PeftModel``."""

    def get_base_model(self) -> torch.nn.Module: ...


class CausalLM(Protocol):
    """A transformers ``PreTrainedModel`` with a decoder and a vocabulary projection."""

    def get_decoder(self) -> torch.nn.Module: ...

    def get_output_embeddings(self) -> torch.nn.Module | None: ...


class Checkpointable(Protocol):
    """A transformers model's activation checkpointing switches (``activation_...`` since 5.x)."""

    def activation_checkpointing_enable(self, activation_checkpointing_kwargs: dict[str, Any]) -> None: ...

    def gradient_checkpointing_enable(self, gradient_checkpointing_kwargs: dict[str, Any]) -> None: ...


class LoraLayer(Protocol):
    """A peft LoRA layer (its ``lora_A`` / ``lora_B`` are ``nn.ModuleDict``s of Linear layers)."""

    lora_A: Mapping[str, torch.nn.Linear]
    lora_B: Mapping[str, torch.nn.Linear]
    scaling: Mapping[str, float]
    use_dora: Mapping[str, bool]
    active_adapters: list[str]

    def get_base_layer(self) -> torch.nn.Module: ...


def base_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (or the model itself)."""
    if hasattr(model, "get_base_model"):
        return cast(PeftWrapper, model).get_base_model()  # a peft method, not Tensor | Module
    return model


def decoder(model: torch.nn.Module) -> torch.nn.Module:
    """The decoder stack of a causal LM (peft forwards the call to its base model)."""
    return cast(CausalLM, model).get_decoder()  # a transformers method, not Tensor | Module


def output_embeddings(model: torch.nn.Module) -> torch.nn.Module | None:
    """The vocabulary projection of a causal LM; None for a model without the method."""
    if not hasattr(model, "get_output_embeddings"):
        return None
    return cast(CausalLM, model).get_output_embeddings()  # a transformers method, not Tensor | Module


def checkpointable(model: torch.nn.Module) -> Checkpointable:
    """``model`` seen through its activation checkpointing switches."""
    return cast(Checkpointable, model)  # transformers methods, not Tensor | Module


def lora_layers(model: torch.nn.Module) -> dict[str, LoraLayer]:
    """The peft LoRA layers of ``model`` by module name (those with adapters and a base layer)."""
    return {name: cast(LoraLayer, m) for name, m in model.named_modules()  # peft attributes, not Tensor | Module
            if hasattr(m, "lora_A") and hasattr(m, "get_base_layer")}
