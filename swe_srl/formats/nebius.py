"""Chat rows with role ``ai`` (nebius SWE-agent trajectories): ``{instance_id, model_name,
target (resolved), exit_status, generated_patch, trajectory[{role, text}]}``. The action is the
last fenced block of an ``ai`` text (a SWE-agent 0.x command); the observation is the next
``user`` text, with SWE-agent's prompt trailer removed."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from ..actions import make_action, parse_command
from ..errors import ActionParseError
from ..schemas import Action, Trajectory
from . import _common as c
from ._chat import Observed, read_chat_row

NAME = "nebius"


def matches(record: Mapping[str, Any]) -> bool:
    steps = c.maybe_json(record.get("trajectory"))
    if not isinstance(steps, list):
        return False
    if not steps:
        return "target" in record or "model_name" in record
    return any(isinstance(m, dict) and "role" in m and "action" not in m for m in steps[:3])


def parse_observation(text: str) -> Observed:
    text = c.strip_swe_agent_prompt(c.strip_observation_marker(text))
    return Observed(text, None, c.is_timeout(text))


def extract(message: Mapping[str, Any]) -> tuple[str, list[tuple[Action, str | None]]]:
    text = c.message_text(message)
    blocks = c.fenced_blocks(text)
    if not blocks or not blocks[-1].body.strip():
        raise ActionParseError("no fenced command block")
    body = blocks[-1].body
    try:
        action = parse_command(body)
    except ActionParseError:
        action = make_action("bash", {"command": body.strip()}, raw=body)
    return text[: blocks[-1].start].strip(), [(action, None)]


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One nebius SWE-agent trajectory row."""
    row = read_chat_row(record, "trajectory", source, extract=extract, observe=parse_observation,
                        no_steps="no agent steps found (no ai turn with a command block)",
                        assistant_roles=("ai", "assistant"), env_roles=("user",))
    task_id = row.task_id
    model = c.optional_str(record.get("model_name"))
    return Trajectory(
        task_id=task_id,
        problem_statement=row.statement,
        steps=tuple(row.walk.steps),
        source_format=NAME,
        source=source,
        trajectory_id=c.trajectory_id(task_id, model, row.actions),
        resolved=c.to_bool(record.get("target")),
        final_patch=c.optional_str(record.get("generated_patch")),
        exit_status=c.optional_str(record.get("exit_status")),
        model=model,
        metadata=row.walk.counts(),
    )
