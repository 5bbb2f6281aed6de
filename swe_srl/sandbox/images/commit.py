"""Images made in a build container of our own: created, filled, run, committed and removed in a
``finally`` (never the engine's builder, whose intermediate containers outlive a build the
engine or the driver died in), and the sweep of build containers that a killed build left.

A build container is named ``swe-srl-build-<host>-<pid>-<start>-<random>`` after the process
that builds: its name is the one thing about it that a commit does not bake into the image (its
labels and environment would be), so the sweep tells a dead builder's container from a live one
by it, as the reaper does sandboxes by their labels.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shlex
import socket
import tarfile
import time
import uuid
from collections.abc import Callable, Sequence
from typing import Any

from ...errors import InfrastructureError
from ..client import docker_client, infra_error
from ..reaper import LABEL_HOST, LABEL_PID, LABEL_RUN, LABEL_START, owner_alive, process_start, remove_containers

log = logging.getLogger(__name__)

BUILD_PREFIX = "swe-srl-build-"
LABEL_KIND = "swe-srl.kind"
# The engine's builder made the task images before: its leftovers carry the base image's labels
# and no run id. One that old is no live build's (a task image's build step takes seconds).
LEGACY_MIN_AGE_S = 600.0
_BUILD_TIMEOUT_S = 600


def host_id(hostname: str | None = None) -> str:
    return hashlib.sha256((hostname or socket.gethostname()).encode()).hexdigest()[:8]


def build_container_name() -> str:
    """A name that says which process on which host builds in the container."""
    pid = os.getpid()
    return f"{BUILD_PREFIX}{host_id()}-{pid}-{process_start(pid) or 0}-{uuid.uuid4().hex[:6]}"


def _owner_gone(name: str) -> bool:
    parts = name[len(BUILD_PREFIX):].split("-")
    if len(parts) != 4 or parts[0] != host_id():
        return False  # another host's build, or not a name we made: not ours to judge
    _, pid, start, _ = parts
    labels = {LABEL_HOST: socket.gethostname(), LABEL_PID: pid, LABEL_START: "" if start == "0" else start}
    return not owner_alive(labels)


def is_leftover(summary: dict, now: float | None = None) -> bool:
    """True for a stopped build container (an engine's container summary) that no live build owns:
    one of ours whose builder process is gone, or an old one of the engine's builder."""
    if summary.get("State") == "running":
        return False
    names = [n.lstrip("/") for n in summary.get("Names") or ()]
    ours = [n for n in names if n.startswith(BUILD_PREFIX)]
    if ours:
        return _owner_gone(ours[0])
    labels = summary.get("Labels") or {}
    age = (now if now is not None else time.time()) - float(summary.get("Created") or 0)
    return LABEL_KIND in labels and LABEL_RUN not in labels and age > LEGACY_MIN_AGE_S


def remove_leftovers(client: Any = None) -> list[str]:
    """Remove build containers that killed builds left behind; return their ids."""
    client = client or docker_client()
    try:
        summaries = client.api.containers(all=True, filters={"label": LABEL_KIND})
    except Exception as exc:
        raise infra_error("listing build containers", exc) from exc
    return remove_containers(client, [s for s in summaries if is_leftover(s)],
                             "build container(s) left by killed builds")


def root_owned(info: tarfile.TarInfo) -> tarfile.TarInfo:
    """A tar filter: the file belongs to root inside the image (as COPY would make it)."""
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    return info


def commit_image(base: str, tag: str, script: str, *, files: Sequence[tuple[str, bytes]] = (),
                 workdir: str = "/", labels: dict | None = None, changes: Sequence[str] = (),
                 echo: Callable[[str], None] = log.info) -> str:
    """Make ``tag`` from ``base``: copy the ``files`` archives (``(directory, tar bytes)``) in,
    run ``script`` with ``sh -c`` in ``workdir`` (no network), commit with ``changes``. The
    container's ``labels`` end up on the image. The container is removed whatever happens."""
    echo(f"building {tag}")
    client = docker_client()
    repository, _, version = tag.rpartition(":")
    container = None
    try:
        container = client.containers.create(base, command=["sh", "-c", script], name=build_container_name(),
                                              working_dir=workdir, labels=labels or {}, network_mode="none")
        for directory, archive in files:
            if not container.put_archive(directory, archive):
                raise InfrastructureError(f"building {tag}: copying into {directory} failed")
        container.start()
        status = container.wait(timeout=_BUILD_TIMEOUT_S).get("StatusCode")
        if status != 0:
            tail = container.logs().decode(errors="replace").strip()[-300:]
            raise InfrastructureError(f"building {tag}: {shlex.quote(script)[:80]} exited {status}: {tail}")
        container.commit(repository=repository, tag=version, changes=list(changes))
    except InfrastructureError:
        raise
    except Exception as exc:
        raise infra_error(f"building image {tag}", exc) from exc
    finally:
        if container is not None:
            try:
                container.remove(force=True)
            except Exception as exc:  # the next sweep retries
                log.warning("removing build container %s failed: %s", container.name, exc)
    return tag
