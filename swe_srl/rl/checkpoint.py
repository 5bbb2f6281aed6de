"""Atomic, resumable checkpoints.

Layout under ``RUN_DIR/checkpoints``::

    step-00000010/            one complete checkpoint
      model/                  save_pretrained: weights, config, tokenizer (LoRA: the adapter)
      optimizer.pt            optimizer state_dict
      rng.pt                  python / numpy / torch (+ cuda) RNG states, one entry per rank
      trainer_state.json      step, data position, ... (the completeness mark)
      manifest.json           size + sha256 of every file above (written last)
    latest                    the name of the newest complete checkpoint (updated last)

A ``run.parallel=fsdp`` checkpoint has ``sharded/`` (torch.distributed.checkpoint: model and
optimizer, one file per rank + ``.metadata``; loadable on any number of processes) and
``hf/`` (config and tokenizer, no weights) instead of ``model/`` and ``optimizer.pt``
(:mod:`.sharded`); ``swe-srl export`` turns either kind into a model folder.

A checkpoint is written into a hidden temp directory, every file and the directory are
fsync'ed, then the directory is renamed into place and only then does ``latest`` move (itself
through a temp file + ``os.replace``). A crash at any point leaves the previous checkpoint
loadable, and a temp directory never becomes ``latest``.

Files damaged after the write (a truncated copy, a bad disk) are caught on ``--resume``:
:func:`find_resumable` verifies each checkpoint against its manifest (:mod:`.integrity`; older
checkpoints without one by parsing their files) and takes the newest that passes.
"""

from __future__ import annotations

import json
import os
import random
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

from ..errors import InputError
from ..paths import DEFAULT_MODEL_DIR
from ..tiny_model import make_tiny_model
from .integrity import CorruptCheckpoint, brief, check_rng_states, verify, write_manifest

CHECKPOINTS = "checkpoints"
LATEST = "latest"
STATE_FILE = "trainer_state.json"
MODEL_DIR = "model"
OPTIMIZER_FILE = "optimizer.pt"
SHARDED_DIR = "sharded"
HF_DIR = "hf"
DCP_METADATA = ".metadata"
RNG_FILE = "rng.pt"
TMP_PREFIX = ".tmp-"
_STEP_DIR = re.compile(r"step-(\d+)")


def step_dir_name(step: int) -> str:
    return f"step-{step:08d}"


def _fsync_path(path: Path) -> None:
    """fsync a file or a directory (a directory fsync makes renames inside it durable)."""
    flags = os.O_RDONLY | (getattr(os, "O_DIRECTORY", 0) if path.is_dir() else 0)
    fd = os.open(path, flags)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _fsync_tree(root: Path) -> None:
    for dirpath, _dirnames, filenames in os.walk(root):
        for name in filenames:
            _fsync_path(Path(dirpath) / name)
        _fsync_path(Path(dirpath))


def write_text_atomic(path: Path, text: str) -> None:
    """Replace ``path`` with ``text`` so that readers see the old or the new content, never half."""
    tmp = path.with_name(f"{TMP_PREFIX}{path.name}.{os.getpid()}")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)
    _fsync_path(path.parent)


# --------------------------------------------------------------------------- RNG


