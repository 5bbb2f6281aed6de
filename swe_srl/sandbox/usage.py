"""What a container used, read from its engine once, just before the container is removed.

One stats request per container (``GET /containers/{id}/stats?stream=0&one-shot=1``):

* CPU: ``cpu_stats.cpu_usage.total_usage``, the nanoseconds of CPU its cgroup used since it
  started (every process in it, ``docker exec`` ones included).
* Memory peak: cgroup v1 reports ``memory_stats.max_usage`` (the cgroup's high-water mark,
  page cache included). cgroup v2 has no such field: the peak is then read from
  ``/sys/fs/cgroup/memory.peak`` inside the container (one more exec; kernels >= 5.19), and
  where that file is missing the usage at close stands in for it (a lower bound).

Cost: ``one-shot`` (API >= 1.41) skips the second sample the engine otherwise waits ~1 s for
(to fill ``precpu_stats``, which a cumulative total does not need). The engine answers at its
stats collector's next pass: at once when it is idle, within its 1 s interval when another
stats request is being served (see benchmarks/README.md). A container that is no longer
running has no stats: it counts as ``unmeasured``.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping, Optional

from ..schemas import ResourceUsage

log = logging.getLogger(__name__)

_ONE_SHOT_API = "1.41"
_CGROUP2_PEAK = "/sys/fs/cgroup/memory.peak"


def engine_stats(api: Any, container_id: str) -> dict:
    """One stats sample of a running container (empty fields when it is not running)."""
    from docker.utils import version_gte

    one_shot = version_gte(str(getattr(api, "_version", "0")), _ONE_SHOT_API)
    return api.stats(container_id, stream=False, **({"one_shot": True} if one_shot else {}))


def usage_from_stats(stats: Mapping[str, Any], cgroup_peak: Optional[int] = None) -> ResourceUsage:
    """One container's usage from an engine stats sample; ``cgroup_peak``: memory.peak read in
    the container (cgroup v2). No CPU figure (a stopped container) means unmeasured."""
    cpu = ((stats.get("cpu_stats") or {}).get("cpu_usage") or {}).get("total_usage")
    memory = stats.get("memory_stats") or {}
    if not cpu:
        return ResourceUsage(containers=1, unmeasured=1)
    if memory.get("max_usage"):
        peak, source = int(memory["max_usage"]), "max_usage"
    elif cgroup_peak:
        peak, source = cgroup_peak, "memory.peak"
    elif memory.get("usage"):
        peak, source = int(memory["usage"]), "usage_at_close"
    else:
        peak, source = None, ""
    return ResourceUsage(containers=1, cpu_seconds=round(cpu / 1e9, 3), memory_peak_bytes=peak,
                         memory_source=source)


def container_usage(api: Any, container_id: str) -> ResourceUsage:
    """CPU and memory peak of a running container so far (never raises: an engine that cannot
    say gives an unmeasured container). ``container_seconds`` is the caller's to fill in."""
    try:
        stats = engine_stats(api, container_id)
        memory = stats.get("memory_stats") or {}
        peak = _cgroup_peak(api, container_id) if memory and "max_usage" not in memory else None
        return usage_from_stats(stats, peak)
    except Exception as exc:  # costs are reported, never worth failing an episode for
        log.info("container %s: no stats (%s: %s)", container_id[:12], type(exc).__name__, exc)
        return ResourceUsage(containers=1, unmeasured=1)


def _cgroup_peak(api: Any, container_id: str) -> Optional[int]:
    """memory.peak of the container's own cgroup (v2, private cgroup namespace), or None."""
    try:
        exec_id = api.exec_create(container_id, ["cat", _CGROUP2_PEAK], stdout=True, stderr=False)["Id"]
        text = api.exec_start(exec_id).decode("ascii", errors="replace").strip()
    except Exception:
        return None
    return int(text) if text.isdigit() else None
