"""What the project's images take on disk, counted the way Docker counts it.

Task images are the base image plus one small layer each, so adding their sizes (what
``docker images`` shows) would count the ~270 MB base once per task. Docker stores each layer
once: a set of images takes the sum of its *distinct* layers' sizes (``docker system df``'s
"layers size"). :class:`Snapshot` counts exactly that over the project's images: each image's
layers are identified by their chain id (the OCI digest of the layer stack up to them, so the
same layer under the same parents is one layer) and sized by the engine's own per-layer size
(``docker history``: the bytes of the layer's files, what the engine adds up for ``df``).

The project's images are those labelled ``swe-srl.kind`` (the base images and every task image
swe-srl builds) plus the images it pulled for tasks (recorded in the cache index). Containers'
writable layers, volumes and the build cache are not images and are not counted.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from ...errors import ConfigError
from ..client import infra_error
from .commit import LABEL_KIND

log = logging.getLogger(__name__)

GB = 10**9  # budgets are in GB as `docker system df` prints them (10^9 bytes)

_layers_lock = threading.Lock()
_layers: dict[str, tuple[tuple[str, int], ...]] = {}  # image id -> layers; ids are content hashes


def human_bytes(n: int) -> str:
    """``272541407`` -> ``'272.5 MB'`` (powers of 1000, as docker prints sizes)."""
    for unit, scale in (("GB", GB), ("MB", 10**6), ("kB", 10**3)):
        if abs(n) >= scale:
            return f"{n / scale:.{3 if unit == 'GB' else 1}f} {unit}"
    return f"{n} B"


def chain_ids(diff_ids: Iterable[str]) -> list[str]:
    """The OCI chain id of each layer of a stack, bottom first: the first layer's is its diff
    id, each next one ``sha256(<chain below> + " " + <diff id>)``."""
    out: list[str] = []
    for diff in diff_ids:
        out.append(diff if not out else "sha256:" + hashlib.sha256(f"{out[-1]} {diff}".encode()).hexdigest())
    return out


def pair_layers(diff_ids: list[str], history_sizes: list[int]) -> tuple[tuple[str, int], ...]:
    """(chain id, bytes) per layer from the image's layers and its history sizes (oldest
    first). History also lists steps that made no layer (ENV, CMD, ...), always with size 0:
    every non-zero entry is a layer, in order; zero-byte layers take the earliest zero entries.
    Where the two disagree the whole size goes to the top layer, so the image's total holds."""
    chains = chain_ids(diff_ids)
    if len(history_sizes) == len(chains):
        return tuple(zip(chains, history_sizes))
    nonzero = sum(1 for s in history_sizes if s)
    zeros = len(chains) - nonzero
    if zeros < 0:
        return tuple(zip(chains, [0] * (len(chains) - 1) + [sum(history_sizes)]))
    sizes = []
    for size in history_sizes:
        if size:
            sizes.append(size)
        elif zeros:
            sizes.append(0)
            zeros -= 1
    return tuple(zip(chains, sizes))


def image_layers(client: Any, image_id: str) -> tuple[tuple[str, int], ...] | None:
    """The layers of one image (cached by id); None when the image is gone meanwhile."""
    with _layers_lock:
        if image_id in _layers:
            return _layers[image_id]
    try:
        diff_ids = list(client.api.inspect_image(image_id)["RootFS"].get("Layers") or ())
        sizes = [int(h.get("Size") or 0) for h in reversed(client.api.history(image_id))]
    except Exception as exc:
        if type(exc).__name__ in ("ImageNotFound", "NotFound"):
            return None
        raise infra_error(f"inspecting image {image_id[:19]}", exc) from exc
    layers = pair_layers(diff_ids, sizes)
    with _layers_lock:
        _layers[image_id] = layers
    return layers


@dataclass(frozen=True)
class ImageRecord:
    """One image as the cache sees it."""

    id: str
    tags: tuple[str, ...]
    labels: dict
    created: float
    parent: str
    layers: tuple[tuple[str, int], ...]

    @property
    def kind(self) -> str:
        return str(self.labels.get(LABEL_KIND, "pulled"))

    @property
    def ref(self) -> str:
        """A name to remove or hold it by: its first tag, else its id."""
        return self.tags[0] if self.tags else self.id

    @property
    def size(self) -> int:
        return sum(size for _, size in self.layers)


