"""Typed, frozen configuration of one sandbox."""

from __future__ import annotations

import os
import re
import uuid
from dataclasses import dataclass, field
from typing import Literal

from ..errors import ConfigError

Backend = Literal["docker", "local"]
GitHygiene = Literal["scrub", "off"]

# One id per driver process unless the caller names its run: the reaper and `docker ps
# --filter label=swe-srl.run-id=...` group a run's containers by it.
_PROCESS_RUN_ID = f"run-{os.getpid()}-{uuid.uuid4().hex[:8]}"
_MEM_RE = re.compile(r"^\d+(\.\d+)?[bkmg]?$", re.IGNORECASE)


@dataclass(frozen=True)
class SandboxConfig:
    """Where and how an episode's commands run.

    ``image``: the task image (``swe-srl/task-<id>:<hash>``, a SWE-bench instance image, ...).
    ``workdir``: the repository inside the sandbox; commands start there and ``diff()`` covers it.
    ``network``: False (default) gives the container no network interface but loopback.
    ``mem_limit``: docker memory string; swap is capped to the same value, so a hog is killed.
    ``cpus``: CPU share (``nano_cpus`` = cpus * 1e9). ``pids_limit``: max processes (fork bombs).
    ``exec_output_limit``: bytes of output one command may return; the head and the tail are
    kept with a marker between them. ``default_timeout``: seconds per command when exec() gets none.
    ``run_id``: label grouping a run's containers (default: one per driver process).
    ``env``: extra environment for every command. ``backend``: ``docker`` isolates; ``local``
    runs commands on the host in a temp copy of ``source`` and does NOT isolate.
    ``git_hygiene``: ``scrub`` removes remotes, other refs, reflogs and unreachable objects
    at start so later history cannot leak the fix; ``off`` leaves the repository as the image has it.
    ``source``: the host repository the local backend copies (ignored by docker).
    ``max_patch_bytes``: ``diff()`` raises :class:`~swe_srl.errors.PatchTooLarge` past it,
    without reading the patch.
    ``disk_limit``: bytes the container may write (its writable layer; None = unlimited). A hard
    quota where the engine's storage driver has one, else checked after every command:
    past it, the command raises :class:`~swe_srl.errors.DiskLimitExceeded` (the model's result).
    """

    image: str = ""
    workdir: str = "/testbed"
    network: bool = False
    mem_limit: str = "2g"
    cpus: float = 1.0
    pids_limit: int = 512
    exec_output_limit: int = 100_000
    default_timeout: float = 60.0
    run_id: str = _PROCESS_RUN_ID
    env: dict = field(default_factory=dict)
    backend: Backend = "docker"
    git_hygiene: GitHygiene = "scrub"
    source: str | None = None
    startup_timeout: float = 60.0
    max_patch_bytes: int = 2_000_000
    disk_limit: str | None = "4g"

    def __post_init__(self) -> None:
        if self.backend not in ("docker", "local"):
            raise ConfigError(f"sandbox backend must be 'docker' or 'local', not {self.backend!r}")
        if self.git_hygiene not in ("scrub", "off"):
            raise ConfigError(f"sandbox git_hygiene must be 'scrub' or 'off', not {self.git_hygiene!r}")
        if self.backend == "docker" and not self.image:
            raise ConfigError("sandbox image is empty: build one with `swe-srl env build`")
        if self.backend == "local" and not self.source:
            raise ConfigError("the local sandbox backend needs `source` (a repository directory to copy)")
        if not self.workdir.startswith("/"):
            raise ConfigError(f"sandbox workdir must be absolute, not {self.workdir!r}")
        if not _MEM_RE.match(str(self.mem_limit)):
            raise ConfigError(f"sandbox mem_limit {self.mem_limit!r} is not like '2g' or '512m'")
        check_size("sandbox disk_limit", self.disk_limit)
        for name in ("cpus", "default_timeout", "startup_timeout"):
            if not getattr(self, name) > 0:
                raise ConfigError(f"sandbox {name} must be > 0, got {getattr(self, name)!r}")
        if self.pids_limit < 16:
            raise ConfigError(f"sandbox pids_limit {self.pids_limit} is too small to run a shell (min 16)")
        if self.exec_output_limit < 256:
            raise ConfigError(f"sandbox exec_output_limit must be >= 256 bytes, got {self.exec_output_limit}")
        if not re.fullmatch(r"[\w.\-]+", self.run_id):
            raise ConfigError(f"sandbox run_id {self.run_id!r}: use letters, digits, '.', '_' or '-'")

    @property
    def disk_limit_bytes(self) -> int | None:
        return None if self.disk_limit is None else size_in_bytes(self.disk_limit)

    @property
    def nano_cpus(self) -> int:
        return int(self.cpus * 1e9)


def check_size(name: str, value: str | None) -> None:
    """A ConfigError unless ``value`` is None or a docker size string ('4g', '512m')."""
    if value is not None and not _MEM_RE.match(str(value)):
        raise ConfigError(f"{name} {value!r} is not a size like '4g' or '512m' (or null for no limit)")


def size_in_bytes(text: str) -> int:
    """'512m' -> 536870912 (b, k, m, g suffixes, powers of 1024, as docker reads them)."""
    text = str(text).strip().lower()
    scale = {"b": 1, "k": 1024, "m": 1024 ** 2, "g": 1024 ** 3}.get(text[-1:], 1)
    return int(float(text.rstrip("bkmg")) * scale)
