"""What a container used, read once, just before the container is removed: the CPU time and
the memory high-water mark of its cgroup (every process in it, ``docker exec`` ones included).

Two ways to read the same kernel counters, cheapest first:

1. On the engine's own machine (the local engine, or a Ray host actor next to its engine), the
   container's cgroup files, found through its init process (``State.Pid``): one inspect call
   plus a few file reads, a few ms. Used only when that process's cgroup names the container
   (so a pid from another pid namespace, or a remote engine's, is never misread).
2. Otherwise the engine's stats: one ``GET /containers/{id}/stats?stream=0&one-shot=1``.
   ``one-shot`` (API >= 1.41) skips the second sample the engine otherwise waits ~1 s for (to
   fill ``precpu_stats``, which a cumulative total does not need), but the engine still answers
   at its stats collector's next pass: at once when the collector is idle, after up to 1 s when
   another stats request was served within the last second (concurrent episodes closing).

Memory peak: cgroup v1 has the cgroup's high-water mark (``memory.max_usage_in_bytes``, the
engine's ``max_usage``; page cache included). cgroup v2 has ``memory.peak`` (kernels >= 5.19;
through the engine it is read by an exec in the container); without it, the usage at close
stands in (a lower bound). A container that is no longer running counts as ``unmeasured``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ..schemas import ResourceUsage

log = logging.getLogger(__name__)

_ONE_SHOT_API = "1.41"
_CGROUP2_PEAK = "/sys/fs/cgroup/memory.peak"
_V1_CPU_DIRS = ("cpuacct", "cpu,cpuacct", "cpuacct,cpu")


def container_usage(api: Any, container_id: str) -> ResourceUsage:
    """CPU and memory peak of a container so far (never raises: an engine that cannot say gives
    an unmeasured container). ``container_seconds`` is the caller's to fill in."""
    unmeasured = ResourceUsage(containers=1, unmeasured=1)
    try:
        state = api.inspect_container(container_id).get("State") or {}
        if not state.get("Running"):
            return unmeasured
        local = cgroup_usage(int(state.get("Pid") or 0), container_id)
        if local is not None:
            return local
        stats = engine_stats(api, container_id)
        memory = stats.get("memory_stats") or {}
        peak = _exec_cgroup_peak(api, container_id) if memory and "max_usage" not in memory else None
        return usage_from_stats(stats, peak)
    except Exception as exc:  # costs are reported, never worth failing an episode for
        log.info("container %s: no usage figures (%s: %s)", container_id[:12], type(exc).__name__, exc)
        return unmeasured


def cgroup_usage(pid: int, container_id: str, root: Path = Path("/")) -> ResourceUsage | None:
    """The container's cgroup counters read on this machine through its init process ``pid``,
    or None when they cannot be (not this machine's process, not the container's cgroup, no
    such files). ``root``: where /proc and /sys are (tests)."""
    if pid <= 0:
        return None
    try:
        lines = (root / "proc" / str(pid) / "cgroup").read_text().splitlines()
    except OSError:
        return None
    paths: dict[str, str] = {}
    for line in lines:
        _, controllers, path = line.split(":", 2)
        if container_id in path and ".." not in path:  # the container's own cgroup, nothing else
            paths.update({name: path.lstrip("/") for name in controllers.split(",")})
    mount = root / "sys" / "fs" / "cgroup"
    try:
        if "memory" in paths and "cpuacct" in paths:  # cgroup v1
            cpu_dir = next(mount / d / paths["cpuacct"] for d in _V1_CPU_DIRS
                           if (mount / d / paths["cpuacct"]).is_dir())
            cpu = int((cpu_dir / "cpuacct.usage").read_text()) / 1e9
            peak = int((mount / "memory" / paths["memory"] / "memory.max_usage_in_bytes").read_text())
            return _usage(cpu, peak, "max_usage")
        if "" in paths:  # cgroup v2: one unified hierarchy
            folder = mount / paths[""]
            stat = dict(line.split(" ", 1) for line in (folder / "cpu.stat").read_text().splitlines() if " " in line)
            cpu = int(stat["usage_usec"]) / 1e6
            if (folder / "memory.peak").is_file():
                return _usage(cpu, int((folder / "memory.peak").read_text()), "memory.peak")
            return _usage(cpu, int((folder / "memory.current").read_text()), "usage_at_close")
    except (OSError, ValueError, KeyError, StopIteration):
        return None
    return None


def _usage(cpu_seconds: float, peak: int | None, source: str) -> ResourceUsage:
    return ResourceUsage(containers=1, cpu_seconds=round(cpu_seconds, 3), memory_peak_bytes=peak,
                         memory_source=source if peak is not None else "")


def engine_stats(api: Any, container_id: str) -> dict:
    """One stats sample of a running container through the engine (empty fields when it is
    not running)."""
    from docker.utils import version_gte

    one_shot = version_gte(str(getattr(api, "_version", "0")), _ONE_SHOT_API)
    return api.stats(container_id, stream=False, **({"one_shot": True} if one_shot else {}))


def usage_from_stats(stats: Mapping[str, Any], cgroup_peak: int | None = None) -> ResourceUsage:
    """One container's usage from an engine stats sample; ``cgroup_peak``: memory.peak read in
    the container (cgroup v2). No CPU figure (a stopped container) means unmeasured."""
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = stats.get("memory_stats") or {}
    if not cpu:
        return ResourceUsage(containers=1, unmeasured=1)
    if memory.get("max_usage"):
        return _usage(cpu / 1e9, int(memory["max_usage"]), "max_usage")
    if cgroup_peak:
        return _usage(cpu / 1e9, cgroup_peak, "memory.peak")
    return _usage(cpu / 1e9, int(memory["usage"]) if memory.get("usage") else None, "usage_at_close")


def _exec_cgroup_peak(api: Any, container_id: str) -> int | None:
    """memory.peak of the container's own cgroup, read in the container (cgroup v2 with a
    private cgroup namespace), or None."""
    try:
        exec_id = api.exec_create(container_id, ["cat", _CGROUP2_PEAK], stdout=True, stderr=False)["Id"]
        text = api.exec_start(exec_id).decode("ascii", errors="replace").strip()
    except Exception:
        return None
    return int(text) if text.isdigit() else None
