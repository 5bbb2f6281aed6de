"""The ``hosts`` settings (:class:`HostsConfig`: which Docker hosts, the Ray cluster, the
per-host bounds, the episode budget) and ``RESOURCE_PREFIX``, the Ray custom resource a host
``name`` is scheduled by (``swe_srl_host:<name>``); read by the driver
half (:mod:`swe_srl.hosts.pool`) and nested in the run configs (:mod:`swe_srl.config`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from ..errors import ConfigError

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
