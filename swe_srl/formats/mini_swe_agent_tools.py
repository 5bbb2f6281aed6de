"""mini-swe-agent 2.x trajectories (``trajectory_format: "mini-swe-agent-1.1"``): assistant
turns carry OpenAI ``tool_calls`` to ``bash``; observations are ``role: "tool"`` messages shaped
as in 1.x; a final ``role: "exit"`` message holds the submission."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..actions import make_action
from ..errors import ActionParseError
from ..schemas import Action, Trajectory
from . import _common as c
from . import mini_swe_agent as v1
from ._chat import tool_calls, walk_chat

NAME = "mini-swe-agent-1.1"


def matches(record: Mapping[str, Any]) -> bool:
    version = record.get("trajectory_format")
    if version is not None:
        return version == NAME
    return "info" in record and v1._has_messages(record) and v1._uses_tool_calls(record)


def extract(message: Mapping[str, Any]) -> tuple[str, list[tuple[Action, str | None]]]:
    thought = c.message_text(message).strip()
    calls = tool_calls(message)
    if not calls:
        # Some exports drop tool_calls but keep the parsed commands under extra.actions.
        actions = c.as_dict(message.get("extra")).get("actions")
        if isinstance(actions, list):
            calls = [(make_action("bash", {"command": a["command"]}), a.get("tool_call_id"))
                     for a in actions if isinstance(a, dict) and isinstance(a.get("command"), str)]
    if not calls:
        raise ActionParseError("assistant turn without a tool call")
    return thought, calls


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One mini-swe-agent 2.x trajectory."""
    messages = c.require_list(record, "messages")
    statement, start = v1.problem_and_start(messages)
    walk = walk_chat(messages, start, extract=extract, observe=v1.parse_observation,
                     env_roles=("user", "tool", "exit"))
    exit_status = None
    last = messages[-1] if messages else None
    if isinstance(last, dict) and last.get("role") == "exit":
        exit_status = c.optional_str(c.as_dict(last.get("extra")).get("exit_status"))
    return v1.build(record, source, NAME, walk, statement, exit_status)
