"""The image cache's eviction policy, as functions of one snapshot of the engine's images
(:class:`~.disk.Snapshot`) and the cache index's data (:mod:`.index`): which images may not
be evicted and why, in which order the others go, and how many bytes an image about to be
built will add. :class:`~.cache.ImageCache` applies it under its lock.

Never evicted: base images (every task image is built on one), an image a container was
created from, an image another present image was built on, an image a live process holds (an
episode in flight, here or in another run on the same engine: holds live in the cache index),
an untagged image younger than two minutes (a commit not tagged yet).
Among the rest, images no upcoming task needs go first, least recently used first (last use
as recorded in the index, else creation time); then images of upcoming tasks, the one needed
last first. An image's size is known from an earlier build (recorded in the index), else
estimated.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from pathlib import Path

from ...schemas import Task
from .disk import ImageRecord, Snapshot

_FIRST_BUILD_SLACK = 64 * 1024  # git's own files in a task image's layer (hooks, index, config)
# An untagged image may be a commit (ours or another run's) between its creation and its tag:
# removing it by id then would take the tag with it. Older untagged images are leftovers.
_UNTAGGED_MIN_AGE_S = 120.0


def last_used(image: ImageRecord, data: dict) -> float:
    """When ``image`` was last used (by any of its refs, as the index records), else its creation time."""
    uses = [data["images"].get(ref, {}).get("last_used", 0.0) for ref in (image.id, *image.tags)]
    return max(uses) or image.created


def pins(snap: Snapshot, held: Iterable[str]) -> dict[str, str]:
    """Image id -> why it may not be evicted, for the pinned ones; ``held``: the refs (tags or
    ids) held by live processes or kept for builds in progress."""
    held = set(held)
    pinned = {}
    for image in snap.images.values():
        if image.kind == "base":
            pinned[image.id] = "base"
        elif image.id in snap.in_use:
            pinned[image.id] = "container"
        elif image.id in snap.parents:
            pinned[image.id] = "parent"
        elif held.intersection((image.id, *image.tags)):
            pinned[image.id] = "held"
        elif not image.tags and time.time() - image.created < _UNTAGGED_MIN_AGE_S:
            pinned[image.id] = "new"  # a commit in progress: the engine tags the image just after
    return pinned


def victims(snap: Snapshot, data: dict, pinned: Mapping[str, str], needed: Mapping[str, int],
            horizon: int | None) -> list[ImageRecord]:
    """Evictable images, first to go first. ``needed``: tag -> plan position of the first task
    not yet started that needs it; with ``horizon``, none that a task at or before that plan
    position needs."""
    ranked = []
    for image in snap.images.values():
        if image.id in pinned:
            continue
        pos = min((needed[r] for r in image.tags if r in needed), default=None)
        if horizon is not None and pos is not None and pos <= horizon:
            continue
        ranked.append(((pos is not None, -(pos or 0), last_used(image, data)), image))
    return [image for _, image in sorted(ranked, key=lambda r: r[0])]


def estimate(task: Task, tag: str, data: dict) -> int:
    """Bytes ``tag`` will add: as measured when it was last present, else guessed."""
    known = data["images"].get(tag, {}).get("bytes")
    if known is not None:
        return int(known)
    task_dir = task.metadata.get("task_dir") if isinstance(task.metadata, dict) else None
    if task_dir and (Path(task_dir) / "repo").is_dir():  # files + their git objects
        files = sum(p.stat().st_size for p in (Path(task_dir) / "repo").rglob("*") if p.is_file())
        return 2 * files + _FIRST_BUILD_SLACK
    return max((int(e.get("bytes", 0)) for e in data["images"].values()), default=0)
