"""Loading a model for ``run.parallel=fsdp`` without any process holding it whole.

The plain way (``from_pretrained`` on every rank, then ``fully_shard``) puts the whole float32
model in every process's memory before sharding drops 1 - 1/N of it: a 32B model wants ~131 GB
per GPU at load, twice an 80 GB card, before a single step. Here instead:

1. the architecture is built with its PARAMETERS on the meta device (no memory, no random
   init) and its buffers real (rotary ``inv_freq`` and the like are computed by the model's own
   code, on the CPU: they are small and often not in the checkpoint at all);
2. ``fully_shard`` splits the meta parameters (FSDP2 shards dim 0 over the ranks);
3. each rank allocates only its shards (``to_empty``) and puts the buffers back;
4. each rank reads only ITS rows of each tensor from the checkpoint's safetensors files, with
   plain file reads straight into its shards (the other rows are never read, nothing is
   memory-mapped), one tensor at a time.

Peak memory at load is then about the rank's shards plus one slice, not the model. The same
route builds the frozen KL reference of a sharded run and the architecture a sharded
checkpoint's weights are restored into (there, step 4 is DCP's). Checkpoints whose tensor names
do not cover the model's parameters (renamed on load, ``.bin`` files) are loaded the plain way;
:func:`covers` says which.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import torch

from ..errors import InputError

log = logging.getLogger(__name__)

_INDEX = "model.safetensors.index.json"
_SINGLE = "model.safetensors"


@contextmanager
def parameters_on_meta() -> Iterator[None]:
    """Every parameter registered inside the block lives on the meta device; buffers do not.
    (Layers allocate a parameter and initialise it in ``__init__``: here the allocation moves
    to meta at once and the initialisation is a no-op on meta.)"""
    original = torch.nn.Module.register_parameter

    def register(self: torch.nn.Module, name: str, param: torch.nn.Parameter | None) -> None:
        if param is not None and param.device.type != "meta":
            param = torch.nn.Parameter(param.detach().to("meta"), requires_grad=param.requires_grad)
        original(self, name, param)

    torch.nn.Module.register_parameter = register  # type: ignore[method-assign]
    try:
        yield
    finally:
        torch.nn.Module.register_parameter = original  # type: ignore[method-assign]


def build_on_meta(model_dir: str | Path, *, dtype: torch.dtype, attn_implementation: str = "",
                  trust_remote_code: bool = False) -> Any:
    """The causal LM of ``model_dir`` (its ``config.json``, a folder of ours or a checkpoint's
    ``hf/``) with meta parameters and real buffers."""
    from transformers import AutoConfig, AutoModelForCausalLM

    config = AutoConfig.from_pretrained(model_dir, trust_remote_code=trust_remote_code)
    kwargs: dict[str, Any] = {"attn_implementation": attn_implementation} if attn_implementation else {}
    with parameters_on_meta():
        model = AutoModelForCausalLM.from_config(config, dtype=dtype, trust_remote_code=trust_remote_code, **kwargs)
    return model


def materialize(model: torch.nn.Module, device: torch.device | str) -> None:
    """Allocate the (sharded) meta parameters on ``device``, uninitialised, and keep the buffers'
    values (``to_empty`` would otherwise leave them uninitialised too)."""
    saved = {name: buf.detach().clone() for name, buf in model.named_buffers() if buf.device.type != "meta"}
    shared: dict[int, list[tuple[torch.nn.Module, str]]] = {}  # tied weights (embedding / head)
    for module in model.modules():
        for name, param in module._parameters.items():
            if param is not None:
                shared.setdefault(id(param), []).append((module, name))
    model.to_empty(device=device)
    for owners in shared.values():  # to_empty gives each owner its own new tensor: tie them again
        first = getattr(owners[0][0], owners[0][1])
        for module, name in owners[1:]:
            if getattr(module, name) is not first:
                setattr(module, name, first)
    with torch.no_grad():
        for name, buf in model.named_buffers():
            if name in saved:
                buf.copy_(saved[name].to(buf.device))


def tensor_files(model_dir: str | Path) -> dict[str, Path]:
    """Checkpoint tensor name -> the safetensors file holding it; empty when the folder has no
    safetensors weights."""
    folder = Path(model_dir)
    index = folder / _INDEX
    if index.is_file():
        weight_map = json.loads(index.read_text())["weight_map"]
        return {name: folder / file for name, file in weight_map.items()}
    single = folder / _SINGLE
    if not single.is_file():
        return {}
    from safetensors import safe_open

    with safe_open(str(single), framework="pt") as f:
        return {name: single for name in f.keys()}


def covers(model: torch.nn.Module, model_dir: str | Path) -> bool:
    """Whether ``model_dir``'s safetensors hold a tensor under every parameter name of
    ``model`` (tied parameters counted once): the condition for :func:`load_local_shards`."""
    files = tensor_files(model_dir)
    return bool(files) and all(name in files for name, _ in model.named_parameters())


def _rows(dim0: int, rank: int, world: int) -> tuple[int, int]:
    """The rows of a ``dim0``-row tensor that FSDP2's dim-0 sharding gives ``rank``
    (``torch.chunk``: chunks of ceil(dim0 / world) rows, the last ones shorter or empty)."""
    chunk = -(-dim0 // world)
    start = min(rank * chunk, dim0)
    return start, min(start + chunk, dim0)


def _local_slice(param: torch.Tensor) -> tuple[torch.Tensor, tuple[int, int] | None]:
    """(the tensor to write, the rows of the checkpoint tensor it holds; None: all of it)."""
    try:
        from torch.distributed.tensor import DTensor, Shard
    except ImportError:  # pragma: no cover - torch without distributed
        return param, None
    if not isinstance(param, DTensor):
        return param, None
    placements = tuple(param.placements)
    if param.device_mesh.ndim != 1 or placements != (Shard(0),):
        raise InputError(f"meta-device loading expects FSDP's dim-0 sharding on a 1-D mesh, found {placements}")
    local = param.to_local()
    mesh = param.device_mesh
    rows = _rows(param.shape[0], mesh.get_local_rank(), mesh.size())
    if rows[1] - rows[0] != local.shape[0]:
        raise InputError(f"meta-device loading: this rank's shard has {local.shape[0]} rows, expected "
                         f"rows {rows[0]}:{rows[1]} of {param.shape[0]}")
    return local, rows


_DTYPES = {"F64": torch.float64, "F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16,
           "I64": torch.int64, "I32": torch.int32, "I16": torch.int16, "I8": torch.int8, "U8": torch.uint8,
           "BOOL": torch.bool}


def _header(path: Path) -> tuple[int, dict[str, Any]]:
    """(offset of the data section, the tensor table) of a safetensors file: an 8-byte
    little-endian header length, then a JSON table of name -> dtype, shape, data_offsets."""
    with open(path, "rb") as f:
        size = int.from_bytes(f.read(8), "little")
        table = json.loads(f.read(size))
    table.pop("__metadata__", None)
    return 8 + size, table


def _read_into(f: Any, base: int, entry: Mapping[str, Any], rows: tuple[int, int] | None,
               target: torch.Tensor) -> int:
    """Read rows ``rows`` (all when None) of one safetensors tensor into ``target``, with plain
    file reads: only those bytes are read, and nothing is memory-mapped (mapped pages would count
    against the process as the whole file is touched). Straight into ``target`` when it is a
    contiguous CPU tensor of the file's dtype; else through one slice-sized buffer."""
    dtype = _DTYPES.get(entry["dtype"])
    if dtype is None:
        raise InputError(f"meta-device loading: unsupported safetensors dtype {entry['dtype']}")
    shape = list(entry["shape"])
    row_bytes = dtype.itemsize
    for n in shape[1:]:
        row_bytes *= n
    first, last = rows if rows is not None else (0, shape[0] if shape else 1)
    nbytes = (last - first) * row_bytes if shape else dtype.itemsize
    f.seek(base + entry["data_offsets"][0] + first * row_bytes)
    direct = target.device.type == "cpu" and target.dtype == dtype and target.is_contiguous() and nbytes
    buffer = target if direct else torch.empty(target.shape, dtype=dtype)
    if nbytes:
        view = buffer.view(torch.uint8).reshape(-1).numpy().data if buffer.dim() else \
            buffer.reshape(1).view(torch.uint8).numpy().data  # writable memoryviews of the bytes
        if f.readinto(view) != nbytes:
            raise InputError(f"meta-device loading: {f.name} ends inside its tensor data")
    if not direct:
        target.copy_(buffer.to(device=target.device, dtype=target.dtype))
    return nbytes


