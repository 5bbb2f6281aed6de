"""mini-swe-agent 1.x trajectories (``trajectory_format: "mini-swe-agent-1"``): chat messages
whose assistant turns hold exactly one fenced bash block; observations are
``<returncode>N</returncode><output>...</output>`` user messages."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from ..actions import make_action
from ..errors import ActionParseError, RecordError
from ..schemas import Action, Trajectory
from . import _common as c
from ._chat import Observed, first_user_index, walk_chat

NAME = "mini-swe-agent-1"
# mini-swe-agent's action regexes accept these fence tags (mswea_bash_command since 1.1x).
BASH_FENCES = frozenset({"bash", "sh", "shell", "mswea_bash_command"})

_RETURNCODE_RE = re.compile(
    r"\A\s*(?:<exception>(?P<exc>.*?)</exception>\s*)?<returncode>\s*(?P<code>-?\d+)\s*</returncode>[ \t]*\n?",
    re.DOTALL,
)
_OUTPUT_RE = re.compile(r"\A\s*<output>\n?(.*?)</output>\s*\Z", re.DOTALL)
_TIMEOUT_TEMPLATE_RE = re.compile(
    r"\AThe last command <command>.*?</command> timed out and has been killed\.\s*"
    r"The output of the command was:\s*(?:<output>\n?(?P<out>.*?)\n?</output>)?",
    re.DOTALL,
)


def matches(record: Mapping[str, Any]) -> bool:
    version = record.get("trajectory_format")
    if version is not None:
        return version == NAME
    return "info" in record and _has_messages(record) and not _uses_tool_calls(record)


def _has_messages(record: Mapping[str, Any]) -> bool:
    return isinstance(c.maybe_json(record.get("messages")), list)


def _uses_tool_calls(record: Mapping[str, Any]) -> bool:
    messages = c.maybe_json(record.get("messages"))
    return any(isinstance(m, dict) and m.get("tool_calls") for m in messages[:8])


def parse_observation(text: str) -> Observed:
    """``<returncode>N</returncode>`` -> exit code; the ``<output>`` body is the observation
    (the head/tail/warning variant for long outputs is kept as shown to the agent)."""
    timeout = _TIMEOUT_TEMPLATE_RE.match(text)
    if timeout:
        return Observed(timeout.group("out") or "", None, True)
    match = _RETURNCODE_RE.match(text)
    if not match:
        return Observed(text, None, c.is_timeout(text))
    rest = text[match.end():]
    output = _OUTPUT_RE.match(rest)
    body = output.group(1) if output else rest
    exception = (match.group("exc") or "").strip()
    if exception:
        body = f"{exception}\n{body}" if body else exception
    return Observed(body, int(match.group("code")), bool(exception) and c.is_timeout(exception))


def extract(message: Mapping[str, Any]) -> tuple[str, list[tuple[Action, str | None]]]:
    text = c.message_text(message)
    blocks = c.fenced_blocks(text, BASH_FENCES)
    if len(blocks) != 1:
        raise ActionParseError(f"expected exactly one bash block, found {len(blocks)}")
    command = blocks[0].body.strip("\n")
    if not command.strip():
        raise ActionParseError("empty bash block")
    thought = c.strip_label(text[: blocks[0].start])
    return thought, [(make_action("bash", {"command": command}, raw=blocks[0].body), None)]


def problem_and_start(messages: list) -> tuple[str, int]:
    """The issue from the task message and the index where the agent's turns begin."""
    index = first_user_index(messages)
    statement = c.extract_issue(c.message_text(messages[index]))
    if not statement:
        raise RecordError("the task message is empty")
    return statement, index + 1


def build(record: Mapping[str, Any], source: str, fmt: str, walk, statement: str,
          exit_status: str | None = None) -> Trajectory:
    """The Trajectory of a mini-swe-agent record (shared by both mini-swe-agent formats)."""
    if not walk.steps:
        raise RecordError("no agent steps found")
    info = c.as_dict(record.get("info"))
    config = c.as_dict(info.get("config"))
    model = c.optional_str(c.as_dict(config.get("model")).get("model_name")) or c.optional_str(record.get("model"))
    task_id = c.optional_str(record.get("instance_id")) or c.task_id_from_source(source)
    stats = c.as_dict(info.get("model_stats"))
    metadata = walk.counts() | {
        "mini_version": info.get("mini_version"),
        "api_calls": stats.get("api_calls"),
        "instance_cost": stats.get("instance_cost"),
    }
    return Trajectory(
        task_id=task_id,
        problem_statement=statement,
        steps=tuple(walk.steps),
        source_format=fmt,
        source=source,
        trajectory_id=c.trajectory_id(task_id, model, [s.action for s in walk.steps]),
        # mini-swe-agent does not grade its runs; a pipeline may have added a flag.
        resolved=c.to_bool(record.get("resolved", info.get("resolved"))),
        final_patch=c.optional_str(info.get("submission")),
        exit_status=c.optional_str(info.get("exit_status")) or exit_status,
        model=model,
        metadata=c.compact(metadata),
    )


def read(record: Mapping[str, Any], source: str = "") -> Trajectory:
    """One mini-swe-agent 1.x trajectory."""
    messages = c.require_list(record, "messages")
    statement, start = problem_and_start(messages)
    walk = walk_chat(messages, start, extract=extract, observe=parse_observation)
    return build(record, source, NAME, walk, statement)
