"""SWE-agent ``.traj`` files (0.x and 1.x): ``trajectory[]`` is already step-wise
(``action``, ``observation``, ``thought``, ``response``); ``history[]`` is the chat view, whose
non-demo assistant turns may carry the structured ``tool_calls`` of 1.x function calling."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from ..actions import from_tool_call, make_action, parse_command
from ..errors import ActionParseError, RecordError
from ..schemas import Action, Step, Trajectory
from . import _common as c

NAME = "swe-agent"


def matches(record: Mapping[str, Any]) -> bool:
    steps = c.maybe_json(record.get("trajectory"))
    if not isinstance(steps, list) or not ("history" in record or "info" in record):
        return False
    return not steps or (isinstance(steps[0], dict) and "action" in steps[0])


def _history_calls(history: list) -> Iterator[tuple[str, list]]:
    """(action string, tool_calls) of each non-demo assistant turn, in order."""
    for entry in history:
        if isinstance(entry, dict) and entry.get("role") == "assistant" and not entry.get("is_demo"):
            yield str(entry.get("action") or "").strip(), c.maybe_json(entry.get("tool_calls")) or []


def _structured(calls: list) -> Action | None:
    """The first tool call of a history turn (SWE-agent runs one call per step)."""
    call = calls[0] if isinstance(calls, list) and calls else None
    if not isinstance(call, dict):
        return None
    function = call.get("function") if isinstance(call.get("function"), dict) else call
    try:
        return from_tool_call(str(function.get("name") or ""), function.get("arguments"))
    except ActionParseError:
        return None


def _parse(action: str) -> Action:
    try:
        return parse_command(action)
    except ActionParseError:
        # An ACI command with broken quoting still ran as a shell line.
        return make_action("bash", {"command": action.strip()}, raw=action)


def _thought(entry: Mapping[str, Any]) -> str:
    thought = entry.get("thought")
    if isinstance(thought, str):
        return thought.strip()
    response = str(entry.get("response") or "")
    blocks = c.fenced_blocks(response)
    return (response[: blocks[-1].start] if blocks else response).strip()


def _steps(trajectory: list, history: list) -> tuple[list[Step], int]:
    calls = list(_history_calls(history))
    cursor = 0
    steps: list[Step] = []
    empty = 0
    for i, entry in enumerate(trajectory):
        if not isinstance(entry, dict):
            raise RecordError(f"trajectory[{i}] must be an object, got {type(entry).__name__}")
        command = entry.get("action")
        if not isinstance(command, str) or not command.strip():
            empty += 1  # an exit or a rejected turn: nothing ran
            continue
        action = None
        # Match the chat turn that produced this step by its action text, keeping order.
        for j in range(cursor, len(calls)):
            if calls[j][0] == command.strip():
                action, cursor = _structured(calls[j][1]), j + 1
                break
        observation = c.strip_swe_agent_prompt(c.strip_observation_marker(str(entry.get("observation") or "")))
        steps.append(Step(action=action or _parse(command), thought=_thought(entry),
                          observation=observation, timed_out=c.is_timeout(observation)))
    return steps, empty


def _problem_statement(record: Mapping[str, Any], replay: dict, history: list) -> str:
    problem = c.as_dict(replay.get("problem_statement"))
    if isinstance(problem.get("text"), str) and problem["text"].strip():
        return problem["text"].strip()
    for entry in history:
        if isinstance(entry, dict) and entry.get("role") == "user" and not entry.get("is_demo"):
            text = c.text_of(entry.get("content"))
            if text.strip():
                return c.extract_issue(text)
    if isinstance(record.get("problem_statement"), str):
        return record["problem_statement"].strip()
    raise RecordError("no problem statement (no replay_config and no user turn in history)")


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One SWE-agent trajectory."""
    trajectory = c.require_list(record, "trajectory")
    history = c.maybe_json(record.get("history")) or []
    if not isinstance(history, list):
        raise RecordError(f"'history' must be a list, got {type(history).__name__}")
    info = c.as_dict(record.get("info"))
    replay = c.as_dict(record.get("replay_config"))
    steps, empty = _steps(trajectory, history)
    if not steps:
        raise RecordError("no agent steps found (trajectory[] has no actions)")
    statement = _problem_statement(record, replay, history)
    task_id = (c.optional_str(c.as_dict(replay.get("problem_statement")).get("id"))
               or c.optional_str(record.get("instance_id")) or c.task_id_from_source(source))
    model = c.optional_str(c.as_dict(c.as_dict(replay.get("agent")).get("model")).get("name"))
    demos = sum(1 for e in history if isinstance(e, dict) and e.get("is_demo"))
    return Trajectory(
        task_id=task_id,
        problem_statement=statement,
        steps=tuple(steps),
        source_format=NAME,
        source=source,
        trajectory_id=c.trajectory_id(task_id, model, [s.action for s in steps]),
        resolved=c.to_bool(record.get("resolved", info.get("resolved"))),
        final_patch=c.optional_str(info.get("submission")),
        exit_status=c.optional_str(info.get("exit_status")),
        model=model,
        metadata=c.compact({"format_errors": empty, "demo_turns": demos,
                            "api_calls": c.as_dict(info.get("model_stats")).get("api_calls")}),
    )