def capture_rng() -> dict[str, Any]:
    """This process's RNG states in a form ``torch.load(weights_only=True)`` accepts."""
    import numpy as np
    import torch

    # The global RandomState is an MT19937: its state is the legacy tuple (the stub also allows a dict).
    kind, keys, pos, has_gauss, cached = cast("tuple[str, np.ndarray, int, int, float]", np.random.get_state())
    state: dict[str, Any] = {
        "python": random.getstate(),
        "numpy": (kind, torch.from_numpy(keys.astype("int64")), pos, has_gauss, cached),
        "torch": torch.get_rng_state(),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def restore_rng(state: Mapping[str, Any]) -> None:
    """Put back what :func:`capture_rng` took."""
    import numpy as np
    import torch

    py = state["python"]
    random.setstate((py[0], tuple(py[1]), py[2]))
    kind, keys, pos, has_gauss, cached = state["numpy"]
    np.random.set_state((kind, keys.numpy().astype("uint32"), pos, has_gauss, cached))
    torch.set_rng_state(state["torch"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])


# --------------------------------------------------------------------------- save / load


@dataclass(frozen=True)
class Checkpoint:
    """A complete checkpoint on disk."""

    path: Path
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def model_dir(self) -> Path:
        return self.path / MODEL_DIR

    @property
    def sharded(self) -> bool:
        """Written by ``run.parallel=fsdp`` (``sharded/``, no ``model/``)."""
        return (self.path / SHARDED_DIR).is_dir()

    def optimizer_state(self) -> dict[str, Any]:
        return self._load(OPTIMIZER_FILE)

    def rng_states(self) -> list[dict[str, Any]]:
        """One RNG state per rank of the run that wrote it."""
        if not (self.path / RNG_FILE).exists():
            return []
        states = self._load(RNG_FILE)
        check_rng_states(states, f"checkpoint {self.path}: {RNG_FILE}")
        return states

    def _load(self, name: str) -> Any:
        import torch

        try:
            return torch.load(self.path / name, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch.load raises many kinds (RuntimeError, UnpicklingError, EOFError, ...)
            raise CorruptCheckpoint(f"checkpoint {self.path}: {name} cannot be loaded ({brief(exc)})") from exc


def save_checkpoint(
    run_dir: str | os.PathLike,
    step: int,
    *,
    model: Any,
    tokenizer: Any = None,
    optimizer: Any = None,
    state: Mapping[str, Any] | None = None,
    rng_states: list[dict[str, Any]] | None = None,
    keep: int = 2,
) -> Path:
    """Write checkpoint ``step`` atomically, move ``latest`` to it, keep the newest ``keep``."""
    import torch

    tmp = begin_checkpoint(run_dir, step)
    model.save_pretrained(tmp / MODEL_DIR)
    if tokenizer is not None:
        tokenizer.save_pretrained(tmp / MODEL_DIR)
    if optimizer is not None:
        torch.save(optimizer.state_dict(), tmp / OPTIMIZER_FILE)
    return commit_checkpoint(run_dir, tmp, step, state=state, rng_states=rng_states, keep=keep)


def begin_checkpoint(run_dir: str | os.PathLike, step: int) -> Path:
    """A fresh hidden temp directory to write checkpoint ``step`` into (stale ones removed)."""
    root = Path(run_dir) / CHECKPOINTS
    root.mkdir(parents=True, exist_ok=True)
    _remove_stale_temps(root)
    tmp = root / f"{TMP_PREFIX}{step_dir_name(step)}.{os.getpid()}"
    tmp.mkdir()
    return tmp


def commit_checkpoint(run_dir: str | os.PathLike, tmp: Path, step: int, *, state: Mapping[str, Any] | None = None,
                      rng_states: list[dict[str, Any]] | None = None, keep: int = 2) -> Path:
    """Finish the checkpoint written into ``tmp`` (RNG states, state file, manifest, fsync),
    rename it into place, move ``latest`` to it and prune to the newest ``keep``."""
    import torch

    root = Path(run_dir) / CHECKPOINTS
    final = root / step_dir_name(step)
    if rng_states is not None:
        torch.save(rng_states, tmp / RNG_FILE)
    # The state file, then the manifest of every file, go last.
    payload = {"step": step, **dict(state or {})}
    (tmp / STATE_FILE).write_text(json.dumps(payload, indent=2), encoding="utf-8")
    write_manifest(tmp)  # last: what --resume checks the files against
    _fsync_tree(tmp)
    if final.exists():  # re-saving a step after a resume: swap the old copy out first
        old = root / f"{TMP_PREFIX}old-{final.name}.{os.getpid()}"
        os.replace(final, old)
        os.replace(tmp, final)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, final)
    _fsync_path(root)
    write_text_atomic(root / LATEST, final.name + "\n")
    prune_checkpoints(run_dir, keep)
    return final


def _remove_stale_temps(root: Path) -> None:
    """Temp dirs are leftovers of a crashed save (ours, or a killed process's): never loadable."""
    for path in root.glob(f"{TMP_PREFIX}*"):
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)


