"""What a run costs: sums over graded instances (eval) and episodes (rlvr / hybrid training),
and the same per resolved instance / per reward point. Pure arithmetic, no docker.

Per instance: the containers of the agent's episode and of its grading (``ResourceUsage``:
CPU-seconds and memory peak from the engine, container-seconds from create to removal), the
policy's tokens (prompt + completion over its turns) and the wall time. Instances that ended
in an infrastructure failure keep what they spent, summed apart: they never enter the cost
per resolved instance, as they never enter the resolve rate.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from .schemas import ResourceUsage


def usage_from_dict(data: Mapping[str, Any] | None) -> ResourceUsage | None:
    """A ResourceUsage from its JSON form (None stays None)."""
    return ResourceUsage.from_dict(data) if data else None


def usage_dict(usage: ResourceUsage | None) -> dict | None:
    """The JSON form of ``usage`` for result files (without the schema version)."""
    if usage is None:
        return None
    out = usage.to_dict()
    out.pop("schema_version", None)
    return out


def cost_totals(rows: Sequence[Any]) -> dict:
    """Sums over ``rows`` (objects with ``usage`` (a dict or None), ``prompt_tokens``,
    ``completion_tokens`` and ``wall_time``): CPU-, container- and wall-seconds, tokens, the
    containers counted and those unmeasured, and the largest and mean memory peak per row."""
    usages = [usage_from_dict(getattr(r, "usage", None)) for r in rows]
    total = ResourceUsage.total(usages)
    peaks = [u.memory_peak_bytes for u in usages if u is not None and u.memory_peak_bytes is not None]
    prompt = sum(int(r.prompt_tokens or 0) for r in rows)
    completion = sum(int(r.completion_tokens or 0) for r in rows)
    return {
        "instances": len(rows),
        "containers": total.containers,
        "unmeasured_containers": total.unmeasured,
        "cpu_seconds": round(total.cpu_seconds, 3),
        "container_seconds": round(total.container_seconds, 3),
        "memory_peak_bytes_max": max(peaks) if peaks else None,
        "memory_peak_bytes_mean": round(sum(peaks) / len(peaks)) if peaks else None,
        "memory_source": total.memory_source,
        "tokens": prompt + completion,
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "wall_seconds": round(sum(float(r.wall_time or 0.0) for r in rows), 3),
    }


PER_UNIT = ("cpu_seconds", "container_seconds", "tokens", "wall_seconds")


def per_unit(totals: Mapping[str, Any], units: float) -> dict | None:
    """``totals``' additive costs (those of :data:`PER_UNIT` it has) divided by ``units``
    (resolved instances, reward points); None when there are none to divide by."""
    if not units > 0:
        return None
    return {key: round(float(totals[key]) / units, 3) for key in PER_UNIT if key in totals}


def cost_summary(results: Sequence[Any]) -> dict:
    """summary.json's ``cost``: totals over the graded instances, the same per resolved
    instance (None when none resolved), and the infrastructure failures' totals apart.
    ``results``: objects with ``infra_error``, ``resolved`` and what :func:`cost_totals` reads."""
    graded = [r for r in results if not r.infra_error]
    infra = [r for r in results if r.infra_error]
    totals = cost_totals(graded)
    return {"graded": totals,
            "per_resolved_instance": per_unit(totals, sum(1 for r in graded if r.resolved)),
            "infrastructure_failures": cost_totals(infra)}


def describe_cost(cost: Mapping[str, Any]) -> str:
    """One line of :func:`cost_summary`'s figures for the console."""
    graded, per = cost["graded"], cost.get("per_resolved_instance")
    peak = graded.get("memory_peak_bytes_max")
    line = (f"cost: {graded['cpu_seconds']:.1f} CPU-s, {graded['container_seconds']:.1f} container-s, "
            f"{graded['tokens']:,} tokens, {graded['wall_seconds']:.1f} s wall"
            + (f", memory peak {peak / 2**20:.0f} MiB" if peak else ""))
    if per:
        line += f"; per resolved instance {per['cpu_seconds']:.1f} CPU-s, {per['tokens']:,.0f} tokens"
    lost = cost["infrastructure_failures"]
    if lost["instances"]:
        line += f"; infrastructure failures spent {lost['cpu_seconds']:.1f} CPU-s apart"
    return line
