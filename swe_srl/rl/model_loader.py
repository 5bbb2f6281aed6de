"""Where a run's models come from: the policy of a fresh run (under fsdp built on the meta
device, each rank filling only its own shards), the policy of a checkpoint (whole, a LoRA
adapter over the start model, or sharded), and the frozen KL reference. A
:class:`~swe_srl.rl.session.Session` holds one :class:`ModelLoader`.
"""

from __future__ import annotations

import copy
import logging
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from ..config import TrainConfig
from ..errors import InputError, SweSrlError
from ..policy import PolicyConfig
from ..policy.base import DType
from . import checkpoint as ckpt
from . import parallel, sharded
from .distributed import Dist
from .integrity import CorruptCheckpoint, brief

if TYPE_CHECKING:  # transformers is imported when a model loads, not with this module
    from ..policy.hf import HFPolicy

log = logging.getLogger(__name__)

# Fills this rank's shards of a model built with meta parameters, after sharding (:mod:`.meta_init`).
ShardLoader = Callable[[torch.nn.Module], object]


def frozen(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` in eval mode with every parameter frozen (a KL reference)."""
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


class ModelLoader:
    """Loads one run's policy and KL reference (``model.*``, ``run.parallel``) on this
    process's device."""

    def __init__(self, config: TrainConfig, dist: Dist) -> None:
        self.config, self.dist = config, dist
        # fsdp: the policy's shards are filled after sharding (meta_init), never the whole model.
        self.shard_loader: ShardLoader | None = None

    def _dtype_name(self) -> DType:
        """The trained weights' dtype, ``model.dtype`` with ``auto`` read as float32."""
        return "float32" if self.config.model.dtype == "auto" else self.config.model.dtype

    def meta_model(self, model_path: Path, dtype: torch.dtype | None = None
                   ) -> tuple[torch.nn.Module, Any, ShardLoader] | None:
        """(model with meta parameters, tokenizer, the loader that fills each rank's shards
        after sharding) when the folder's safetensors cover the model (:mod:`.meta_init`);
        None when they do not (the caller loads the whole model, as before)."""
        from transformers import AutoTokenizer, GenerationConfig

        from ..policy.hf import resolve_dtype
        from . import meta_init

        cfg = self.config.model
        dtype = dtype or resolve_dtype(self._dtype_name(), self.dist.device)
        model = meta_init.build_on_meta(model_path, dtype=dtype, attn_implementation=cfg.attn_implementation)
        if not meta_init.covers(model, model_path):
            log.info("%s: safetensors do not name every parameter; loading the whole model on each rank", model_path)
            return None
        if (Path(model_path) / "generation_config.json").is_file():  # eos ids, as from_pretrained reads them
            model.generation_config = GenerationConfig.from_pretrained(model_path)
        try:
            tokenizer = AutoTokenizer.from_pretrained(model_path)
        except (OSError, ValueError) as exc:
            raise InputError(f"cannot load the tokenizer of {model_path}: {brief(exc)}") from exc
        return model, tokenizer, lambda m: meta_init.load_local_shards(m, model_path)

    def policy(self, model_path: Path, *, lora: bool = True, adapter: Path | None = None,
               meta: bool = False) -> HFPolicy:
        """The policy from a model folder, with ``model.lora`` adapters when ``lora`` (fresh, or
        the saved ``adapter``). ``meta`` (fsdp without LoRA): parameters on the meta device,
        filled per rank after sharding by :attr:`shard_loader` (:meth:`meta_model`)."""
        from ..policy.hf import HFPolicy

        cfg = self.config.model
        if meta and self.config.run.parallel == "fsdp" and (cfg.lora is None or not lora):
            built = self.meta_model(model_path)
            if built is not None:
                model, tokenizer, self.shard_loader = built
                return HFPolicy(model, tokenizer)
        dtype = self._dtype_name()
        options = cfg.lora if lora else None
        if options is not None and adapter is not None:
            options = replace(options, adapter_path=str(adapter))
        # Fresh LoRA weights are random: the same on every rank (the run's seed, not the rank's),
        # and drawn without moving this rank's random stream.
        with torch.random.fork_rng(devices=[self.dist.device] if self.dist.device.type == "cuda" else []):
            torch.manual_seed(self.config.run.seed)
            policy = HFPolicy.from_config(PolicyConfig(backend="hf", model=str(model_path), dtype=dtype,
                                                       device=str(self.dist.device), lora=options))
        if cfg.attn_implementation:
            policy.model.set_attn_implementation(cfg.attn_implementation)
        return policy

    def sharded_policy(self, found: ckpt.Checkpoint) -> HFPolicy:
        """The architecture and tokenizer of a sharded checkpoint (its weights are loaded with
        the optimizer's, once the model is sharded)."""
        from ..policy.hf import HFPolicy, resolve_dtype

        cfg = self.config.model
        dtype = resolve_dtype(self._dtype_name(), self.dist.device)
        model, tokenizer = sharded.build_model(found, dtype=dtype, lora=cfg.lora, meta=cfg.lora is None,
                                               attn_implementation=cfg.attn_implementation)
        if cfg.lora is not None:  # built whole (meta parameters are allocated when sharded)
            model = model.to(self.dist.device)
        return HFPolicy(model, tokenizer)

    def checkpoint_policy(self, found: ckpt.Checkpoint, start_model: Callable[[], Path]) -> HFPolicy:
        """The policy from a checkpoint's model folder (a LoRA checkpoint's adapter over
        ``start_model()``); a file damaged after it was verified is a one-line error naming the
        checkpoint, not a traceback from deep inside the loader."""
        wanted = self.config.run.parallel
        if found.sharded != (wanted == "fsdp"):
            written = "fsdp" if found.sharded else "ddp"
            raise InputError(f"--resume: checkpoint {found.path} was written with run.parallel={written}, this run "
                             f"has {wanted}; resume with --set run.parallel={written}")
        try:
            if found.sharded:
                return self.sharded_policy(found)
            if self.config.model.lora is not None:  # the checkpoint holds the adapter only
                return self.policy(start_model(), adapter=found.model_dir)
            return self.policy(found.model_dir)
        except Exception as exc:  # a damaged file raises whatever its reader raises (SafetensorError, ...)
            if isinstance(exc, (SweSrlError, MemoryError, torch.cuda.OutOfMemoryError)):
                raise
            raise CorruptCheckpoint(f"checkpoint {found.path}: its model cannot be loaded ({brief(exc)})") from exc

    def reference(self, model: torch.nn.Module, *, bf16: bool, resumed: bool,
                  start_model: Callable[[], Path]) -> torch.nn.Module:
        """The frozen KL reference for the trained ``model``: the run's initial model, also
        after a resume (``start_model()``, not the resumed weights); sharded like ``model``."""
        wanted = self.config.grpo.reference_dtype
        dtype = torch.bfloat16 if wanted == "bfloat16" or (wanted == "auto" and bf16) else None
        if not resumed and not parallel.is_sharded(model):
            return frozen(copy.deepcopy(model).to(dtype=dtype) if dtype else copy.deepcopy(model))
        start = start_model()
        if parallel.is_sharded(model):  # sharded like the policy: its forwards are collective too
            load: ShardLoader | None = None
            built = self.meta_model(start, dtype=dtype)
            if built is not None:
                ref, load = built[0], built[2]
            else:
                ref = self.policy(start, lora=False).model
                ref = ref.to(dtype=dtype) if dtype else ref
            parallel.shard_model(ref, self.dist, bf16=bf16, cpu_offload=self.config.run.cpu_offload, load=load)
            return frozen(ref)
        ref = self.policy(start, lora=False).model
        return frozen(ref.to(dtype=dtype) if dtype else ref)
