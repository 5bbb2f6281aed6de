"""Task images under a disk budget: the engine's images as a cache that evicts the least
recently used task image when the project's image bytes (:mod:`~swe_srl.sandbox.images.disk`)
would pass the budget, and builds (or pulls) the images of the next tasks in the background.

    cache = ImageCache.of(budget_gb=20, prefetch=2)
    cache.plan(tasks)                      # the order tasks will run in (eviction looks ahead)
    with cache.lease(task) as image:       # present (evicting, building) and held until the end
        ...                                # the episode and its grading (swe_srl.runner.DockerRunner)

Which images may go, in which order, and what an image about to be made will add is the
eviction policy (:mod:`~swe_srl.sandbox.images.eviction`): base images, images in use or held
and images needed soonest stay. An image is made only once room for it is free; an image that
turns out bigger than estimated is followed by further evictions. Evicted task images come back
on demand (rebuilt offline).
"""

from __future__ import annotations

import logging
import threading
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass
from typing import Any

from ...errors import ConfigError, InfrastructureError
from ...schemas import Task
from ..client import docker_client
from .build import cache_dir, image_exists
from .disk import ImageRecord, ImageStatus, Snapshot, Usage, budget_bytes, human_bytes, take_snapshot
from .eviction import estimate, last_used, pins, victims
from .index import ImageIndex, add_hold, image_entry, index_path, touch
from .source import ensure_image, expected_image_tag

log = logging.getLogger(__name__)

_WAIT_S = 5.0  # re-check for room at least this often while waiting for a held image


@dataclass
class CacheStats:
    """What the cache did in one run (``image_cache`` in eval's summary.json)."""

    budget_bytes: int | None = None
    peak_bytes: int = 0
    """Largest project image bytes the cache measured."""
    hits: int = 0
    """Episodes whose image was present."""
    built: int = 0
    """Images built or pulled because an episode needed them now."""
    prefetched: int = 0
    """Images built or pulled ahead of their episode."""
    evicted: int = 0
    evicted_bytes: int = 0
    waits: int = 0
    """Times an episode waited for another episode's image to be released to make room."""

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