def _read_state(path: Path) -> Checkpoint:
    """The checkpoint at ``path`` if it has a state file and a model folder; else
    :class:`CorruptCheckpoint` saying what is wrong."""
    try:
        state = json.loads((path / STATE_FILE).read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise CorruptCheckpoint(f"{STATE_FILE} is missing") from exc
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise CorruptCheckpoint(f"{STATE_FILE} is unreadable ({brief(exc)})") from exc
    if not isinstance(state, dict) or not isinstance(state.get("step"), int):
        raise CorruptCheckpoint(f"{STATE_FILE} holds no step")
    if not (path / MODEL_DIR).is_dir() and not (path / SHARDED_DIR).is_dir():
        raise CorruptCheckpoint(f"{MODEL_DIR}/ is missing")
    return Checkpoint(path=path, state=state)


def _read_complete(path: Path) -> Checkpoint | None:
    try:
        return _read_state(path)
    except CorruptCheckpoint:
        return None


def list_checkpoints(run_dir: str | os.PathLike) -> list[Checkpoint]:
    """Complete checkpoints of a run, oldest first."""
    root = Path(run_dir) / CHECKPOINTS
    found = [_read_complete(p) for p in sorted(root.glob("step-*")) if p.is_dir()]
    return sorted((c for c in found if c is not None), key=lambda c: c.step)


def latest_checkpoint(run_dir: str | os.PathLike) -> Checkpoint | None:
    """The checkpoint ``latest`` names; if that pointer is missing or broken, the newest
    complete checkpoint; None when the run has none."""
    root = Path(run_dir) / CHECKPOINTS
    try:
        name = (root / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        name = ""
    if name and not name.startswith(TMP_PREFIX) and "/" not in name:
        found = _read_complete(root / name)
        if found is not None:
            return found
    complete = list_checkpoints(run_dir)
    return complete[-1] if complete else None


@dataclass(frozen=True)
class Resumable:
    """What :func:`find_resumable` found: the checkpoint to resume from (None when there is
    none) and, newest first, the ones it passed over with the reason for each."""

    checkpoint: Checkpoint | None
    skipped: tuple[tuple[str, str], ...] = field(default=())


def _candidates(root: Path) -> list[Path]:
    """Checkpoint folders to try: the one ``latest`` names, then the others newest first."""
    dirs = sorted((p for p in root.glob("step-*") if p.is_dir() and _STEP_DIR.fullmatch(p.name)),
                  key=lambda p: int(p.name.split("-", 1)[1]), reverse=True)
    try:
        named = (root / LATEST).read_text(encoding="utf-8").strip()
    except OSError:
        named = ""
    first = [p for p in dirs if p.name == named]
    return first + [p for p in dirs if p.name != named]


def find_resumable(run_dir: str | os.PathLike) -> Resumable:
    """The newest checkpoint of a run whose files verify (the one ``latest`` names first),
    with every newer one it had to pass over and why. Reads every file it accepts once."""
    skipped: list[tuple[str, str]] = []
    for path in _candidates(Path(run_dir) / CHECKPOINTS):
        try:
            found = _read_state(path)
            if found.sharded and not (path / SHARDED_DIR / DCP_METADATA).is_file():
                raise CorruptCheckpoint(f"{SHARDED_DIR}/{DCP_METADATA} is missing")
            if not found.sharded and not (path / OPTIMIZER_FILE).is_file():
                raise CorruptCheckpoint(f"{OPTIMIZER_FILE} is missing")
            verify(path)
        except CorruptCheckpoint as exc:
            skipped.append((path.name, str(exc)))
            continue
        return Resumable(found, tuple(skipped))
    return Resumable(None, tuple(skipped))


def load_checkpoint(path: str | os.PathLike) -> Checkpoint:
    """A checkpoint directory, or a run directory (its latest checkpoint)."""
    p = Path(path)
    found = _read_complete(p) if (p / STATE_FILE).exists() else latest_checkpoint(p)
    if found is None:
        raise InputError(f"no complete checkpoint in {p}")
    return found


def prune_checkpoints(run_dir: str | os.PathLike, keep: int) -> None:
    """Delete all but the newest ``keep`` complete checkpoints (never the one ``latest`` names)."""
    latest = latest_checkpoint(run_dir)
    complete = list_checkpoints(run_dir)
    for ckpt in complete[: max(0, len(complete) - keep)]:
        if latest is not None and ckpt.path == latest.path:
            continue
        shutil.rmtree(ckpt.path, ignore_errors=True)


START_MODEL_DIR = "start_model"


def keep_model_folder(source: Path, dest: Path) -> Path:
    """``dest``: the files of the model folder ``source`` (weights, config, tokenizer), hard
    linked where the filesystem allows (no extra disk, instant at any model size), else
    copied; written under a temporary name and renamed, so a kill leaves it whole or absent.
    An existing ``dest`` is left as it is (a fresh run killed before its first checkpoint,
    started again from the same model)."""
    if (dest / "config.json").is_file():
        return dest
    tmp = dest.with_name(dest.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for item in sorted(Path(source).iterdir()):
        if not item.is_file():
            continue  # a model folder is flat; a run's own subfolders are not part of it
        try:
            os.link(item, tmp / item.name)
        except OSError:  # another filesystem, or links not allowed
            shutil.copy2(item, tmp / item.name)
    if dest.exists():
        shutil.rmtree(dest)
    os.replace(tmp, dest)
    return dest


def resolve_model_dir(path: str | os.PathLike | None, *, fallback_runs: Sequence[Path] = (),
                      make_default: bool = True) -> Path:
    """The model folder to load, for ``train --model`` and ``eval --model`` alike.

    A model folder (config.json) is itself; a training run folder gives its latest
    checkpoint's model (SFT -> SRL, SRL -> RLVR, a run -> eval). With no path: the latest
    checkpoint of the first of ``fallback_runs`` that has one, else the tiny offline model
    (created once when ``make_default``; in a multi-process run only rank 0 creates it)."""
    if path:
        given = Path(path)
        if (given / "config.json").is_file():
            return given
        found = latest_checkpoint(given) if given.is_dir() else None
        if found is not None:
            return plain_model_dir(found)
        raise InputError(f"{given} is neither a model directory nor a training run with a checkpoint "
                         "(no config.json, no checkpoints/); run `swe-srl init-model` or pass --model")
    for run in fallback_runs:
        found = latest_checkpoint(run) if Path(run).is_dir() else None
        if found is not None:
            return plain_model_dir(found)
    if make_default and not (DEFAULT_MODEL_DIR / "config.json").is_file():
        make_tiny_model(DEFAULT_MODEL_DIR)
    return DEFAULT_MODEL_DIR


def plain_model_dir(found: Checkpoint) -> Path:
    """The checkpoint's model folder, when it is one ``from_pretrained`` loads; a sharded
    (fsdp) checkpoint or a LoRA adapter is an error that says how to export it."""
    adapter = (found.model_dir / "adapter_config.json").is_file() and not (found.model_dir / "config.json").is_file()
    if found.sharded or adapter:
        kind = "sharded (run.parallel=fsdp)" if found.sharded else "a LoRA adapter"
        raise InputError(f"checkpoint {found.path} is {kind}, not a model folder: "
                         f"`swe-srl export {found.path.parent.parent} --step {found.step} -o DIR`, then pass DIR")
    return found.model_dir
