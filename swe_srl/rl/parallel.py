"""How the trained model is spread over the processes (``run.parallel``), and what FSDP asks
of the training loop.

``ddp``: every process holds the whole model and sums gradients once per optimizer step
(:func:`swe_srl.rl.distributed.sync_gradients`). ``fsdp``: FSDP2's ``fully_shard`` on each
decoder layer and on the root, so every process holds 1/N of the weights, gradients and AdamW
states; a layer's weights are all-gathered just before it runs (in bf16 with ``run.precision``
bf16, master weights and gradient reductions staying float32) and its gradients are
reduce-scattered right after its backward.

Two consequences for the loop:

- Every FSDP forward and backward is a collective, but dynamic sampling and token budgets give
  the ranks different numbers of micro-batches. :func:`aligned_passes` tops each rank up to the
  maximum over ranks with zero-weight passes on a one-token batch: the same collectives in the
  same order on every rank, and gradients that the padding leaves unchanged.
- Sampling runs a different number of forward passes on each rank (other prompts, other
  lengths, other stops). It runs inside :func:`full_weights`: every unit gathered once, then no
  collective at all until the weights are sharded again.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import torch
import torch.distributed as dist

from ..config import RunConfig
from ..errors import ConfigError
from .distributed import Dist, start_group
from .hf_model import base_model, checkpointable
from .logprobs import TokenBatch, autocast, completion_logprobs

if TYPE_CHECKING:  # the run's state, handed down (imported for types only: no cycle)
    from .session import Session

T = TypeVar("T")


def transformers_model(model: torch.nn.Module) -> torch.nn.Module:
    """The transformers model inside a peft wrapper (or the model itself): the FSDP root, since
    training calls it through the wrapper and ``generate`` calls it directly, and FSDP makes
    the root of whatever unit runs forward first."""
    return base_model(model)


def fsdp_root(model: torch.nn.Module) -> Any:
    """The root FSDP unit of ``model``, None when it is not sharded."""
    from torch.distributed.fsdp import FSDPModule

    inner = transformers_model(model)
    return inner if isinstance(inner, FSDPModule) else None


def is_sharded(model: torch.nn.Module) -> bool:
    """Whether ``model`` was sharded by :func:`shard_model`."""
    return fsdp_root(model) is not None


def fsdp_units(model: torch.nn.Module) -> list[Any]:
    """The root first, then every decoder layer (``model.modules()`` order)."""
    from torch.distributed.fsdp import FSDPModule

    return [m for m in transformers_model(model).modules() if isinstance(m, FSDPModule)]


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The transformer blocks of a Hugging Face causal LM (peft-wrapped or not): the classes it
    names in ``_no_split_modules``."""
    inner = transformers_model(model)
    names = set(getattr(inner, "_no_split_modules", None) or ())
    layers = [m for m in inner.modules() if type(m).__name__ in names]
    if not layers:
        raise ConfigError(f"run.parallel=fsdp: no decoder layers found in {type(inner).__name__} "
                          "(its _no_split_modules names none); use run.parallel=ddp")
    return layers


def enable_activation_checkpointing(model: torch.nn.Module) -> None:
    """Each decoder layer keeps only its input and is recomputed in the backward pass
    (non-reentrant: composes with FSDP's hooks and with frozen LoRA base weights)."""
    if not getattr(model, "supports_gradient_checkpointing", True):
        raise ConfigError(f"run.activation_checkpointing: {type(model).__name__} does not support it")
    kwargs = {"use_reentrant": False}
    if hasattr(model, "activation_checkpointing_enable"):  # transformers >= 5.x's name
        checkpointable(model).activation_checkpointing_enable(activation_checkpointing_kwargs=kwargs)
    else:
        checkpointable(model).gradient_checkpointing_enable(gradient_checkpointing_kwargs=kwargs)


def ensure_process_group(d: Dist) -> None:
    """FSDP needs a process group even for one process (``python -m swe_srl.cli train`` without
    torchrun): a private one-rank group then."""
    if not dist.is_initialized():
        backend = "nccl" if d.device.type == "cuda" else "gloo"
        start_group(backend, store=dist.HashStore(), rank=0, world_size=1)


