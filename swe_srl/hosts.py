"""Episodes over many Docker hosts, on Ray: one long-lived actor per Docker engine (the
``ray`` episode runner, :class:`swe_srl.runner.RayRunner`, runs episodes through it).

    driver (policy, agent loops in threads) --Ray--> HostWorker actor on each Docker host
                                                       owns that engine's client, its images,
                                                       its containers and their reaper

The agent loop stays in the driver, next to the policy (one batched generation service, no
model copy per host); each episode holds a slot on one host actor and sends it the sandbox
operations (:class:`RemoteSandbox`), then asks it to grade the patch in a fresh container on
the same engine. Containers never need network access, and engines are reached only through
their local socket by the actor on the same machine (or over SSH / TLS, as the user's
``docker`` URL says). Never expose an unauthenticated TCP Docker socket.

Scheduling: host ``name`` is a Ray custom resource ``swe_srl_host:<name>``; on a cluster, each
Docker machine joins with ``ray start --address=HEAD --resources='{"swe_srl_host:<name>": 1}'``.
With no cluster address a local Ray instance is started holding every host's resource (all
engines reachable from this machine).

Faults: an engine that stops answering turns the episodes running on it into infrastructure
failures (masked, counted), the host leaves the pool, and the rest finish on the other hosts.
Each episode has a wall-clock budget from container create to teardown: a host call that
does not return within it is the host's failure (infrastructure); the agent's own time limit
(the model's) is capped to the budget.
"""

from __future__ import annotations

import logging
import os
import shutil
import threading
import time
import uuid
from dataclasses import dataclass, field, replace
from typing import Any, Literal

from .errors import ConfigError, InfrastructureError, SweSrlError
from .sandbox.config import SandboxConfig
from .sandbox.grading import GradingConfig
from .schemas import ExecResult, ResourceUsage, Task, TestReport

log = logging.getLogger(__name__)

RESOURCE_PREFIX = "swe_srl_host:"


@dataclass(frozen=True)
class HostsConfig:
    """The Docker hosts of ``harness.sandbox: ray``. ``backend``: the older knob, kept so
    existing configs work: ``ray`` = ``harness.sandbox: ray``; ``local`` (default) leaves
    ``harness.sandbox`` to say where. ``hosts``: ``name=docker-url`` entries (``a=unix:///var/run/docker.sock``,
    ``b=ssh://user@host.example``); an empty url is the environment's default engine. ``ray_address``:
    a running cluster (``auto`` or ``ray://...``), or empty to start a local one.
    ``episodes_per_host`` / ``starts_per_host``: concurrent episodes / container starts per
    engine. ``episode_budget_s``: wall clock of one episode, create to teardown."""

    backend: Literal["local", "ray"] = "local"
    hosts: tuple[str, ...] = ()
    ray_address: str = ""
    episodes_per_host: int = 4
    starts_per_host: int = 2
    episode_budget_s: float = 3600.0
    call_grace_s: float = 60.0

    def __post_init__(self) -> None:
        if self.backend not in ("local", "ray"):
            raise ConfigError(f"hosts.backend must be 'local' or 'ray', not {self.backend!r}")
        if self.episodes_per_host < 1 or self.starts_per_host < 1:
            raise ConfigError("hosts.episodes_per_host and hosts.starts_per_host must be >= 1")
        if not self.episode_budget_s > 0:
            raise ConfigError(f"hosts.episode_budget_s must be > 0, got {self.episode_budget_s}")
        names = [name for name, _ in self.entries()]
        if len(set(names)) != len(names):
            raise ConfigError(f"hosts: duplicate host names in {list(self.hosts)}")

    def entries(self) -> list[tuple[str, str]]:
        """(name, docker url) per host; one unnamed local engine when none is listed."""
        out = []
        for i, entry in enumerate(self.hosts or ("local=",)):
            name, sep, url = str(entry).partition("=")
            if not sep:  # a bare url
                name, url = f"host{i}", str(entry)
            if not name or not all(c.isalnum() or c in "-_." for c in name):
                raise ConfigError(f"hosts: {entry!r} is not 'name=docker-url' (name: letters, digits, - _ .)")
            if url.startswith("tcp://") and "tls" not in url:
                raise ConfigError(f"hosts: {entry!r} is a plain TCP Docker socket (unauthenticated root on that "
                                  "machine); use its local socket on a Ray node there, or ssh://")
            out.append((name, url))
        return out


