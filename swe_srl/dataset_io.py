"""Writing a dataset folder whole or not at all.

`build-dataset` writes into a staging folder beside the target (``.<name>.building-<pid>``)
and swaps it in at the end, so the target holds the old dataset or the new one, never a mix of
the two, never ``.tmp`` files, never a file a previous ``--output`` left. The swap is one
``renameat2(RENAME_EXCHANGE)`` on Linux (atomic); elsewhere the old folder is renamed aside
first, and a run that finds the target missing beside such an aside folder puts it back. A
target that holds another dataset is replaced only with ``overwrite``; a folder holding files
that are not a dataset is never replaced.
"""

from __future__ import annotations

import ctypes
import errno
import json
import os
import shutil
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from .errors import InputError
from .schemas import StepTarget

# What a dataset folder may hold (besides what a killed write left: *.tmp).
DATASET_FILES = frozenset({"train.jsonl", "val.jsonl", "train.parquet", "val.parquet", "stats.json",
                           "provenance.json"})
PROVENANCE_FILE = "provenance.json"
_RENAME_EXCHANGE = 2


class SplitWriter:
    """Streams step targets into <dir>/<split>.jsonl.tmp and publishes them atomically on
    ``commit()``: an interrupted run leaves the previous outputs untouched."""

    def __init__(self, out_dir: Path, splits: Sequence[str] = ("train", "val")) -> None:
        self.out_dir = out_dir
        out_dir.mkdir(parents=True, exist_ok=True)
        self.paths = {s: out_dir / f"{s}.jsonl" for s in splits}
        self._files = {s: open(self._tmp(p), "w", encoding="utf-8") for s, p in self.paths.items()}
        self.counts = {s: 0 for s in splits}

    @staticmethod
    def _tmp(path: Path) -> Path:
        return path.with_name(path.name + ".tmp")

    def write(self, target: StepTarget) -> None:
        self._files[target.split].write(json.dumps(target.to_dict(), ensure_ascii=False) + "\n")
        self.counts[target.split] += 1

    def commit(self) -> dict[str, Path]:
        for split, fh in self._files.items():
            fh.flush()
            os.fsync(fh.fileno())
            fh.close()
            os.replace(self._tmp(self.paths[split]), self.paths[split])
        return dict(self.paths)

    def abort(self) -> None:
        for split, fh in self._files.items():
            fh.close()
            self._tmp(self.paths[split]).unlink(missing_ok=True)


def jsonl_to_parquet(jsonl: Path, parquet: Path, batch_rows: int = 4096) -> None:
    """Convert a step-target JSONL file to Parquet in bounded memory (loadable by
    ``datasets.load_dataset("parquet", ...)``)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = step_target_arrow_schema()
    tmp = parquet.with_name(parquet.name + ".tmp")
    with pq.ParquetWriter(tmp, schema) as writer, jsonl.open(encoding="utf-8") as fh:
        rows: list[dict] = []
        for line in fh:
            rows.append(json.loads(line))
            if len(rows) >= batch_rows:
                writer.write_table(pa.Table.from_pylist(rows, schema=schema))
                rows = []
        if rows:
            writer.write_table(pa.Table.from_pylist(rows, schema=schema))
    os.replace(tmp, parquet)


def step_target_arrow_schema():
    import pyarrow as pa

    context = pa.list_(pa.struct([
        ("schema_version", pa.int32()), ("action", pa.string()),
        ("observation", pa.string()), ("thought", pa.string()),
    ]))
    return pa.schema([
        ("schema_version", pa.int32()), ("id", pa.string()), ("trajectory_id", pa.string()),
        ("task_id", pa.string()), ("step_index", pa.int32()), ("num_steps", pa.int32()),
        ("problem_statement", pa.string()), ("context", context), ("target", pa.string()),
        ("target_tool", pa.string()), ("expert_thought", pa.string()),
        ("source_format", pa.string()), ("resolved", pa.bool_()), ("split", pa.string()),
        ("leaks", pa.list_(pa.string())),
    ])


def write_json_atomic(path: Path, data: Any) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")
    os.replace(tmp, path)


# --------------------------------------------------------------------------- the folder swap


def _aside(target: Path, kind: str, pid: int | None = None) -> Path:
    return target.parent / f".{target.name}.{kind}-{os.getpid() if pid is None else pid}"


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def recover(target: Path) -> None:
    """Undo what a killed write left beside ``target``: an old dataset renamed aside while the
    target is missing goes back; dead writers' staging and aside folders go."""
    if not target.parent.is_dir():
        return
    for kind in ("old", "building"):
        for path in sorted(target.parent.glob(f".{target.name}.{kind}-*")):
            pid = path.name.rsplit("-", 1)[-1]
            if not pid.isdigit() or _alive(int(pid)):
                continue
            if kind == "old" and not target.exists():
                os.rename(path, target)
            else:
                shutil.rmtree(path, ignore_errors=True)


