"""swe-srl's own records: ``Trajectory.to_dict()`` lines (and ``EpisodeResult.to_dict()``
lines, whose ``trajectory`` is read), so saved agent episodes feed back into build-dataset."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any

from ..errors import RecordError
from ..schemas import Trajectory
from . import _common as c

NAME = "swe-srl"


def _is_trajectory(value: Any) -> bool:
    return isinstance(value, dict) and "steps" in value and "task_id" in value and "source_format" in value


def matches(record: Mapping[str, Any]) -> bool:
    return _is_trajectory(record) or (_is_trajectory(record.get("trajectory")) and "exit_reason" in record)


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """A Trajectory record (or the trajectory of an EpisodeResult record)."""
    data = record if _is_trajectory(record) else c.as_dict(record.get("trajectory"))
    if not data:
        raise RecordError("not a swe-srl Trajectory (needs task_id, steps, source_format)")
    traj = Trajectory.from_dict(data)
    if not traj.steps:
        raise RecordError("no agent steps found")
    resolved = traj.resolved
    report = c.as_dict(record.get("report"))
    if resolved is None and report and not report.get("infra_error"):
        resolved = c.to_bool(report.get("resolved"))  # an episode's grading sits beside it
    return dataclasses.replace(traj, source=source or traj.source, resolved=resolved,
                               source_format=traj.source_format or NAME)
