"""The ACTOR half of :mod:`swe_srl.hosts`: :class:`HostWorker`, the code that runs inside the
long-lived Ray actor on (or next to) one Docker engine. It owns that engine's client, its
images, the open sandboxes of the episodes running there and the reaper of their containers;
the driver (:mod:`swe_srl.hosts.pool`) reaches it only through Ray calls.

Ray ships the class to its workers by import path (``swe_srl.hosts.actor.HostWorker``): a
fresh worker process imports this module, so it must import there (swe_srl importable on the
node) and imports no Ray itself; the Docker-facing sandbox modules are imported in the methods.
"""

from __future__ import annotations

import os
import shutil
import threading
import uuid
from dataclasses import replace
from typing import Any

from ..errors import InfrastructureError
from ..sandbox.config import SandboxConfig
from ..sandbox.grading import GradingConfig
from ..schemas import Task, TestReport


class HostWorker:
    """Runs on (or next to) one Docker engine; a Ray actor with threaded concurrency. Owns the
    engine client (the process-wide one: ``DOCKER_HOST`` is set before it is made), the open
    sandboxes of running episodes, a bound on concurrent container starts, image builds for its
    engine, and the reaper of its containers."""

    def __init__(self, name: str, docker_url: str, run_id: str, max_starts: int) -> None:
        if docker_url:
            os.environ["DOCKER_HOST"] = docker_url
        self.name, self.run_id = name, run_id
        self.sandboxes: dict[str, Any] = {}
        self.lock = threading.Lock()
        self.starts = threading.BoundedSemaphore(max_starts)
        self.images: Any = None  # this engine's ImageCache, made at the first episode
        self.episodes_served = 0

    def ping(self) -> dict:
        """Engine facts for ``doctor`` and health checks; raises InfrastructureError when the
        engine does not answer."""
        from ..sandbox.client import docker_client
        from ..sandbox.images.build import base_image_tag, image_exists
        from ..sandbox.images.cache import ImageCache
        from ..sandbox.reaper import list_sandboxes

        client = docker_client()
        try:
            info = client.info()
        except Exception as exc:
            raise InfrastructureError(f"host {self.name}: engine does not answer: {exc}") from exc
        root = info.get("DockerRootDir") or "/"
        try:
            free = shutil.disk_usage(root).free
        except OSError:  # the engine's root is not visible from here (a remote engine)
            free = None
        return {"host": self.name, "engine": info.get("ServerVersion"),
                "containers_running": info.get("ContainersRunning"),
                "images": info.get("Images"), "driver": info.get("Driver"), "pid": os.getpid(),
                "base_image": image_exists(base_image_tag()), "disk_free_bytes": free,
                "sandboxes": len(list_sandboxes(client=client)), "episodes_served": self.episodes_served,
                "image_bytes": (self.images or ImageCache()).usage().total_bytes}

    def ensure_image(self, task: Task, budget_gb: float | None = None) -> str:
        """Make ``task``'s image present on this engine (one build per image, whatever the
        concurrency; evicting under ``budget_gb``) and hold it until :meth:`release_image`."""
        from ..sandbox.images.cache import ImageCache, budget_bytes

        with self.lock:
            if self.images is None:
                self.images = ImageCache(budget_bytes(budget_gb))
            self.images.budget = budget_bytes(budget_gb)
        return self.images.acquire(task)

    def release_image(self, tag: str) -> None:
        """The episode that held ``tag`` is graded: it may be evicted again."""
        if self.images is not None:
            self.images.release(tag)

    def open(self, config: SandboxConfig) -> tuple[str, str]:
        from ..sandbox import open_sandbox

        with self.starts:
            sandbox = open_sandbox(replace(config, run_id=self.run_id))
        sid = uuid.uuid4().hex
        with self.lock:
            self.sandboxes[sid] = sandbox
        return sid, sandbox.base_commit

    def call(self, sid: str, method: str, *args: Any, **kwargs: Any) -> Any:
        sandbox = self.sandboxes.get(sid)
        if sandbox is None:
            raise InfrastructureError(f"host {self.name}: sandbox {sid[:8]} is not open")
        return getattr(sandbox, method)(*args, **kwargs)

    def close(self, sid: str) -> Any:
        """Remove the sandbox; returns what it used (its ``usage``), None when not open."""
        with self.lock:
            sandbox = self.sandboxes.pop(sid, None)
            self.episodes_served += sandbox is not None
        if sandbox is None:
            return None
        sandbox.close()
        return getattr(sandbox, "usage", None)

    def grade(self, task: Task, patch: str, config: GradingConfig) -> TestReport:
        from ..sandbox.grading import grade

        return grade(task, patch, config)

    def reap(self) -> list[str]:
        """Remove this run's containers on this engine that no running episode holds (those an
        engine restart or a lost episode left behind)."""
        from ..sandbox.client import docker_client
        from ..sandbox.reaper import LABEL_RUN, reap, remove_containers

        client = docker_client()
        removed = reap(client)
        with self.lock:
            held = {getattr(s, "container_id", "") for s in self.sandboxes.values()}
        rows = client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={self.run_id}"})
        return removed + remove_containers(client, [r for r in rows if r["Id"] not in held],
                                           f"container(s) of run {self.run_id} no episode holds")