# --------------------------------------------------------------------------- the host actor


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
        from .sandbox.client import docker_client
        from .sandbox.images.build import base_image_tag, image_exists
        from .sandbox.images.cache import ImageCache
        from .sandbox.reaper import list_sandboxes

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
        from .sandbox.images.cache import ImageCache, budget_bytes

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
        from .sandbox import open_sandbox

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
        from .sandbox.grading import grade

        return grade(task, patch, config)

    def reap(self) -> list[str]:
        """Remove this run's containers on this engine that no running episode holds (those an
        engine restart or a lost episode left behind)."""
        from .sandbox.client import docker_client
        from .sandbox.reaper import LABEL_RUN, reap, remove_containers

        client = docker_client()
        removed = reap(client)
        with self.lock:
            held = {getattr(s, "container_id", "") for s in self.sandboxes.values()}
        rows = client.api.containers(all=True, filters={"label": f"{LABEL_RUN}={self.run_id}"})
        return removed + remove_containers(client, [r for r in rows if r["Id"] not in held],
                                           f"container(s) of run {self.run_id} no episode holds")


def _unwrap(exc: BaseException) -> BaseException:
    """The exception a host method raised, out of Ray's wrapper."""
    cause = getattr(exc, "cause", None)
    return cause if isinstance(cause, BaseException) else exc


class HostHandle:
    """The driver's view of one host: its actor, how many episodes it runs, whether it is up."""

    def __init__(self, name: str, actor: Any, slots: int) -> None:
        self.name, self.actor = name, actor
        self.slots = threading.BoundedSemaphore(slots)
        self.running = 0
        self.up = True
        self.episodes = 0

    def call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        import ray

        ref = getattr(self.actor, method).remote(*args, **kwargs)
        try:
            return ray.get(ref, timeout=timeout)
        except ray.exceptions.GetTimeoutError as exc:
            ray.cancel(ref, force=False)
            raise InfrastructureError(f"host {self.name}: {method} did not return within {timeout:.0f}s") from exc
        except ray.exceptions.RayActorError as exc:
            self.up = False
            raise InfrastructureError(f"host {self.name}: its actor died ({type(exc).__name__})") from exc
        except ray.exceptions.RayTaskError as exc:
            cause = _unwrap(exc)
            if isinstance(cause, SweSrlError):
                raise cause from None
            # An engine that went away mid-call (a connection error from the docker SDK), or a
            # harness bug on the host: the infrastructure's failure, never the model's.
            raise InfrastructureError(f"host {self.name}: {method} failed: {type(cause).__name__}: "
                                      f"{' '.join(str(cause).split())[:300]}") from None