def load_local_shards(model: torch.nn.Module, model_dir: str | Path) -> int:
    """Fill this rank's shards of ``model``'s parameters (and any buffer the checkpoint holds)
    from ``model_dir``'s safetensors, reading only this rank's rows of each tensor. Returns
    the number of bytes read."""
    files = tensor_files(model_dir)
    targets: dict[str, torch.Tensor] = dict(model.named_parameters())
    targets.update({n: b for n, b in model.named_buffers() if n in files})
    missing = sorted(set(n for n, _ in model.named_parameters()) - set(files))
    if missing:
        raise InputError(f"{model_dir}: its safetensors lack {len(missing)} of the model's tensors, "
                         f"e.g. {missing[:3]}")
    by_file: dict[Path, list[str]] = {}
    for name in targets:
        by_file.setdefault(files[name], []).append(name)
    read = 0
    with torch.no_grad():
        for path, names in by_file.items():
            base, table = _header(path)
            with open(path, "rb") as f:
                for name in names:
                    entry = table.get(name)
                    if entry is None:
                        raise InputError(f"{path}: no tensor {name} (the index says it is there)")
                    if tuple(entry["shape"]) != tuple(targets[name].shape):
                        raise InputError(f"{path}: {name} has shape {tuple(entry['shape'])}, the model "
                                         f"expects {tuple(targets[name].shape)}")
                    target, rows = _local_slice(targets[name])
                    read += _read_into(f, base, entry, rows, target)
    return read


def check_loaded(model: torch.nn.Module) -> None:
    """No parameter left on the meta device (a bug here, not the user's: raise loudly)."""
    left = [name for name, p in model.named_parameters() if p.device.type == "meta"]
    if left:
        raise RuntimeError(f"meta-device loading left {len(left)} parameter(s) unallocated, e.g. {left[:3]}")


def summary(read_bytes: int, model: torch.nn.Module) -> Mapping[str, float]:
    """What a rank loaded, for the log."""
    local = 0
    for p in model.parameters():
        t = p.to_local() if hasattr(p, "to_local") else p
        local += t.numel() * t.element_size()
    return {"load/read_mb": read_bytes / 2**20, "load/local_param_mb": local / 2**20}