class ImageCache:
    """The project's images on the current engine (``docker_client()``) under an optional
    budget. Thread-safe; one per run. Touches the engine only once it is used."""

    def __init__(self, budget: int | None = None, prefetch: int = 0) -> None:
        if budget is not None and budget < 0:
            raise ConfigError(f"image budget must be >= 0 bytes, got {budget}")
        if prefetch < 0:
            raise ConfigError(f"image prefetch must be >= 0, got {prefetch}")
        self.budget, self.prefetch = budget, prefetch
        self.stats = CacheStats(budget_bytes=budget)
        self._lock = threading.RLock()
        self._room = threading.Condition(self._lock)
        self._held: Counter = Counter()  # (tag, thread id) -> holds
        self._reserved: dict[str, int] = {}  # tag -> bytes kept free for its build in progress
        self._tag_locks: dict[str, threading.Lock] = {}
        self._tags: dict[str, str] = {}
        self._plan: list[Task] = []
        self._started: set[str] = set()
        self._index: ImageIndex | None = None
        self._wake = threading.Event()
        self._prefetcher: threading.Thread | None = None
        self._closed = False

    @classmethod
    def of(cls, budget_gb: float | None = None, prefetch: int = 0) -> ImageCache:
        return cls(budget_bytes(budget_gb), prefetch)

    # ------------------------------------------------------------------ public API

    def plan(self, tasks: Sequence[Task]) -> None:
        """The tasks about to run, in order: prefetch builds the next ones' images, and
        eviction keeps the images needed soonest."""
        with self._lock:
            self._plan, self._started = list(tasks), set()
        self._wake.set()

    def acquire(self, task: Task) -> str:
        """Make ``task``'s image present (evicting and building as needed) and hold it until
        :meth:`release`; returns its tag. Raises InfrastructureError."""
        tag = self.tag_of(task)
        self._first_use()
        with self._lock:
            self._started.add(task.instance_id)
        self._hold(tag, 1, task_image=True)
        try:
            with self._tag_lock(tag):  # a build of the same image in progress finishes first
                if image_exists(tag):
                    log.debug("acquired %s (present)", tag)
                    with self._lock:
                        self.stats.hits += 1
                else:
                    self._reserve(task, tag, wait=True, horizon=None)
                    self._build(task, tag)
                    with self._lock:
                        self.stats.built += 1
        except BaseException:
            self.release(tag)
            raise
        self._wake.set()
        return tag

    def release(self, tag: str) -> None:
        """End one hold of ``tag`` (its last use is now)."""
        self._hold(tag, -1)
        self._wake.set()

    @contextmanager
    def lease(self, task: Task) -> Iterator[str | InfrastructureError]:
        """``task``'s image tag, held for the block; or the InfrastructureError that kept it
        from being made (the caller's episode records it as an infrastructure failure)."""
        try:
            tag = self.acquire(task)
        except InfrastructureError as exc:
            yield exc
            return
        try:
            yield tag
        finally:
            self.release(tag)

    @contextmanager
    def hold(self, refs: Sequence[str]) -> Iterator[None]:
        """Hold present images (tags or ids) for the block: they are not evicted meanwhile."""
        with ExitStack() as stack:
            for ref in refs:
                self._hold(ref, 1)
                stack.callback(self._hold, ref, -1)
            yield

    def enforce(self) -> list[str]:
        """Evict now until the project's images fit the budget (as far as unpinned images
        allow); returns the images evicted."""
        if self.budget is None:
            return []
        with self._lock:
            evicted: list[str] = []
            self._fit(None, None, horizon=None, partial=True, out=evicted)
        return evicted

    def usage(self) -> Usage:
        """The project's images now, each with the reason it may not be evicted, if any."""
        with self._lock, self.index.locked() as data:
            snap = self._snapshot(data)
            pinned = self._pins(snap, data)
            rows = tuple(sorted((ImageStatus(i.ref, i.kind, i.size if i.kind == "base" else snap.own_bytes(i.id),
                                             last_used(i, data), pinned.get(i.id, ""))
                                 for i in snap.images.values()), key=lambda s: (s.pinned == "", s.last_used)))
            return Usage(snap.total_bytes(), self.budget, rows)

    def tag_of(self, task: Task) -> str:
        """The tag ``task``'s image has (or will have once built)."""
        with self._lock:
            if task.instance_id not in self._tags:
                self._tags[task.instance_id] = expected_image_tag(task)
            return self._tags[task.instance_id]

    def close(self) -> None:
        """Stop prefetching (a build in progress finishes)."""
        self._closed = True
        self._wake.set()
        if self._prefetcher is not None:
            self._prefetcher.join(timeout=120)

    def __enter__(self) -> ImageCache:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ holds and index

    @property
    def index(self) -> ImageIndex:
        with self._lock:
            if self._index is None:
                client = docker_client()
                try:
                    engine = str(client.info().get("ID") or client.api.base_url)
                except Exception:  # an old engine without an id: one index per socket
                    engine = str(client.api.base_url)
                self._index = ImageIndex(index_path(cache_dir(), engine))
            return self._index

    def _hold(self, ref: str, delta: int, *, task_image: bool = False) -> None:
        """One hold more or less on ``ref``; ``task_image``: it is a task's image (a pulled one
        counts among the project's images from now on)."""
        with self._lock:
            key = (ref, threading.get_ident())
            if delta < 0 and key not in self._held:  # released by another thread than took it
                key = next((k for k in self._held if k[0] == ref), key)
            self._held[key] += delta
            if self._held[key] <= 0:
                del self._held[key]
            with self.index.locked() as data:
                add_hold(data, ref, delta)
                if delta < 0:  # the end of a use is its last use
                    touch(data, ref)
                if task_image:
                    image_entry(data, ref)["task_image"] = True
            if delta < 0:
                self._room.notify_all()

    def _tag_lock(self, tag: str) -> threading.Lock:
        with self._lock:
            return self._tag_locks.setdefault(tag, threading.Lock())

    def _snapshot(self, data: dict) -> Snapshot:
        managed = [ref for ref, entry in data["images"].items() if entry.get("task_image")]
        snap = take_snapshot(docker_client(), managed)
        self.stats.peak_bytes = max(self.stats.peak_bytes, snap.total_bytes())
        for image in snap.images.values():  # what each would add back if evicted and rebuilt
            if image.kind != "base":
                for ref in image.tags:
                    image_entry(data, ref)["bytes"] = snap.own_bytes(image.id)
        return snap

    # ------------------------------------------------------------------ making room

    def _pins(self, snap: Snapshot, data: dict) -> dict[str, str]:
        """Image id -> why it may not be evicted, for the pinned ones: the holds of live
        processes (the index's), of this cache and the builds it has in progress count."""
        return pins(snap, set(data["holders"]) | set(self._reserved) | {ref for ref, _ in self._held})

    def _needed(self) -> dict[str, int]:
        """Tag -> plan position of the first task not yet started that needs it."""
        needed: dict[str, int] = {}
        for pos, task in enumerate(self._plan):
            if task.instance_id not in self._started:
                try:
                    needed.setdefault(self.tag_of(task), pos)
                except InfrastructureError:
                    continue
        return needed

    def _fit(self, task: Task | None, tag: str | None, *, horizon: int | None, partial: bool = False,
             out: list[str] | None = None) -> bool:
        """Evict until ``tag`` (to be built for ``task``) fits beside the project's images and
        the builds in progress, then reserve its room; True when it fits. Nothing is evicted
        when it cannot fit (``partial``: as much as allowed is evicted anyway)."""
        if self.budget is None:
            return True
        with self._lock, self.index.locked() as data:
            snap = self._snapshot(data)
            need = estimate(task, tag, data) if task is not None and tag is not None else 0
            excess = snap.total_bytes() + sum(self._reserved.values()) + need - self.budget
            ranked = victims(snap, data, self._pins(snap, data), self._needed(), horizon)
            chosen, freed = snap.covering(ranked, excess)
            fits = freed >= excess
            if fits or partial:
                for image in chosen:
                    if self._evict(image, snap.own_bytes(image.id)) and out is not None:
                        out.append(image.ref)
            if fits and tag is not None:
                self._reserved[tag] = need
            return fits

    def _evict(self, image: ImageRecord, freed: int) -> bool:
        client = docker_client()
        try:
            for ref in image.tags or (image.id,):
                client.api.remove_image(ref, force=False, noprune=False)
        except Exception as exc:  # a container was created from it meanwhile, ...: keep it
            log.info("not evicting %s: %s", image.ref, " ".join(str(exc).split())[:200])
            return False
        log.info("evicted %s (%s)", image.ref, human_bytes(freed))
        self.stats.evicted += 1
        self.stats.evicted_bytes += freed
        return True

    def _reserve(self, task: Task, tag: str, *, wait: bool, horizon: int | None) -> bool:
        """Free and reserve room for ``tag``; False when it does not fit and ``wait`` is off.
        Waits while other episodes of this process hold present images that could then go;
        raises InfrastructureError when nothing that could free room is in flight."""
        while not self._fit(task, tag, horizon=horizon):
            if not wait:
                return False
            with self._lock:
                me = threading.get_ident()
                others = {ref for ref, thread in self._held if thread != me and ref != tag}
                if not self._reserved and not any(image_exists(ref) for ref in others):
                    raise InfrastructureError(
                        f"the image budget ({human_bytes(self.budget or 0)}) cannot hold {tag} beside the images "
                        "that may not be evicted (base images, images in use or held): raise the budget "
                        "(harness.image_budget_gb) or free images (swe-srl env prune)")
                self.stats.waits += 1
                self._room.wait(timeout=_WAIT_S)
        return True

    def _build(self, task: Task, tag: str) -> None:
        """Build or pull ``tag`` into its reserved room, then correct a short estimate."""
        try:
            made = ensure_image(task)
        finally:
            with self._lock:
                self._reserved.pop(tag, None)
                self._room.notify_all()
        if made != tag:
            log.warning("built %s where %s was expected", made, tag)
        with self._lock:
            with self.index.locked() as data:
                image_entry(data, made)["task_image"] = True
                touch(data, made)
            self._fit(None, None, horizon=None, partial=True)  # an estimate that fell short

    def _first_use(self) -> None:
        """Once: fit the budget (the engine may hold more than it when the run starts) and
        start prefetching."""
        with self._lock:
            if self._prefetcher is not None or self._closed:
                return
            self._prefetcher = threading.Thread(target=self._prefetch_loop, name="image-prefetch", daemon=True)
            self.enforce()
            self.stats.peak_bytes = 0  # from here on, what the run itself makes of it
            self._prefetcher.start()

    # ------------------------------------------------------------------ prefetch

    def _window(self) -> list[tuple[int, Task]]:
        with self._lock:
            waiting = [(pos, t) for pos, t in enumerate(self._plan) if t.instance_id not in self._started]
            return waiting[:self.prefetch]

    def _prefetch_loop(self) -> None:
        while not self._closed and self.prefetch:
            self._wake.wait(timeout=1.0)
            self._wake.clear()
            for pos, task in self._window():
                if self._closed or not self._prefetch_one(pos, task):
                    break

    def _prefetch_one(self, pos: int, task: Task) -> bool:
        """Make the image of the task at plan position ``pos`` present if it fits without
        evicting anything needed sooner; False when it does not fit."""
        try:
            tag = self.tag_of(task)
        except InfrastructureError:
            return True
        lock = self._tag_lock(tag)
        if not lock.acquire(blocking=False):
            return True  # its episode (or another prefetch) is making it
        try:
            if image_exists(tag):
                return True
            if not self._reserve(task, tag, wait=False, horizon=pos):
                return False
            self._build(task, tag)
            with self._lock:
                self.stats.prefetched += 1
        except InfrastructureError as exc:  # its episode meets the error again and records it
            log.info("prefetching the image of %s: %s", task.instance_id, exc)
        finally:
            lock.release()
        return True