class RemoteSandbox:
    """A sandbox on a host actor, for the driver's agent loop (the Sandbox protocol). Every
    call is bounded by what is left of the episode's budget."""

    def __init__(self, host: HostHandle, config: SandboxConfig, deadline: float, grace: float) -> None:
        self.host, self.config, self.deadline, self.grace = host, config, deadline, grace
        self.usage: ResourceUsage | None = None  # what the container used, as its host read it at removal
        # A start waits for a free container-start slot on the host: bounded by the budget only.
        self.sid, self.base_commit = host.call("open", config, timeout=self._left("opening a sandbox", None,
                                                                                 whole=True))

    def _left(self, what: str, command_timeout: float | None, *, whole: bool = False) -> float:
        left = self.deadline - time.monotonic()
        if left <= 0:
            raise InfrastructureError(f"host {self.host.name}: the episode budget ran out before {what}")
        return left if whole else min(left, (command_timeout or self.config.default_timeout) + self.grace)

    def _call(self, method: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        return self.host.call("call", self.sid, method, *args, timeout=self._left(method, timeout), **kwargs)

    def exec(self, command: str, timeout: float | None = None, *, workdir: str | None = None,
             env: dict | None = None) -> ExecResult:
        return self._call("exec", command, timeout, timeout=timeout, workdir=workdir, env=env)

    def write_file(self, path: str, content: str | bytes) -> None:
        self._call("write_file", path, content)

    def read_file(self, path: str) -> str:
        return self._call("read_file", path)

    def copy_in(self, host_path: str, container_path: str) -> None:
        raise InfrastructureError("copy_in of driver files is not available on a remote host")

    def copy_out(self, container_path: str, host_path: str) -> None:
        raise InfrastructureError("copy_out to driver files is not available on a remote host")

    def diff(self) -> str:
        return self._call("diff", timeout=max(60.0, self.config.default_timeout))

    def close(self) -> None:
        try:
            self.usage = self.host.call("close", self.sid, timeout=self.grace)
        except InfrastructureError as exc:  # its host's reaper removes it later
            log.warning("closing sandbox on host %s: %s", self.host.name, exc)

    def __enter__(self) -> RemoteSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass
class HostPool:
    """Host actors for one run: a slot on a live host per episode (the episode itself runs
    through :class:`swe_srl.runner.RayRunner`), hosts that stop answering leave the pool."""

    config: HostsConfig
    run_id: str = field(default_factory=lambda: f"ray-{uuid.uuid4().hex[:8]}")
    hosts: list[HostHandle] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _started_ray: bool = False

    def __post_init__(self) -> None:
        import ray

        entries = self.config.entries()
        if not ray.is_initialized():
            if self.config.ray_address:
                ray.init(address=self.config.ray_address, log_to_driver=False)
            else:
                ray.init(resources={RESOURCE_PREFIX + name: 1.0 for name, _ in entries},
                         include_dashboard=False, log_to_driver=False)
                self._started_ray = True
        available = ray.cluster_resources()
        worker = ray.remote(HostWorker)
        for name, url in entries:
            resource = RESOURCE_PREFIX + name
            if resource not in available:
                raise ConfigError(f"host {name}: no Ray node offers the resource {resource!r}; start the node on "
                                  f"that Docker host with --resources='{{\"{resource}\": 1}}'")
            concurrency = 4 * self.config.episodes_per_host + 4
            actor = worker.options(resources={resource: 0.001}, max_concurrency=concurrency, num_cpus=0,
                                   name=f"swe-srl-{self.run_id}-{name}").remote(
                name, url, self.run_id, self.config.starts_per_host)
            self.hosts.append(HostHandle(name, actor, self.config.episodes_per_host))
        for host in self.hosts:
            try:
                host.call("ping", timeout=120)
                host.call("reap", timeout=120)
            except InfrastructureError as exc:
                host.up = False
                log.warning("host %s is down at start: %s", host.name, exc)

    @property
    def slots(self) -> int:
        return self.config.episodes_per_host * len(self.hosts)

    def take(self) -> HostHandle | None:
        """A slot on the least loaded live host (waits for one); None when no host is up."""
        while True:
            with self._lock:
                live = [h for h in self.hosts if h.up]
                if not live:
                    return None
                host = min(live, key=lambda h: h.running)
                if host.slots.acquire(blocking=False):
                    host.running += 1
                    return host
            time.sleep(0.05)

    def give(self, host: HostHandle) -> None:
        """The episode that held a slot on ``host`` is over."""
        with self._lock:
            host.running -= 1
            host.episodes += 1
        host.slots.release()

    def release_image(self, host: HostHandle, image: str) -> None:
        """The episode that held ``image`` on ``host`` is graded: it may be evicted again."""
        try:
            host.call("release_image", image, timeout=self.config.call_grace_s)
        except InfrastructureError as exc:  # the host is gone, and its holds with its process
            log.warning("releasing %s on host %s: %s", image, host.name, exc)

    def check(self, host: HostHandle) -> None:
        """After an infrastructure failure: is the host's engine still there? If not, it
        leaves the pool (its running episodes fail on their own)."""
        try:
            host.call("ping", timeout=30)
        except InfrastructureError as exc:
            if host.up:
                log.warning("host %s leaves the pool: %s", host.name, exc)
            host.up = False

    def per_host(self) -> dict[str, int]:
        return {h.name: h.episodes for h in self.hosts}

    def close(self) -> None:
        import ray

        for host in self.hosts:
            if host.up:
                try:
                    host.call("reap", timeout=60)
                except InfrastructureError as exc:
                    log.warning("reaping host %s: %s", host.name, exc)
            ray.kill(host.actor)
        if self._started_ray:
            ray.shutdown()

    def __enter__(self) -> HostPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