def shard_model(model: torch.nn.Module, d: Dist, *, bf16: bool, cpu_offload: bool,
                load: Callable[[torch.nn.Module], object] | None = None) -> torch.nn.Module:
    """``fully_shard`` each decoder layer, then the root (embeddings, final norm, head: tied
    weights stay in one unit). In place; returns ``model``.

    A model built with meta parameters (:mod:`.meta_init`) gets its shards allocated right
    after sharding, and ``load`` fills them (each rank reads only its rows), before the first
    forward below."""
    from torch.distributed.fsdp import CPUOffloadPolicy, MixedPrecisionPolicy, OffloadPolicy, fully_shard

    ensure_process_group(d)
    mp = (MixedPrecisionPolicy(param_dtype=torch.bfloat16, reduce_dtype=torch.float32) if bf16
          else MixedPrecisionPolicy())
    offload = CPUOffloadPolicy(pin_memory=d.device.type == "cuda") if cpu_offload else OffloadPolicy()
    for layer in decoder_layers(model):
        fully_shard(layer, mp_policy=mp, offload_policy=offload, reshard_after_forward=True)
    # The root's weights are the first needed in the backward pass: kept after the forward.
    # (fully_shard shards in place: ``root`` stays the module, now an FSDPModule too.)
    root = transformers_model(model)
    fully_shard(root, mp_policy=mp, offload_policy=offload, reshard_after_forward=False)
    if any(p.device.type == "meta" for p in model.parameters()):
        from .meta_init import check_loaded, materialize

        materialize(model, "cpu" if cpu_offload else d.device)
        if load is not None:
            load(model)
        check_loaded(model)
    for unit in fsdp_units(model):
        # Losses are already divided by the global token / sequence count: gradients are summed
        # over ranks, not averaged. Plain SUM collectives (gloo has no PREMUL_SUM).
        unit.set_gradient_divide_factor(1.0)
        unit.set_force_sum_reduction_for_comms(True)
    # FSDP initialises lazily, at the first forward, from the unit that runs it: one tiny
    # forward through the root now (every rank), so that it is the root whatever runs first.
    training = root.training
    root.eval()  # no dropout: no random numbers drawn
    with torch.no_grad():
        root(input_ids=torch.zeros((1, 1), dtype=torch.long, device=d.device), use_cache=False)
    root.train(training)
    forget_forwards(model)
    return model


def prepare_model(model: torch.nn.Module, run: RunConfig, d: Dist, *, bf16: bool,
                  load: Callable[[torch.nn.Module], object] | None = None) -> torch.nn.Module:
    """Activation checkpointing (ddp and fsdp) and, for fsdp, sharding; before the optimizer
    is built (it must hold the sharded parameters). ``load``: see :func:`shard_model`."""
    if run.activation_checkpointing:
        enable_activation_checkpointing(model)
    if run.parallel == "fsdp":
        shard_model(model, d, bf16=bf16, cpu_offload=run.cpu_offload, load=load)
    return model


def _restore_resharding(model: torch.nn.Module) -> None:
    root = fsdp_root(model)
    for unit in fsdp_units(model):
        unit.set_reshard_after_forward(unit is not root, recurse=False)


@contextlib.contextmanager
def full_weights(model: torch.nn.Module) -> Iterator[None]:
    """Every FSDP unit gathered (one all-gather each: every rank must enter) and kept through
    any number of forward passes, then sharded again. A no-op for an unsharded model."""
    units = fsdp_units(model)
    if not units:
        yield
        return
    try:
        for unit in units:
            unit.set_reshard_after_forward(False, recurse=False)
            unit.unshard()
        yield
    finally:
        forget_forwards(model)
        _restore_resharding(model)


