"""The shape of a decoder-only causal LM, read from its ``config.json`` alone (no weights), and
what follows from it: parameter count, parameter tensors, the largest tensor.

A model reference resolves, in order, to a ``config.json`` file, a folder holding one, the
local Hugging Face cache (never the network), or the built-in table :data:`KNOWN_SHAPES` (the
Qwen2.5-Coder-Instruct family), so ``swe-srl plan`` works offline for the models the presets
are meant for. Pure: no torch, no transformers.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .errors import ConfigError, InputError

# Architectures whose parameter layout :class:`ModelShape` knows (dense decoders with RMSNorm,
# rotary positions, grouped-query attention and a gated SiLU MLP).
SUPPORTED_MODEL_TYPES = ("qwen2", "qwen3", "llama", "mistral")


def _qwen2(hidden: int, layers: int, heads: int, kv_heads: int, mlp: int, vocab: int, tied: bool) -> dict[str, Any]:
    return {"model_type": "qwen2", "hidden_size": hidden, "num_hidden_layers": layers,
            "num_attention_heads": heads, "num_key_value_heads": kv_heads, "intermediate_size": mlp,
            "vocab_size": vocab, "tie_word_embeddings": tied, "torch_dtype": "bfloat16"}


# The config.json fields that set the size of each Qwen2.5-Coder-Instruct checkpoint (as
# published with the weights); the smaller three tie the output head to the embeddings.
KNOWN_SHAPES: dict[str, dict[str, Any]] = {
    "Qwen/Qwen2.5-Coder-0.5B-Instruct": _qwen2(896, 24, 14, 2, 4864, 151936, True),
    "Qwen/Qwen2.5-Coder-1.5B-Instruct": _qwen2(1536, 28, 12, 2, 8960, 151936, True),
    "Qwen/Qwen2.5-Coder-3B-Instruct": _qwen2(2048, 36, 16, 2, 11008, 151936, True),
    "Qwen/Qwen2.5-Coder-7B-Instruct": _qwen2(3584, 28, 28, 4, 18944, 152064, False),
    "Qwen/Qwen2.5-Coder-14B-Instruct": _qwen2(5120, 48, 40, 8, 13824, 152064, False),
    "Qwen/Qwen2.5-Coder-32B-Instruct": _qwen2(5120, 64, 40, 8, 27648, 152064, False),
}


@dataclass(frozen=True)
class ModelShape:
    """Sizes of a dense decoder; everything the memory plan needs from ``config.json``."""

    name: str
    model_type: str
    hidden_size: int
    num_layers: int
    num_heads: int
    num_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    tie_word_embeddings: bool
    qkv_bias: bool = False
    """Bias on the q/k/v projections (Qwen2 always; Llama with ``attention_bias``)."""
    o_bias: bool = False
    mlp_bias: bool = False
    qk_norm: bool = False
    """An RMSNorm over the head dim on queries and keys (Qwen3)."""
    checkpoint_dtype: str = ""
    """``torch_dtype`` of the published weights (what ``dtype: auto`` loads)."""
    source: str = ""
    """Where the shape came from: a path, 'cache' or 'built-in table'."""

    @classmethod
    def from_config(cls, data: Mapping[str, Any], name: str = "", source: str = "") -> ModelShape:
        """Read a Hugging Face ``config.json`` mapping; a missing or odd field is a ConfigError."""
        if isinstance(data.get("text_config"), Mapping):  # a multimodal wrapper: its language model
            data = data["text_config"]
        model_type = str(data.get("model_type", ""))
        where = name or "model config"
        if model_type not in SUPPORTED_MODEL_TYPES:
            raise ConfigError(f"{where}: model_type {model_type or '(missing)'!r} is not one swe-srl plan knows "
                              f"(known: {', '.join(SUPPORTED_MODEL_TYPES)})")
        if data.get("num_experts") or data.get("num_local_experts"):
            raise ConfigError(f"{where}: mixture-of-experts models are not planned (dense decoders only)")

        def need(key: str) -> int:
            value = data.get(key)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ConfigError(f"{where}: config field {key} must be a positive integer, got {value!r}")
            return value

        hidden, heads = need("hidden_size"), need("num_attention_heads")
        kv_heads = data.get("num_key_value_heads") or heads
        head_dim = data.get("head_dim") or hidden // heads
        # Qwen2 always biases q/k/v; Llama and Qwen3 bias q/k/v/o with attention_bias; Mistral never.
        attention_bias = bool(data.get("attention_bias", False)) and model_type in ("llama", "qwen3")
        return cls(
            name=name or str(data.get("_name_or_path", "")) or model_type,
            model_type=model_type,
            hidden_size=hidden,
            num_layers=need("num_hidden_layers"),
            num_heads=heads,
            num_kv_heads=int(kv_heads),
            head_dim=int(head_dim),
            intermediate_size=need("intermediate_size"),
            vocab_size=need("vocab_size"),
            tie_word_embeddings=bool(data.get("tie_word_embeddings", False)),
            qkv_bias=model_type == "qwen2" or attention_bias,
            o_bias=attention_bias,
            mlp_bias=model_type == "llama" and bool(data.get("mlp_bias", False)),
            qk_norm=model_type == "qwen3",
            checkpoint_dtype=str(data.get("torch_dtype") or data.get("dtype") or ""),
            source=source,
        )

    # ------------------------------------------------------------------ derived sizes

    @property
    def q_dim(self) -> int:
        return self.num_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_kv_heads * self.head_dim

    def _layer_tensors(self) -> list[int]:
        """numel of every parameter tensor of one decoder layer."""
        h, q, kv, i = self.hidden_size, self.q_dim, self.kv_dim, self.intermediate_size
        sizes = [h * q, h * kv, h * kv, q * h, h * i, h * i, i * h, h, h]
        if self.qkv_bias:
            sizes += [q, kv, kv]
        if self.o_bias:
            sizes += [h]
        if self.mlp_bias:
            sizes += [i, i, h]
        if self.qk_norm:
            sizes += [self.head_dim, self.head_dim]
        return sizes

    def _outer_tensors(self) -> list[int]:
        """numel of the tensors outside the layers: embeddings, final norm, untied head."""
        sizes = [self.vocab_size * self.hidden_size, self.hidden_size]
        if not self.tie_word_embeddings:
            sizes.append(self.vocab_size * self.hidden_size)
        return sizes

    @property
    def layer_params(self) -> int:
        return sum(self._layer_tensors())

    @property
    def outer_params(self) -> int:
        """Parameters outside the decoder layers (FSDP's root unit)."""
        return sum(self._outer_tensors())

    @property
    def matmul_params(self) -> int:
        """Parameters of the linear layers (bias included): what bf16 autocast casts. The
        embedding lookup and the norms stay in the weights' dtype."""
        norms = self.num_layers * (2 * self.hidden_size + (2 * self.head_dim if self.qk_norm else 0)) + self.hidden_size
        embedding = 0 if self.tie_word_embeddings else self.vocab_size * self.hidden_size
        return self.param_count - norms - embedding

    @property
    def param_count(self) -> int:
        return self.num_layers * self.layer_params + self.outer_params

    @property
    def param_tensors(self) -> int:
        """Number of parameter tensors (AdamW keeps one ``step`` scalar per tensor)."""
        return self.num_layers * len(self._layer_tensors()) + len(self._outer_tensors())

    @property
    def largest_tensor(self) -> int:
        return max(self._layer_tensors() + self._outer_tensors())

    def describe(self) -> str:
        tied = "tied" if self.tie_word_embeddings else "untied"
        return (f"{self.num_layers} layers, hidden {self.hidden_size}, {self.num_heads} heads / "
                f"{self.num_kv_heads} kv, mlp {self.intermediate_size}, vocab {self.vocab_size}, {tied} embeddings")


def known_shape(name: str) -> dict[str, Any] | None:
    """The built-in config of ``name`` ('Qwen/Qwen2.5-Coder-7B-Instruct' or its last part, any case)."""
    key = name.strip().rstrip("/").lower()
    for full, config in KNOWN_SHAPES.items():
        if key in (full.lower(), full.split("/")[-1].lower()):
            return config
    return None


def _cached_config(name: str) -> Path | None:
    """config.json of hub repo ``name`` if the local Hugging Face cache holds it (no network)."""
    if name.count("/") != 1 or name.startswith((".", "/")):
        return None
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:  # pragma: no cover - huggingface_hub comes with transformers
        return None
    try:
        found = try_to_load_from_cache(name, "config.json")
    except Exception:  # an odd name is simply not cached
        return None
    return Path(found) if isinstance(found, str) else None


def read_config_file(path: Path, name: str = "") -> ModelShape:
    """Read one config.json file."""
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable config.json ({exc.__class__.__name__})") from exc
    if not isinstance(data, dict):
        raise InputError(f"{path}: not a model config (expected a JSON object)")
    return ModelShape.from_config(data, name=name or path.parent.name, source=str(path))


def resolve_shape(ref: str) -> ModelShape:
    """A model reference -> its shape: a config.json, a folder with one, the local HF cache, or
    the built-in table. Anything else is an InputError naming what was tried."""
    ref = str(ref).strip()
    if not ref:
        raise InputError("no model to plan for: set model.path or plan.model, or pass --model-config PATH")
    path = Path(ref).expanduser()
    if path.is_file():
        return read_config_file(path)
    if path.is_dir():
        if (path / "config.json").is_file():
            return read_config_file(path / "config.json", name=path.name)
        raise InputError(f"{path} has no config.json; pass --model-config PATH to its config.json")
    cached = _cached_config(ref)
    if cached is not None:
        return read_config_file(cached, name=ref)
    table = known_shape(ref)
    if table is not None:
        full = next(k for k, v in KNOWN_SHAPES.items() if v is table)
        return ModelShape.from_config(table, name=full, source="built-in table")
    raise InputError(f"unknown model shape {ref!r}: not a folder or config.json here, not in the local "
                     f"cache, not one of the built-in shapes ({', '.join(k.split('/')[-1] for k in KNOWN_SHAPES)}); "
                     "pass --model-config PATH")


def tiny_model_config(vocab_size: int = 2048) -> dict[str, Any]:
    """The shape of the tiny offline model (``swe-srl init-model``, small vocabulary), which a
    train config without ``model.path`` runs on."""
    return {"model_type": "qwen2", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 2,
            "num_attention_heads": 2, "num_key_value_heads": 2, "vocab_size": vocab_size,
            "tie_word_embeddings": True, "torch_dtype": "float32"}
