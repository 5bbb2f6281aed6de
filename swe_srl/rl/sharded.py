"""Sharded checkpoints of ``run.parallel=fsdp`` runs (torch.distributed.checkpoint).

Every rank writes its own shards of the model and the AdamW states into ``sharded/`` of the
checkpoint's temp directory, in parallel; rank 0 then adds ``hf/`` (config and tokenizer, no
weights: what rebuilds the model), the RNG states of every rank, the trainer state and the
manifest, and renames the folder into place exactly as for a ddp checkpoint
(:func:`swe_srl.rl.checkpoint.commit_checkpoint`): a kill at any moment leaves the previous
checkpoint the newest complete one. All ranks must see the same run directory (one machine, or
a shared filesystem).

A sharded checkpoint loads on any number of processes (DCP reshards), and without a process
group at all (:func:`load_model_weights`, for ``swe-srl export``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..policy import LoraOptions
from . import checkpoint as ckpt
from .distributed import Dist
from .integrity import CorruptCheckpoint, brief
from .meta_init import parameters_on_meta


def base_model(model: Any) -> Any:
    """The transformers model inside a peft wrapper (or the model itself)."""
    return model.get_base_model() if hasattr(model, "get_base_model") else model


def save_sharded_checkpoint(run_dir: str | Path, step: int, *, model: Any, optimizer: Any, tokenizer: Any,
                            d: Dist, rng_states: list[dict[str, Any]], state: Mapping[str, Any],
                            keep: int) -> Path | None:
    """Every rank calls it; returns the checkpoint folder on rank 0, None elsewhere."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    tmp = ckpt.begin_checkpoint(run_dir, step) if d.is_main else None
    tmp = Path(d.gather(str(tmp) if tmp is not None else None)[0])
    model_state, optim_state = get_state_dict(model, optimizer)
    dcp.save({"model": model_state, "optimizer": optim_state}, checkpoint_id=tmp / ckpt.SHARDED_DIR)
    final = None
    if d.is_main:
        inner = base_model(model)
        inner.config.save_pretrained(tmp / ckpt.HF_DIR)
        if getattr(inner, "generation_config", None) is not None:
            inner.generation_config.save_pretrained(tmp / ckpt.HF_DIR)
        tokenizer.save_pretrained(tmp / ckpt.HF_DIR)
        final = ckpt.commit_checkpoint(run_dir, tmp, step, state=state, rng_states=rng_states, keep=keep)
    d.barrier()
    return final


def load_sharded_state(found: ckpt.Checkpoint, model: Any, optimizer: Any) -> None:
    """Fill the sharded ``model`` and ``optimizer`` (built as for a fresh run) from ``found``."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    model_state, optim_state = get_state_dict(model, optimizer)
    try:
        dcp.load({"model": model_state, "optimizer": optim_state}, checkpoint_id=found.path / ckpt.SHARDED_DIR)
    except Exception as exc:  # DCP wraps reader errors in CheckpointException
        raise CorruptCheckpoint(f"checkpoint {found.path}: its sharded state does not load into this run's "
                                f"model and optimizer ({brief(exc)})") from exc
    set_state_dict(model, optimizer, model_state_dict=model_state, optim_state_dict=optim_state)


def build_model(found: ckpt.Checkpoint, *, dtype: torch.dtype = torch.float32, lora: LoraOptions | None = None,
                attn_implementation: str = "", meta: bool = False) -> tuple[Any, Any]:
    """(model, tokenizer) of a sharded checkpoint's architecture, weights not loaded yet
    (random init; :func:`load_model_weights` or :func:`load_sharded_state` fill them).
    ``meta`` (no LoRA): parameters on the meta device, allocated only as shards once the model
    is sharded (:mod:`.meta_init`), so no rank ever holds the whole model."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    from ..policy.hf import apply_lora

    hf = found.path / ckpt.HF_DIR
    try:
        config = AutoConfig.from_pretrained(hf)
        tokenizer = AutoTokenizer.from_pretrained(hf)
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"checkpoint {found.path}: {ckpt.HF_DIR}/ cannot be loaded ({brief(exc)})") from exc
    kwargs = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with parameters_on_meta() if meta and lora is None else contextlib.nullcontext():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, **kwargs)
    if lora is not None:
        model = apply_lora(model, lora)
    return model, tokenizer


def load_model_weights(found: ckpt.Checkpoint, model: Any) -> None:
    """The model weights of a sharded checkpoint into an unsharded ``model``, in one process
    (no process group needed)."""
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_model_state_dict, set_model_state_dict

    state = get_model_state_dict(model)
    try:
        with warnings.catch_warnings():  # "assuming the intent is to load in a single process": it is
            warnings.filterwarnings("ignore", message="torch.distributed is disabled")
            dcp.load({"model": state}, checkpoint_id=found.path / ckpt.SHARDED_DIR)
    except Exception as exc:
        raise InputError(f"checkpoint {found.path}: its sharded model does not load into "
                         f"{type(base_model(model)).__name__} ({brief(exc)})") from exc
    set_model_state_dict(model, state)
