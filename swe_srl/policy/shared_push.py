"""Weight-push buckets handed to a colocated vLLM engine through shared memory, not pickled.

vLLM's RPC pickles what it sends: a bucket pickled in the trainer exists there ~2x (the bytes,
then the message), and ~4x in each engine process (message, decoded tensors, and the engine
core sends it on to its worker) — measured in benchmarks/README.md. The engine runs on the
trainer's own host (each rank starts its own engine), so each tensor is instead written, as it
comes, into a file of its own in a per-push folder on a memory file system (``/dev/shm``); the
RPC carries only the files' names, dtypes and shapes, and the worker maps the files
(``torch.from_file``: the pages are the file's, not a copy) for vLLM's in-place reload. The
trainer holds one cast tensor at a time; the bucket exists once, in the memory file system,
and is deleted once the engine has loaded it. Where no such file system has room for two
buckets (a container's 64 MB ``/dev/shm``, say), the push pickles as before.
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from .weight_push import Named, reload_in_worker

SHM_ROOT = "/dev/shm"


@dataclass(frozen=True)
class SharedTensor:
    """A tensor written to a file of its own: what the RPC carries instead of its bytes."""

    path: str
    dtype: str  # torch dtype name, e.g. "bfloat16"
    shape: tuple[int, ...]
    itemsize: int

    def numel(self) -> int:
        return math.prod(self.shape)

    def element_size(self) -> int:
        return self.itemsize

    def load(self) -> Any:
        """The tensor, mapped from its file (the file is deleted once the engine has loaded it)."""
        import torch

        dtype = getattr(torch, self.dtype)
        if self.numel() == 0:
            return torch.empty(self.shape, dtype=dtype)
        # MAP_SHARED: the pages are the file's own (a private mapping would be read into a copy).
        return torch.from_file(self.path, shared=True, size=self.numel(), dtype=dtype).view(self.shape)


def write_shared(tensor: Any, folder: str, index: int) -> SharedTensor:
    """Write ``tensor`` (on the CPU, contiguous) into ``folder``; the caller drops its copy."""
    import torch

    path = os.path.join(folder, f"{index:06d}")
    flat = tensor.reshape(-1)
    with open(path, "wb") as fh:
        if flat.numel():
            fh.write(memoryview(flat.view(torch.uint8).numpy()))
    return SharedTensor(path, str(tensor.dtype).removeprefix("torch."), tuple(tensor.shape), tensor.element_size())


def to_shared(named: Iterable[Named], folder: str) -> Iterator[tuple[str, Any]]:
    """Each ``(name, tensor)`` of the stream written to ``folder`` as it comes; a tensor the
    file system has no room for stays a tensor (pickled with its bucket)."""
    for index, (name, tensor) in enumerate(named):
        try:
            yield name, write_shared(tensor, folder, index)
        except OSError:  # full (ENOSPC): this one travels the old way
            _unlink(os.path.join(folder, f"{index:06d}"))
            yield name, tensor


def reload_shared_in_worker(items: list[tuple[str, Any]], worker: Any) -> None:
    """Runs inside each vLLM worker, once per bucket: map the bucket's files and reload them."""
    reload_in_worker([(name, t.load() if isinstance(t, SharedTensor) else t) for name, t in items], worker)


def remove_files(items: Iterable[tuple[str, Any]]) -> None:
    for _, shared in items:
        if isinstance(shared, SharedTensor):
            _unlink(shared.path)


def _unlink(path: str) -> None:
    try:
        os.unlink(path)
    except FileNotFoundError:
        pass


def shared_folder(bucket_bytes: int, root: str = SHM_ROOT) -> str | None:
    """A new folder for one push on a memory file system with room for two buckets, or None."""
    try:
        stats = os.statvfs(root)
    except OSError:
        return None
    if stats.f_bavail * stats.f_frsize < 2 * bucket_bytes:
        return None
    try:
        return tempfile.mkdtemp(prefix="swe-srl-push-", dir=root)
    except OSError:
        return None


def remove_folder(folder: str | None) -> None:
    if folder:
        shutil.rmtree(folder, ignore_errors=True)
