"""Are a checkpoint's files intact? A manifest written with the checkpoint, checked before use.

A checkpoint directory renamed into place was complete when it was written, but its files can
still be damaged afterwards: a full disk during a copy, an interrupted ``rsync`` of a run
folder, a bad sector. So :func:`write_manifest` records every file's size and sha256 as the last
file of the checkpoint (inside the temp directory, before the atomic rename), and
:func:`verify` compares the files with it. Checkpoints written before the manifest existed are
checked by parsing instead: every JSON file parses, every safetensors header parses and its
tensors lie inside the file, every shard an index names is there, and every torch file passes
its zip CRCs and loads (``weights_only``, memory-mapped, on the CPU).
"""

from __future__ import annotations

import hashlib
import json
import os
import struct
import zipfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

from ..errors import InputError

MANIFEST_FILE = "manifest.json"
MANIFEST_VERSION = 1
_CHUNK = 8 << 20
_TORCH_SUFFIXES = (".pt", ".bin", ".pth")
RNG_KEYS = ("python", "numpy", "torch")


class CorruptCheckpoint(InputError):
    """A checkpoint file that is missing, truncated, altered or unreadable."""


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _digests(paths: list[Path]) -> list[str]:
    # hashlib releases the GIL on large buffers: files hash in parallel.
    with ThreadPoolExecutor(max_workers=max(1, min(8, os.cpu_count() or 1, len(paths)))) as pool:
        return list(pool.map(sha256_file, paths))


def _files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file() and p.relative_to(root).as_posix() != MANIFEST_FILE)


def write_manifest(root: Path) -> Path:
    """Record the size and sha256 of every file under ``root``; call it after the last other file."""
    files = _files(root)
    entries = {p.relative_to(root).as_posix(): {"size": p.stat().st_size, "sha256": digest}
               for p, digest in zip(files, _digests(files))}
    path = root / MANIFEST_FILE
    path.write_text(json.dumps({"version": MANIFEST_VERSION, "files": entries}, indent=1), encoding="utf-8")
    return path


def verify(root: Path) -> None:
    """Raise :class:`CorruptCheckpoint` naming the first bad file of checkpoint ``root``."""
    try:
        if (root / MANIFEST_FILE).exists():
            _verify_manifest(root)
        else:
            _verify_by_parsing(root)
    except OSError as exc:
        raise CorruptCheckpoint(f"cannot read {exc.filename or root}: {exc.strerror or exc}") from exc


def _verify_manifest(root: Path) -> None:
    try:
        manifest = json.loads((root / MANIFEST_FILE).read_text(encoding="utf-8"))
        expected = {str(rel): (int(e["size"]), str(e["sha256"])) for rel, e in manifest["files"].items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        raise CorruptCheckpoint(f"{MANIFEST_FILE} is unreadable ({brief(exc)})") from exc
    # Sizes first (no reading): a truncated file is named at once.
    for rel, (size, _) in expected.items():
        path = root / rel
        if not path.is_file():
            raise CorruptCheckpoint(f"{rel} is missing")
        actual = path.stat().st_size
        if actual != size:
            raise CorruptCheckpoint(f"{rel} has {actual} bytes, {size} were written")
    names = list(expected)
    for rel, digest in zip(names, _digests([root / rel for rel in names])):
        if digest != expected[rel][1]:
            raise CorruptCheckpoint(f"{rel} does not match the sha256 recorded when it was written")


def _verify_by_parsing(root: Path) -> None:
    """Checks for a checkpoint without a manifest (written by an older swe-srl)."""
    files = _files(root)
    for path in files:
        rel = path.relative_to(root).as_posix()
        if path.suffix == ".json":
            _check_json(path, rel)
            if path.name.endswith(".index.json"):
                _check_index(path, rel)
        elif path.suffix == ".safetensors":
            _check_safetensors(path, rel)
        elif path.suffix in _TORCH_SUFFIXES:
            _check_torch_file(path, rel)
    model_dirs = {p.parent for p in files if p.name in ("config.json", "adapter_config.json")}
    if (root / "sharded").is_dir():  # an fsdp checkpoint: hf/ holds config and tokenizer, the weights are sharded/
        model_dirs.discard(root / "hf")
    for folder in sorted(model_dirs):
        if not any(p.parent == folder and (p.suffix == ".safetensors" or p.suffix == ".bin") for p in files):
            raise CorruptCheckpoint(f"{folder.relative_to(root).as_posix()}/ holds no weights")


def _check_json(path: Path, rel: str) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise CorruptCheckpoint(f"{rel} is not valid JSON ({brief(exc)})") from exc


def _check_index(path: Path, rel: str) -> None:
    """Every shard a sharded model's index names must be there (their contents are checked apart)."""
    weight_map = (_check_json(path, rel) or {}).get("weight_map") or {}
    for shard in sorted(set(weight_map.values())):
        if not (path.parent / shard).is_file():
            raise CorruptCheckpoint(f"{rel} names {shard}, which is missing")


def _check_safetensors(path: Path, rel: str) -> None:
    """The header parses and every tensor's bytes lie inside the file."""
    size = path.stat().st_size
    with open(path, "rb") as fh:
        head = fh.read(8)
        if len(head) < 8:
            raise CorruptCheckpoint(f"{rel} is truncated ({size} bytes, no header)")
        (length,) = struct.unpack("<Q", head)
        if 8 + length > size:
            raise CorruptCheckpoint(f"{rel} is truncated: its header needs {8 + length} bytes, the file has {size}")
        try:
            header = json.loads(fh.read(length))
            ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
        except (ValueError, TypeError, KeyError, IndexError, AttributeError) as exc:
            raise CorruptCheckpoint(f"{rel} has an unreadable header ({brief(exc)})") from exc
    needed = 8 + length + max(ends, default=0)
    if needed > size:
        raise CorruptCheckpoint(f"{rel} is truncated: its tensors need {needed} bytes, the file has {size}")


def _check_torch_file(path: Path, rel: str) -> None:
    import torch

    is_zip = zipfile.is_zipfile(path)
    if not is_zip and _magic(path) == b"PK\x03\x04":
        raise CorruptCheckpoint(f"{rel} is truncated (a zip archive without its central directory)")
    try:
        if is_zip:  # torch.save's format: each member carries a CRC
            with zipfile.ZipFile(path) as archive:
                bad = archive.testzip()
            if bad is not None:
                raise CorruptCheckpoint(f"{rel} is damaged (CRC mismatch in {bad})")
        data = torch.load(path, map_location="cpu", weights_only=True, mmap=is_zip)
    except CorruptCheckpoint:
        raise
    except Exception as exc:  # torch.load raises many kinds (RuntimeError, UnpicklingError, EOFError, ...)
        raise CorruptCheckpoint(f"{rel} cannot be loaded ({brief(exc)})") from exc
    if path.name == "rng.pt":
        check_rng_states(data, rel)


def _magic(path: Path) -> bytes:
    with open(path, "rb") as fh:
        return fh.read(4)


def check_rng_states(data: Any, rel: str = "rng.pt") -> None:
    """``rng.pt`` holds one RNG state per rank, each with python / numpy / torch entries."""
    if not isinstance(data, list) or not all(isinstance(s, dict) and all(k in s for k in RNG_KEYS) for s in data):
        raise CorruptCheckpoint(f"{rel} does not hold per-rank RNG states")


def brief(exc: BaseException) -> str:
    """One short line of an exception: torch's messages run to paragraphs."""
    text = str(exc).strip().splitlines()[0].split(". ")[0] if str(exc).strip() else ""
    text = text[:117] + "..." if len(text) > 120 else text
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
