"""Helpers every format reader shares: text of message content, issue extraction, observation
clean-up, booleans written as strings, and the content-derived trajectory id."""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import RecordError
from ..schemas import Action

# Keys whose value some dumps store as a JSON string (Parquet columns, HF exports).
JSON_COLUMNS = frozenset({
    "messages", "trajectory", "history", "info", "tools", "test_result", "instance",
    "metadata", "issue", "steps", "replay_config", "report",
})

_ISSUE_PATTERNS = tuple(re.compile(p, re.DOTALL) for p in (
    r"<pr_description>\s*(?:Consider the following PR description:\s*)?(.*?)\s*</pr_description>",
    r"<issue_description>\s*(.*?)\s*</issue_description>",
    r"<issue>\s*(.*?)\s*</issue>",
    r"ISSUE:\s*\n(.*?)\n\s*INSTRUCTIONS:",
    r"# Problem Statement\s*\n(.*?)\n\s*IMPORTANT:",
))
# Scaffold-specific markers of a command that ran past its time limit.
_TIMEOUT_RE = re.compile(
    r"timed out and has been killed|EXECUTION TIMED OUT|was cancelled because it took more than"
    r"|ExecutionTimeoutError|TimeoutExpired|\[The command timed out after|command timed out"
    r"|has no new output after \d+",
    re.IGNORECASE,
)
# SWE-agent 0.x appends its prompt to each observation in the chat view.
_SWE_AGENT_PROMPT_RE = re.compile(r"\n*\(Open file: [^\n]*\)\n\(Current directory: [^\n]*\)\n?bash-\$\s*\Z")
_OBSERVATION_MARKER_RE = re.compile(r"\AOBSERVATION:[ \t]*\n?")
_FENCE_RE = re.compile(r"```([\w+\-]*)[ \t]*\n(.*?)\n?```", re.DOTALL)


def maybe_json(value: Any) -> Any:
    """``value`` decoded when it is a string holding a JSON object or array, else unchanged."""
    if isinstance(value, str) and value[:1] in ("[", "{"):
        try:
            return json.loads(value)
        except json.JSONDecodeError:
            return value
    return value


def decode_json_columns(record: dict) -> dict:
    """The record with JSON-string columns (``messages`` as text, ...) decoded, in place."""
    for key in JSON_COLUMNS.intersection(record):
        record[key] = maybe_json(record[key])
    return record


def require_list(record: Mapping[str, Any], key: str) -> list:
    """``record[key]`` as a list (decoding a JSON string), else a RecordError naming the key."""
    value = maybe_json(record.get(key))
    if value is None:
        raise RecordError(f"missing {key!r}")
    if not isinstance(value, list):
        raise RecordError(f"{key!r} must be a list, got {type(value).__name__}")
    return value


def as_dict(value: Any) -> dict:
    """A mapping field that may be missing, None, or a JSON string; anything else is {}."""
    value = maybe_json(value)
    return dict(value) if isinstance(value, dict) else {}


def text_of(content: Any) -> str:
    """Text of a chat message's content: a string, a list of parts, or a ``{"text"}`` part."""
    if content is None:
        return ""
    if isinstance(content, str):
        return content
    if isinstance(content, dict):
        return str(content.get("text") or "")
    if isinstance(content, list):
        parts = []
        for part in content:
            if isinstance(part, str):
                parts.append(part)
            elif isinstance(part, dict) and part.get("type", "text") == "text":
                parts.append(str(part.get("text") or ""))
        return "\n".join(parts)
    raise RecordError(f"message content must be text or a list of parts, got {type(content).__name__}")


def message_text(message: Any) -> str:
    """Text of one chat message (``content``, or ``text`` in nebius rows)."""
    if not isinstance(message, dict):
        raise RecordError(f"message must be an object, got {type(message).__name__}")
    content = message.get("content")
    if content is None:
        content = message.get("text")
    return text_of(content)


