"""This process's place in a training run: the process group (torchrun), collectives over
ranks, seeding, and the gradient all-reduce.

Multi-process runs (``torchrun`` / ``accelerate launch``: ``WORLD_SIZE`` > 1) all-reduce
gradients explicitly after the local backward passes instead of wrapping the model in
``DistributedDataParallel``. Dynamic sampling keeps a different number of groups on each rank,
and DDP's hooks deadlock when ranks run different numbers of backward passes; one all-reduce
per optimizer step over losses normalised by the GLOBAL count gives the same update as one
process on the whole batch.
"""

from __future__ import annotations

import datetime
import logging
import os
import random
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
import torch.distributed as dist

_group_started = False  # a process group was started in this process (see exit_process)

# Gradients are all-reduced in flat buckets of this many elements: few collective calls,
# bounded extra memory.
BUCKET_ELEMENTS = 16 * 1024 * 1024


@dataclass(frozen=True)
class Dist:
    """This process's place in the run (world_size 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def all_sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sum over ranks (float64, so counts stay exact)."""
        t = torch.tensor(list(values), dtype=torch.float64, device=self._comm_device)
        if self.distributed:
            dist.all_reduce(t, op=dist.ReduceOp.SUM)
        return t.tolist()

    def gather(self, obj: Any) -> list[Any]:
        """Every rank's ``obj``, in rank order, on every rank."""
        if not self.distributed:
            return [obj]
        out: list[Any] = [None] * self.world_size
        dist.all_gather_object(out, obj)
        return out

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    @property
    def _comm_device(self) -> torch.device:
        # NCCL only moves CUDA tensors; gloo only CPU ones.
        return self.device if self.device.type == "cuda" else torch.device("cpu")


def init_distributed(timeout_s: float | None = None) -> Dist:
    """Join the process group torchrun set up (nccl on GPU, gloo on CPU), or run alone.
    ``timeout_s``: how long a collective waits for the other ranks (None = torch's default);
    it applies when this call starts the group, not to one already started."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank)
        device = torch.device("cuda", local_rank)
    else:
        device = torch.device("cpu")
    if world > 1 and not dist.is_initialized():
        timeout = datetime.timedelta(seconds=timeout_s) if timeout_s else None
        start_group("nccl" if device.type == "cuda" else "gloo", timeout=timeout)
    return Dist(rank=rank, world_size=world, local_rank=local_rank, device=device)


def shutdown_distributed() -> None:
    if dist.is_available() and dist.is_initialized():
        dist.destroy_process_group()


def start_group(backend: str, **kwargs: Any) -> None:
    """``dist.init_process_group``, remembered: the one place this package starts a group."""
    global _group_started
    dist.init_process_group(backend, **kwargs)
    _group_started = True


def group_started() -> bool:
    """Whether this process started a process group (it may have ended it since)."""
    return _group_started


def exit_process(code: int = 0) -> None:
    """End a process that started a process group, skipping the interpreter's finalization;
    returns (does nothing) in a process that never started one.

    The group's backend outlives ``destroy_process_group`` (on torch 2.13 gloo's worker and
    transport threads still run after it: one functional collective, as FSDP2 issues, is enough,
    and they were also running after a ddp ``train()``), so C++ destructors tear it down at
    exit, and that aborted a rank now and then
    ("terminate called without an active exception", SIGABRT: torchrun then reports the run
    failed after it finished). Everything a run writes is closed by then; this flushes the
    standard streams and the log handlers, then leaves with ``os._exit(code)``. The CLI calls
    it; a script of one's own that calls ``train()`` under torchrun ends with it too."""
    if not _group_started:
        return
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # a closed or broken stream: nothing left to save
            pass
    logging.shutdown()
    os._exit(code)


def seed_everything(seed: int) -> None:
    """Seed python, numpy and torch (all devices)."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def shard(items: Sequence[Any], d: Dist) -> list[Any]:
    """This rank's share of a global list (strided, so ranks differ by at most one item)."""
    return list(items[d.rank::d.world_size])


def sync_gradients(model: torch.nn.Module, d: Dist) -> None:
    """Sum gradients over ranks (losses are already divided by the global count)."""
    if not d.distributed:
        return
    bucket: list[torch.Tensor] = []
    size = 0
    for p in model.parameters():
        if not p.requires_grad:
            continue
        grad = p.grad if p.grad is not None else torch.zeros_like(p)
        p.grad = grad  # every rank must contribute the same tensors, in the same order
        bucket.append(grad)
        size += grad.numel()
        if size >= BUCKET_ELEMENTS:
            _all_reduce_bucket(bucket)
            bucket, size = [], 0
    if bucket:
        _all_reduce_bucket(bucket)


def _all_reduce_bucket(grads: list[torch.Tensor]) -> None:
    flat = torch.cat([g.reshape(-1) for g in grads])
    dist.all_reduce(flat, op=dist.ReduceOp.SUM)
    offset = 0
    for g in grads:
        g.copy_(flat[offset:offset + g.numel()].view_as(g))
        offset += g.numel()
