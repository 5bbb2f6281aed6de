"""The image cache's index: per engine, a small JSON file under the cache directory (guarded
by a lock file, so several runs on one engine share it) that records what the engine's image
list cannot: when each image was last used by swe-srl, the bytes it added when it was built
(what rebuilding it after an eviction will add again), which images swe-srl pulled, and which
images live processes hold for an episode in flight (never evicted).

    {"version": 1,
     "images":  {"swe-srl/task-x:abc": {"last_used": 1767225600.0, "bytes": 28508, "pulled": false}},
     "holders": {"swe-srl/task-x:abc": {"<host>|<pid>|<start>": 1}}}

A holder is a process (host name, pid and start time, as the reaper labels containers): a
process that died holding images no longer holds them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from ..reaper import LABEL_HOST, LABEL_PID, LABEL_START, owner_alive, process_start

VERSION = 1
_thread_lock = threading.Lock()


def holder_id() -> str:
    """This process as a holder of images."""
    pid = os.getpid()
    return f"{socket.gethostname()}|{pid}|{process_start(pid)}"


def holder_alive(holder: str) -> bool:
    """False only for a process of this host that is certainly gone."""
    host, _, rest = holder.partition("|")
    pid, _, start = rest.partition("|")
    return owner_alive({LABEL_HOST: host, LABEL_PID: pid, LABEL_START: start})


def index_path(cache_root: Path, engine_id: str) -> Path:
    """Where the index of the engine with this id lives."""
    return cache_root / "images" / f"{hashlib.sha256(engine_id.encode()).hexdigest()[:12]}.json"


def _empty() -> dict[str, Any]:
    return {"version": VERSION, "images": {}, "holders": {}}


class ImageIndex:
    """The index file of one engine; read and written only inside :meth:`locked`."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)

    @contextmanager
    def locked(self) -> Iterator[dict[str, Any]]:
        """The index, locked against other processes and threads; written back (atomically)
        when the block ends without an error. Holders of dead processes are dropped."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with _thread_lock, open(self.path.with_suffix(".lock"), "a+") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                data = self._read()
                _drop_dead(data)
                yield data
                tmp = self.path.with_name(self.path.name + f".{os.getpid()}.tmp")
                tmp.write_text(json.dumps(data, sort_keys=True))
                os.replace(tmp, self.path)
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def _read(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text())
        except (OSError, ValueError):  # absent or torn: the index is a cache, start afresh
            return _empty()
        if not isinstance(data, dict) or data.get("version") != VERSION:
            return _empty()
        data.setdefault("images", {})
        data.setdefault("holders", {})
        return data


def _drop_dead(data: dict[str, Any]) -> None:
    for ref in list(data["holders"]):
        live = {h: n for h, n in data["holders"][ref].items() if n > 0 and holder_alive(h)}
        if live:
            data["holders"][ref] = live
        else:
            del data["holders"][ref]


def add_hold(data: dict[str, Any], ref: str, delta: int) -> None:
    """This process holds ``ref`` once more (``delta`` 1) or once less (-1)."""
    mine = data["holders"].setdefault(ref, {})
    me = holder_id()
    mine[me] = mine.get(me, 0) + delta
    if mine[me] <= 0:
        del mine[me]
    if not mine:
        del data["holders"][ref]


def image_entry(data: dict[str, Any], ref: str) -> dict[str, Any]:
    """The record of ``ref`` (created empty)."""
    return data["images"].setdefault(ref, {})


def touch(data: dict[str, Any], ref: str, when: float | None = None) -> None:
    """Record a use of ``ref`` now."""
    image_entry(data, ref)["last_used"] = time.time() if when is None else when
