"""Chat rows with XML function calls in the assistant text (SWE-smith trajectories, SWE-agent
1.x "xml" parsing): ``<function=bash><parameter=command>...</parameter></function>``;
observations are user messages starting ``OBSERVATION:``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..actions import find_xml_calls
from ..errors import ActionParseError
from ..schemas import Action, Trajectory
from . import _common as c
from ._chat import Observed, read_chat_row

NAME = "swe-smith"


def matches(record: Mapping[str, Any]) -> bool:
    if "info" in record or "trajectory_format" in record:
        return False
    messages = c.maybe_json(record.get("messages"))
    if not isinstance(messages, list):
        return False
    for message in messages[:12]:
        if isinstance(message, dict) and message.get("role") == "assistant":
            if message.get("tool_calls"):
                return False
            content = message.get("content")
            if isinstance(content, (str, list)) and "<function=" in c.text_of(content):
                return True
    return False


def parse_observation(text: str) -> Observed:
    text = c.strip_observation_marker(text)
    return Observed(text, None, c.is_timeout(text))


def extract(message: Mapping[str, Any]) -> tuple[str, list[tuple[Action, str | None]]]:
    text = c.message_text(message)
    calls = find_xml_calls(text)
    opened = text.count("<function=")
    # SWE-agent's xml parser rejects zero, several, or unterminated calls: a format error.
    if len(calls) != 1 or opened != 1:
        raise ActionParseError(f"expected exactly one <function=...> call, found {opened}")
    return text[: text.index("<function=")].strip(), [(calls[0], None)]


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One SWE-smith style row."""
    row = read_chat_row(record, "messages", source, extract=extract, observe=parse_observation,
                        no_steps="no agent steps found (no <function=...> calls)")
    task_id = row.task_id
    model = c.optional_str(record.get("model"))
    actions = row.actions
    return Trajectory(
        task_id=task_id,
        problem_statement=row.statement,
        steps=tuple(row.walk.steps),
        source_format=NAME,
        source=source,
        trajectory_id=c.optional_str(record.get("traj_id")) or c.trajectory_id(task_id, model, actions),
        resolved=c.to_bool(record.get("resolved")),
        final_patch=c.optional_str(record.get("patch")),
        exit_status=c.optional_str(record.get("exit_status")) or ("submitted" if actions[-1].is_submit else None),
        model=model,
        metadata=row.walk.counts(),
    )
