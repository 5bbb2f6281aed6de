"""Every record survives a JSON round trip exactly; versions and bad input fail clearly."""

from __future__ import annotations

import json

import pytest

from swe_srl.errors import RecordError
from swe_srl.schemas import (
    SCHEMA_VERSION,
    Action,
    ContextRound,
    EpisodeResult,
    ExecResult,
    RewardResult,
    Step,
    StepTarget,
    Task,
    TestReport,
    Trajectory,
)

ACTION = Action(
    tool="str_replace_editor", arguments={"command": "view", "path": "/a.py", "view_range": [1, 9]}, raw="x"
)
TRAJ = Trajectory(
    task_id="repo__x-1",
    problem_statement="It breaks.\n",
    source_format="swe-smith",
    source="f.json:0",
    steps=(
        Step(action=ACTION, thought="look", observation="1 a", exit_code=0),
        Step(action=Action(tool="submit"), timed_out=True),
    ),
    resolved=True,
    final_patch="diff --git",
    exit_status="submitted",
    metadata={"format_errors": 1, "nested": {"a": [1]}},
)
RECORDS = [
    ACTION,
    TRAJ,
    TRAJ.steps[0],
    StepTarget(
        id="t#1",
        trajectory_id="t",
        task_id="repo__x-1",
        step_index=1,
        num_steps=2,
        problem_statement="p",
        context=(ContextRound(action="<function=bash>", observation="o"),),
        target="<function=submit>\n</function>",
        target_tool="submit",
        resolved=None,
    ),
    Task(
        instance_id="a__b-1",
        repo="a/b",
        base_commit="abc",
        problem_statement="p",
        fail_to_pass=("t::a",),
        pass_to_pass=("t::b", "t::c"),
        metadata={"k": 1},
    ),
    ExecResult(output="hi", exit_code=None, timed_out=True, duration=1.5),
    TestReport(instance_id="a", statuses={"t::a": "PASSED"}, resolved=True, fail_to_pass=1.0),
    RewardResult(value=None, components={"similarity": 0.5}, infra_error="container died"),
    EpisodeResult(trajectory=TRAJ, patch="", exit_reason="submitted", report=TestReport(instance_id="a")),
]


@pytest.mark.parametrize("record", RECORDS, ids=lambda r: type(r).__name__)
def test_json_round_trip_is_exact(record):
    data = json.loads(json.dumps(record.to_dict()))
    assert data["schema_version"] == SCHEMA_VERSION
    again = type(record).from_dict(data)
    assert again == record
    assert json.dumps(again.to_dict(), sort_keys=True) == json.dumps(record.to_dict(), sort_keys=True)


def test_newer_schema_version_is_refused():
    data = ACTION.to_dict() | {"schema_version": SCHEMA_VERSION + 1}
    with pytest.raises(RecordError, match="newer"):
        Action.from_dict(data)


def test_missing_field_and_wrong_type_are_record_errors():
    with pytest.raises(RecordError, match="missing required field 'tool'"):
        Action.from_dict({"arguments": {}})
    with pytest.raises(RecordError, match="expected an object"):
        Trajectory.from_dict(["not", "a", "dict"])
    with pytest.raises(RecordError):
        Action.from_dict({"tool": "bash", "arguments": "ls"})


def test_trajectory_id_defaults_to_task_id():
    assert Trajectory(task_id="x", problem_statement="", steps=(), source_format="f").trajectory_id == "x"
