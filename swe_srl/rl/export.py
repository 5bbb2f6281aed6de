"""Any training checkpoint as a plain ``save_pretrained`` model folder: what ``train --model``,
``eval --model`` and transformers load.

A ddp checkpoint's ``model/`` already is one (copied as is). A sharded (fsdp) checkpoint is
rebuilt from its ``hf/`` config and tokenizer, and its DCP shards are loaded in this one process
(no process group, no GPU). A LoRA run's adapter is merged into the base weights: the sharded
checkpoint holds them; a ddp checkpoint names the model the run started from.
"""

from __future__ import annotations

import os
import shutil
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError
from ..jsonio import write_json_atomic
from ..policy import LoraOptions
from ..provenance import PROVENANCE_FILE, find_model_provenance
from . import checkpoint as ckpt
from . import sharded
from .integrity import verify


def find_checkpoint(source: str | os.PathLike, step: int | None = None) -> ckpt.Checkpoint:
    """A run folder's checkpoint of ``step`` (default: its latest), or a checkpoint folder."""
    source = Path(source)
    if (source / ckpt.STATE_FILE).is_file():
        found = ckpt.load_checkpoint(source)
        if step is not None and found.step != step:
            raise InputError(f"{source} is the checkpoint of step {found.step}, not {step}")
        return found
    if step is None:
        chosen = ckpt.latest_checkpoint(source) if source.is_dir() else None
    else:
        chosen = next((c for c in ckpt.list_checkpoints(source) if c.step == step), None)
    if chosen is None:
        steps = [c.step for c in ckpt.list_checkpoints(source)] if source.is_dir() else []
        have = f"its checkpoints: steps {', '.join(map(str, steps))}" if steps else "it holds no complete checkpoint"
        raise InputError(f"no checkpoint{'' if step is None else f' of step {step}'} in {source} ({have})")
    return chosen


def _sharded_dtype(found: ckpt.Checkpoint) -> torch.dtype:
    """The dtype the weights were trained (and saved) in."""
    from torch.distributed.checkpoint import FileSystemReader
    from torch.distributed.checkpoint.metadata import TensorStorageMetadata

    metadata = FileSystemReader(str(found.path / ckpt.SHARDED_DIR)).read_metadata()
    for key, entry in metadata.state_dict_metadata.items():
        if key.startswith("model.") and isinstance(entry, TensorStorageMetadata):
            return entry.properties.dtype
    raise InputError(f"checkpoint {found.path}: its sharded state holds no model weights")


def load_checkpoint_model(found: ckpt.Checkpoint) -> tuple[Any, Any]:
    """(model with every weight, LoRA merged; tokenizer) of a checkpoint, on the CPU."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    lora = LoraOptions(**found.state["lora"]) if found.state.get("lora") else None
    if found.sharded:
        model, tokenizer = sharded.build_model(found, dtype=_sharded_dtype(found), lora=lora)
        sharded.load_model_weights(found, model)
    elif lora is not None:
        from ..policy import PolicyConfig
        from ..policy.hf import HFPolicy

        start = found.state.get("start_model")
        if not start or not (Path(start) / "config.json").is_file():
            raise InputError(f"checkpoint {found.path} holds a LoRA adapter, and the model it was trained on "
                             f"({start or 'not recorded'}) is not there to merge it into")
        policy = HFPolicy.from_config(PolicyConfig(backend="hf", model=start, dtype="float32", device="cpu",
                                                   lora=replace(lora, adapter_path=str(found.model_dir))))
        model, tokenizer = policy.model, policy.tokenizer
    else:
        model = AutoModelForCausalLM.from_pretrained(found.model_dir)
        tokenizer = AutoTokenizer.from_pretrained(found.model_dir)
    if lora is not None:
        model = model.merge_and_unload()
    return model, tokenizer


def export_checkpoint(source: str | os.PathLike, out: str | os.PathLike, *, step: int | None = None) -> Path:
    """Write the checkpoint (see :func:`find_checkpoint`) to ``out`` as a model folder; the
    folder appears complete or not at all."""
    found = find_checkpoint(source, step)
    verify(found.path)
    out = Path(out)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise InputError(f"{out} already exists and is not an empty folder; pick another -o")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f"{ckpt.TMP_PREFIX}{out.name}.{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        if not found.sharded and not found.state.get("lora"):
            shutil.copytree(found.model_dir, tmp)
        else:
            model, tokenizer = load_checkpoint_model(found)
            model.save_pretrained(tmp)
            tokenizer.save_pretrained(tmp)
        run_provenance = find_model_provenance(found.path)
        if run_provenance is not None:  # eval --model on the exported folder still knows its training data
            write_json_atomic(tmp / PROVENANCE_FILE, run_provenance | {"exported_from": str(found.path)})
        os.replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return out