def check_target(target: Path, fingerprint: str, overwrite: bool, inputs: Sequence[str] = (),
                 options: dict | None = None) -> None:
    """Refuse a target that is a file, holds files that are not a dataset, or holds another
    dataset (one built from other inputs or options) unless ``overwrite``. A dataset written
    before provenance.json existed is the same one when its stats.json names the same inputs and
    options (those it knew)."""
    if target.exists() and not target.is_dir():
        raise InputError(f"-o {target} is a file, not a folder")
    if not target.is_dir():
        return
    names = [p.name for p in target.iterdir()]
    foreign = sorted(n for n in names if n not in DATASET_FILES and not n.endswith(".tmp"))
    if foreign:
        raise InputError(f"-o {target} holds files that are not a swe-srl dataset ({', '.join(foreign[:3])}); "
                         "choose an empty or new folder")
    if not names:
        return
    if overwrite or read_fingerprint(target) == fingerprint or _same_legacy(target, inputs, options or {}):
        return
    raise InputError(f"-o {target} holds another dataset (other inputs or options); pass --overwrite to replace it "
                     "or choose another -o")


def _same_legacy(target: Path, inputs: Sequence[str], options: dict) -> bool:
    if (target / PROVENANCE_FILE).exists():
        return False
    try:
        stats = json.loads((target / "stats.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    old = stats.get("config") if isinstance(stats, dict) else None
    return (isinstance(old, dict) and stats.get("inputs") == list(inputs)
            and all(options.get(k) == v for k, v in old.items() if k in options))


def read_fingerprint(folder: Path) -> str | None:
    try:
        return json.loads((folder / PROVENANCE_FILE).read_text(encoding="utf-8")).get("fingerprint")
    except (OSError, ValueError, AttributeError):
        return None


def staging_folder(target: Path) -> Path:
    """A fresh, empty staging folder beside ``target`` (same file system: the swap is a rename)."""
    target.parent.mkdir(parents=True, exist_ok=True)
    stage = _aside(target, "building")
    shutil.rmtree(stage, ignore_errors=True)
    stage.mkdir()
    return stage


def _fsync_tree(folder: Path) -> None:
    for path in folder.iterdir():
        with open(path, "rb") as fh:
            os.fsync(fh.fileno())
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two paths (Linux renameat2); False where the system cannot."""
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd = -100
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    err = ctypes.get_errno()
    if err in (errno.EINVAL, errno.ENOSYS, errno.EOPNOTSUPP):
        return False
    raise OSError(err, os.strerror(err), str(b))


def publish(stage: Path, target: Path) -> None:
    """Swap the finished ``stage`` in as ``target``; the old dataset, if any, is removed."""
    _fsync_tree(stage)
    if not target.exists():
        os.rename(stage, target)
        return
    if _exchange(stage, target):
        shutil.rmtree(stage, ignore_errors=True)  # the old dataset now; what is left, recover() takes
        return
    old = _aside(target, "old")
    os.rename(target, old)
    try:
        os.rename(stage, target)
    except BaseException:
        os.rename(old, target)
        raise
    shutil.rmtree(old, ignore_errors=True)


def discard(stage: Path) -> None:
    shutil.rmtree(stage, ignore_errors=True)
