"""Chat-message datasets with OpenAI tool calls (SWE-Gym OpenHands trajectories): rows
``{instance_id, run_id?, resolved, messages[], tools[], test_result?}``; assistant turns call
``execute_bash`` / ``str_replace_editor`` / ``finish``; observations are ``role: "tool"``
messages starting ``OBSERVATION:``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..schemas import Action, Trajectory
from . import _common as c
from ._chat import Observed, read_chat_row, tool_calls

NAME = "swe-gym"
# OpenHands appends the exit code to bash observations.
_EXIT_CODE_RE = re.compile(
    r"\n?\[(?:Command finished with exit code|The command completed with exit code) (-?\d+)\.?\]\s*\Z")


def matches(record: Mapping[str, Any]) -> bool:
    if "info" in record or "trajectory_format" in record:
        return False
    messages = c.maybe_json(record.get("messages"))
    if not isinstance(messages, list):
        return False
    return any(isinstance(m, dict) and (m.get("tool_calls") or m.get("role") == "tool")
               for m in messages[:12])


def parse_observation(text: str) -> Observed:
    """Strip ``OBSERVATION:``; read OpenHands' ``[Command finished with exit code N]`` trailer."""
    text = c.strip_observation_marker(text)
    match = _EXIT_CODE_RE.search(text)
    code = int(match.group(1)) if match else None
    timed_out = c.is_timeout(text[-600:]) and code in (-1, None)
    return Observed(text, None if timed_out else code, timed_out)


def extract(message: Mapping[str, Any]) -> tuple[str, list[tuple[Action, str | None]]]:
    # An assistant turn without tool calls is an OpenHands message to the user, not an error.
    return c.message_text(message).strip(), tool_calls(message)


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One SWE-Gym style row."""
    row = read_chat_row(record, "messages", source, extract=extract, observe=parse_observation,
                        no_steps="no agent steps found (no assistant tool calls)")
    walk, task_id = row.walk, row.task_id
    model = c.optional_str(record.get("model")) or c.optional_str(record.get("model_name"))
    test_result = c.as_dict(record.get("test_result"))
    return Trajectory(
        task_id=task_id,
        problem_statement=row.statement,
        steps=tuple(walk.steps),
        source_format=NAME,
        source=source,
        trajectory_id=c.trajectory_id(task_id, model, row.actions),
        resolved=c.to_bool(record.get("resolved")),
        final_patch=c.optional_str(test_result.get("git_patch")) or c.optional_str(record.get("patch")),
        exit_status="submitted" if walk.steps[-1].action.is_submit else None,
        model=model,
        metadata=c.compact(walk.counts() | {"run_id": c.optional_str(record.get("run_id"))}),
    )