@dataclass(frozen=True)
class Snapshot:
    """The project's images on one engine at one moment, and what pins them there."""

    images: dict[str, ImageRecord]
    """Project images by id."""
    in_use: frozenset[str] = frozenset()
    """Ids of images some container (running or stopped) was created from."""
    parents: frozenset[str] = frozenset()
    """Ids of images another present image was built on (removing them frees nothing)."""
    refcount: Counter = field(default_factory=Counter)
    """Per chain id: how many project images hold the layer."""
    sizes: dict[str, int] = field(default_factory=dict)
    """Per chain id: the layer's bytes."""

    @classmethod
    def of(cls, images: dict[str, ImageRecord], in_use: Iterable[str] = (), parents: Iterable[str] = ()) -> Snapshot:
        refcount: Counter = Counter()
        sizes: dict[str, int] = {}
        for image in images.values():
            for chain, size in image.layers:
                refcount[chain] += 1
                sizes[chain] = size
        return cls(images, frozenset(in_use), frozenset(parents), refcount, sizes)

    def total_bytes(self) -> int:
        """Bytes of the distinct layers of all project images."""
        return sum(self.sizes.values())

    def freed_by(self, ids: Iterable[str]) -> int:
        """Bytes that removing these images would take off :meth:`total_bytes`."""
        gone: Counter = Counter(chain for i in ids for chain, _ in self.images[i].layers)
        return sum(self.sizes[c] for c, n in gone.items() if n >= self.refcount[c])

    def covering(self, candidates: Iterable[ImageRecord], excess: int) -> tuple[list[ImageRecord], int]:
        """The shortest prefix of ``candidates`` whose removal frees at least ``excess`` bytes
        (all of them when none does), and the bytes it frees."""
        chosen: list[ImageRecord] = []
        removed: Counter = Counter()
        freed = 0
        for image in candidates:
            if freed >= excess:
                break
            chosen.append(image)
            for chain, _ in image.layers:
                removed[chain] += 1
                if removed[chain] == self.refcount[chain]:
                    freed += self.sizes[chain]
        return chosen, freed

    def own_bytes(self, image_id: str) -> int:
        """Bytes the image adds on top of the image it was built on (when present), else on
        top of every other project image: what rebuilding it after an eviction adds back."""
        image = self.images[image_id]
        parent = self.images.get(image.parent)
        if parent is not None and image.layers[:len(parent.layers)] == parent.layers:
            return sum(size for _, size in image.layers[len(parent.layers):])
        return self.freed_by([image_id])

    def by_ref(self, ref: str) -> ImageRecord | None:
        """The image with this tag or id, if present."""
        for image in self.images.values():
            if ref == image.id or ref in image.tags:
                return image
        return None


def _tags(row: dict) -> tuple[str, ...]:
    return tuple(t for t in row.get("RepoTags") or () if t != "<none>:<none>")


def take_snapshot(client: Any, pulled: Iterable[str] = ()) -> Snapshot:
    """The project's images now: labelled ``swe-srl.kind``, or tagged with one of ``pulled``."""
    pulled = set(pulled)
    try:
        rows = client.api.images()
        containers = client.api.containers(all=True)
    except Exception as exc:
        raise infra_error("listing images", exc) from exc
    images: dict[str, ImageRecord] = {}
    for row in rows:
        labels = row.get("Labels") or {}
        if LABEL_KIND not in labels and not pulled.intersection(_tags(row)):
            continue
        layers = image_layers(client, row["Id"])
        if layers is None:  # removed since the listing
            continue
        images[row["Id"]] = ImageRecord(row["Id"], _tags(row), dict(labels), float(row.get("Created") or 0),
                                        row.get("ParentId") or "", layers)
    return Snapshot.of(images, in_use={c.get("ImageID", "") for c in containers},
                       parents={row.get("ParentId") for row in rows if row.get("ParentId")})


def all_images_bytes(client: Any) -> int:
    """Distinct-layer bytes of every image on the engine (project or not): equals the engine's
    own ``docker system df`` layers size; the check that the counting is Docker's."""
    chains: dict[str, int] = {}
    for row in client.api.images():
        for chain, size in image_layers(client, row["Id"]) or ():
            chains[chain] = size
    return sum(chains.values())


@dataclass(frozen=True)
class ImageStatus:
    """One project image in a usage report."""

    ref: str
    kind: str
    bytes: int
    """What it adds on top of the image it was built on (base images: their whole size)."""
    last_used: float
    pinned: str
    """Why it may not be evicted ('' = it may)."""


@dataclass(frozen=True)
class Usage:
    """The project's images against a budget (``doctor``, ``env prune``)."""

    total_bytes: int
    budget_bytes: int | None
    images: tuple[ImageStatus, ...]

    @property
    def pinned_bytes(self) -> int:
        return self.total_bytes - sum(i.bytes for i in self.images if not i.pinned)

    @property
    def over_budget(self) -> bool:
        return self.budget_bytes is not None and self.total_bytes > self.budget_bytes


def budget_bytes(budget_gb: float | None) -> int | None:
    """A budget in GB (10^9 bytes, as ``docker system df`` prints) as bytes; None = no budget."""
    if budget_gb is None:
        return None
    if budget_gb < 0:
        raise ConfigError(f"image budget must be >= 0 GB (or unset for no budget), got {budget_gb}")
    return int(budget_gb * GB)
