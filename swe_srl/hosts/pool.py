"""The DRIVER half of :mod:`swe_srl.hosts`: what the eval / trainer process runs.
:class:`HostPool` starts (or joins) Ray, places one :class:`~swe_srl.hosts.actor.HostWorker`
actor per host by its custom resource, leases episode slots on the least loaded live host and
drops hosts that stop answering; :class:`HostHandle` is its view of one host (Ray calls with a
timeout, Ray's errors turned into infrastructure failures); :class:`RemoteSandbox` is the
Sandbox protocol over a host actor, each call bounded by what is left of the episode's budget.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InfrastructureError, SweSrlError
from ..sandbox.config import SandboxConfig
from ..schemas import ExecResult, ResourceUsage
from .actor import HostWorker
from .config import RESOURCE_PREFIX, HostsConfig

log = logging.getLogger(__name__)


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