def forget_forwards(model: torch.nn.Module) -> None:
    """Reshard and drop FSDP's record of the forward passes run without a backward (sampling, a
    frozen reference): backward prefetching reads that record, and a stale one would differ
    between ranks. Local, no collective."""
    root = fsdp_root(model)
    if root is None:
        return
    if hasattr(root, "reset_iter_state"):
        root.reset_iter_state()
    else:  # pragma: no cover - older torch: reshard only
        for unit in fsdp_units(model):
            unit.reshard()


def max_over_ranks(d: Dist, value: int) -> int:
    if not d.distributed:
        return value
    # NCCL moves CUDA tensors only, gloo CPU ones.
    t = torch.tensor([value], dtype=torch.int64, device=d.device if d.device.type == "cuda" else "cpu")
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return int(t.item())


def aligned_passes(session: Session, parts: Iterable[T], ref_model: torch.nn.Module | None = None) -> Iterator[T]:
    """This rank's micro-batches; with a sharded model, then as many zero-weight passes as it
    takes to reach the most micro-batches of any rank (see the module docstring). Each pass of
    the caller must be one forward of ``session.model`` (and of ``ref_model``, when given),
    then one backward. Under ddp: ``parts`` unchanged, no collective."""
    if not is_sharded(session.model):
        yield from parts
        return
    parts = list(parts)
    most = max_over_ranks(session.dist, len(parts))
    for part in parts:
        yield part
        if ref_model is not None:
            forget_forwards(ref_model)
    for _ in range(most - len(parts)):
        padding_pass(session, ref_model)


def padding_pass(session: Session, ref_model: torch.nn.Module | None = None) -> None:
    """One forward + backward through every unit on a one-token prompt and completion, with
    loss 0 * log-probs: the collectives of a real pass, a zero gradient."""
    pad = session.tokenizer.pad_token_id
    batch = TokenBatch.build([[pad]], [[pad]], pad, session.dist.device)
    with autocast(session.dist.device, session.bf16):
        logprobs = completion_logprobs(session.model, batch)
        if ref_model is not None:
            with torch.no_grad():
                completion_logprobs(ref_model, batch)
    (logprobs.sum() * 0.0).backward()
    if ref_model is not None:
        forget_forwards(ref_model)


def clip_sharded_grad_norm_(params: Sequence[torch.Tensor], max_norm: float, d: Dist) -> float:
    """``clip_grad_norm_`` for sharded gradients; returns the global norm before clipping.

    Computed on each rank's shards, with the one collective on the communication device:
    under ``run.cpu_offload`` the shards live in CPU memory, and torch's DTensor path would
    all-reduce CPU tensors over NCCL, which has no CPU backend."""
    local = [_local(p.grad) for p in params if p.grad is not None]  # the caller passes those with one
    if not local:
        return 0.0
    squares = torch.stack([torch.linalg.vector_norm(g, dtype=torch.float32) for g in local]).square().sum()
    squares = squares.to(d.device if d.device.type == "cuda" else "cpu")
    if d.distributed:
        dist.all_reduce(squares, op=dist.ReduceOp.SUM)
    norm = squares.sqrt()
    scale = torch.clamp(max_norm / (norm + 1e-6), max=1.0)  # what clip_grad_norm_ multiplies by
    with torch.no_grad():
        for g in local:
            g.mul_(scale.to(device=g.device, dtype=g.dtype))
    return float(norm)


def _local(t: torch.Tensor) -> torch.Tensor:
    """This rank's shard of a DTensor (``to_local``), or the tensor itself."""
    return t.to_local() if hasattr(t, "to_local") else t


def _local_bytes(t: torch.Tensor | None) -> int:
    if t is None or not isinstance(t, torch.Tensor):
        return 0
    local = _local(t)
    return local.numel() * local.element_size()


def state_bytes(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, int]:
    """Bytes THIS process holds of the parameters, their gradients and the optimizer states
    (its shards under fsdp; everything under ddp)."""
    params = list(model.parameters())
    optim = sum(_local_bytes(v) for state in optimizer.state.values() for v in state.values())
    return {"params": sum(_local_bytes(p) for p in params),
            "grads": sum(_local_bytes(p.grad) for p in params),
            "optimizer": optim}
