"""OpenHands evaluation output (``output.jsonl``): ``history[]`` is an event stream of action
events (``action``, ``args``) and observation events (``observation``, ``cause``, ``content``,
``extras.metadata.exit_code``). The older dialect has no ids (pair in order), flat events
(fields beside ``action``), ``[action, observation]`` pairs, and ``issue``/``success``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..actions import from_openhands_event
from ..errors import RecordError
from ..schemas import Step, Trajectory
from . import _common as c

NAME = "openhands"
# Observations that answer no tool call (memory recall, logged thoughts, state changes).
_NOT_TOOL_OBSERVATIONS = frozenset({"recall", "think", "agent_state_changed", "null", "message",
                                    "user_rejected", "agent_condensation"})
# Flat (old dialect) action events: bookkeeping keys that are not arguments.
_EVENT_KEYS = frozenset({"id", "timestamp", "source", "message", "action", "observation", "cause",
                         "tool_call_metadata", "llm_metrics", "args", "extras", "content"})


def matches(record: Mapping[str, Any]) -> bool:
    if "trajectory" in record or "messages" in record:
        return False
    return isinstance(c.maybe_json(record.get("history")), list) and any(
        k in record for k in ("instance", "instruction", "issue", "test_result"))


def _events(history: list) -> list[Mapping[str, Any]]:
    events = []
    for i, item in enumerate(history):
        if isinstance(item, list):  # very old dialect: [action, observation] pairs
            events.extend(e for e in item if isinstance(e, dict))
        elif isinstance(item, dict):
            events.append(item)
        else:
            raise RecordError(f"history[{i}] must be an event object, got {type(item).__name__}")
    return events


def _args(event: Mapping[str, Any]) -> dict:
    args = c.as_dict(event.get("args"))
    if not args and "args" not in event:
        args = {k: v for k, v in event.items() if k not in _EVENT_KEYS}
    return args


def _response_text(event: Mapping[str, Any], seen: set) -> str:
    """The model's prose for the response that emitted ``event`` (first event of it only)."""
    response = c.as_dict(c.as_dict(event.get("tool_call_metadata")).get("model_response"))
    key = response.get("id")
    if not response or key in seen:
        return ""
    seen.add(key)
    choices = response.get("choices")
    if isinstance(choices, list) and choices and isinstance(choices[0], dict):
        return c.text_of(c.as_dict(choices[0].get("message")).get("content")).strip()
    return ""


def _observed(event: Mapping[str, Any]) -> tuple[str, int | None, bool]:
    extras = c.as_dict(event.get("extras"))
    meta = c.as_dict(extras.get("metadata"))
    code = c.to_int(meta.get("exit_code", event.get("exit_code", extras.get("exit_code"))))
    text = c.text_of(event.get("content"))
    timed_out = c.is_timeout(str(meta.get("suffix") or "") + "\n" + text) and code in (-1, None)
    return text, (None if timed_out and code == -1 else code), timed_out


def _steps(events: list[Mapping[str, Any]]) -> tuple[list[dict], int]:
    steps: list[dict] = []
    by_id: dict[Any, dict] = {}
    seen_responses: set = set()
    messages = 0
    for event in events:
        if "observation" in event:
            if event["observation"] in _NOT_TOOL_OBSERVATIONS:
                continue
            if event.get("cause") is not None:
                step = by_id.get(event["cause"])
            else:  # older dialect without ids: the oldest action still waiting for its result
                step = next((s for s in steps if s["observation"] is None), None)
            if step is not None and step["observation"] is None:
                step["observation"] = _observed(event)
            continue
        if "action" not in event or event.get("source") in ("user", "environment"):
            continue
        args = _args(event)
        action = from_openhands_event({"action": event["action"], "args": args})
        if action is None:
            messages += event["action"] == "message" and event.get("source") == "agent"
            continue
        response_text = _response_text(event, seen_responses)
        thought = str(args.get("thought") or "").strip() or response_text
        step = {"action": action, "thought": thought, "observation": None, "id": event.get("id")}
        steps.append(step)
        if event.get("id") is not None:
            by_id[event["id"]] = step
    return steps, messages


def _problem(record: Mapping[str, Any]) -> tuple[str, str]:
    """(task id, problem statement) from ``instance``, the older ``issue``, or the instruction."""
    instance = c.as_dict(record.get("instance"))
    issue = c.as_dict(record.get("issue"))
    task_id = c.optional_str(record.get("instance_id")) or c.optional_str(instance.get("instance_id"))
    if not task_id and issue:
        task_id = f"{issue.get('owner', '')}/{issue.get('repo', '')}#{issue.get('number', '')}"
    statement = c.optional_str(instance.get("problem_statement"))
    if not statement and issue:
        statement = "\n".join(str(issue[k]) for k in ("title", "body") if issue.get(k))
    if not statement and isinstance(record.get("instruction"), str):
        statement = c.extract_issue(record["instruction"])
    if not task_id:
        raise RecordError("no instance_id (and no issue) to name the task")
    if not statement:
        raise RecordError("no problem statement (instance.problem_statement, issue or instruction)")
    return task_id, statement.strip()


def _resolved(record: Mapping[str, Any], test_result: dict) -> bool | None:
    report = c.as_dict(test_result.get("report"))
    for value in (report.get("resolved"), test_result.get("resolved"), record.get("resolved"),
                  record.get("success")):
        if c.to_bool(value) is not None:
            return c.to_bool(value)
    return None


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One OpenHands instance output."""
    events = _events(c.require_list(record, "history"))
    raw_steps, messages = _steps(events)
    if not raw_steps:
        raise RecordError("no agent steps found (no run/read/edit/finish events)")
    task_id, statement = _problem(record)
    steps = []
    for s in raw_steps:
        text, code, timed_out = s["observation"] or ("", None, False)
        steps.append(Step(action=s["action"], thought=s["thought"], observation=text,
                          exit_code=code, timed_out=timed_out))
    test_result = c.as_dict(record.get("test_result"))
    metadata = c.as_dict(record.get("metadata"))
    model = c.optional_str(c.as_dict(metadata.get("llm_config")).get("model"))
    error = c.optional_str(record.get("error"))
    finished = steps[-1].action.is_submit
    return Trajectory(
        task_id=task_id,
        problem_statement=statement,
        steps=tuple(steps),
        source_format=NAME,
        source=source,
        trajectory_id=c.trajectory_id(task_id, model, [s.action for s in steps]),
        resolved=_resolved(record, test_result),
        final_patch=c.optional_str(test_result.get("git_patch")) or c.optional_str(record.get("git_patch")),
        exit_status=f"error: {error}" if error else ("submitted" if finished else None),
        model=model,
        metadata=c.compact({"message_turns": messages, "agent_class": metadata.get("agent_class")}),
    )