def extract_issue(text: str) -> str:
    """The issue inside a task prompt (``<pr_description>``, ``<issue>``, SWE-agent's
    ``ISSUE: ... INSTRUCTIONS:``); the whole prompt when no known wrapper is found."""
    for pattern in _ISSUE_PATTERNS:
        match = pattern.search(text)
        if match and match.group(1).strip():
            return match.group(1).strip()
    return text.strip()


def to_bool(value: Any) -> bool | None:
    """True/False from a bool, 0/1, or "True"/"false"/"yes"; None when unknown."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered in ("true", "1", "yes", "resolved"):
            return True
        if lowered in ("false", "0", "no", "unresolved"):
            return False
    return None


def to_int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    if isinstance(value, str) and re.fullmatch(r"\s*-?\d+\s*", value):
        return int(value)
    return None


def optional_str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


_TIMEOUT_HINTS = ("time", "cancelled", "no new output")


def is_timeout(text: str) -> bool:
    """Whether an observation is a scaffold's notice that the command ran out of time."""
    head = text[:2000].lower()
    # A case-insensitive alternation is slow on long observations; most have none of these
    # words, so a substring pre-check skips the regex (5x faster build-dataset on big corpora).
    if not any(hint in head for hint in _TIMEOUT_HINTS):
        return False
    return bool(_TIMEOUT_RE.search(head))


def strip_observation_marker(text: str) -> str:
    """Drop the leading ``OBSERVATION:`` line that OpenHands/SWE-agent chat exports add."""
    return _OBSERVATION_MARKER_RE.sub("", text, count=1)


def strip_swe_agent_prompt(text: str) -> str:
    """Drop SWE-agent's ``(Open file: ..)(Current directory: ..) bash-$`` trailer."""
    return _SWE_AGENT_PROMPT_RE.sub("", text)


@dataclass(frozen=True)
class Fence:
    """One fenced code block: its language tag, body, and where its opening fence starts."""

    language: str
    body: str
    start: int


def fenced_blocks(text: str, languages: frozenset[str] | None = None) -> list[Fence]:
    """Fenced code blocks of ``text`` in order, optionally only those with given languages."""
    out = []
    for match in _FENCE_RE.finditer(text):
        lang = match.group(1).lower()
        if languages is None or lang in languages:
            out.append(Fence(lang, match.group(2), match.start()))
    return out


def strip_label(thought: str, label: str = "THOUGHT:") -> str:
    """Prose with the scaffold's section label removed (``THOUGHT: ...`` -> ``...``)."""
    thought = thought.strip()
    if thought.upper().startswith(label):
        thought = thought[len(label):].lstrip()
    return thought


def trajectory_id(task_id: str, model: str | None, actions: list[Action]) -> str:
    """A stable id for a trajectory without one of its own: the task id plus a short digest
    of its actions, so reruns on one task differ and the same trajectory read twice agrees."""
    digest = hashlib.blake2b(digest_size=5)
    digest.update(f"{task_id}\0{model or ''}".encode())
    for action in actions:
        digest.update(b"\0" + action.tool.encode())
        digest.update(repr(sorted(action.arguments.items())).encode())
    return f"{task_id}.{digest.hexdigest()}"


def task_id_from_source(source: str) -> str:
    """Last resort for formats whose records do not name their task: the file's stem."""
    path = source.rsplit(":", 1)[0]
    name = path.replace("\\", "/").rsplit("/", 1)[-1]
    stem = None
    while stem != name:  # x.traj.json.gz -> x
        stem = name
        for suffix in (".gz", ".traj", ".json", ".jsonl", ".ndjson"):
            name = name.removesuffix(suffix)
    return name or "unknown"


def compact(mapping: Mapping[str, Any]) -> dict:
    """``mapping`` without its None values (metadata stays small and JSON-clean)."""
    return {k: v for k, v in mapping.items() if v is not None}
