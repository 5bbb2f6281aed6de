"""Walk a chat transcript (system, task, then assistant turns and environment replies) into
steps. Used by every format whose trajectory is a list of chat messages."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ..actions import from_tool_call
from ..errors import ActionParseError, RecordError
from ..schemas import Action, Step
from ._common import extract_issue, maybe_json, message_text, optional_str, require_list, task_id_from_source


@dataclass(frozen=True)
class Observed:
    """An environment reply, cleaned: the text the agent saw, its exit code, whether it timed out."""

    text: str
    exit_code: int | None = None
    timed_out: bool = False


# extract(message) -> (thought, [(action, tool_call_id)]); raises ActionParseError for a
# format error; returns no calls for a plain message turn (OpenHands "message" action).
Extractor = Callable[[Mapping[str, Any]], "tuple[str, list[tuple[Action, str | None]]]"]
Observer = Callable[[str], Observed]


@dataclass
class _Pending:
    action: Action
    call_id: str | None
    thought: str
    observed: Observed | None = None


@dataclass
class ChatWalk:
    """Steps read from a transcript and what was dropped on the way."""

    steps: list[Step] = field(default_factory=list)
    format_errors: int = 0
    message_turns: int = 0

    def counts(self) -> dict[str, int]:
        return {"format_errors": self.format_errors, "message_turns": self.message_turns}


def first_user_index(messages: Sequence[Any], roles: tuple[str, ...] = ("user",)) -> int:
    """Index of the task message: the first message with a user role."""
    for i, message in enumerate(messages):
        if not isinstance(message, dict):
            raise RecordError(f"message {i} must be an object, got {type(message).__name__}")
        if message.get("role") in roles:
            return i
    raise RecordError("no user message holding the task")


@dataclass(frozen=True)
class ChatRow:
    """What every chat-row reader (SWE-Gym, SWE-smith, nebius) reads the same way."""

    statement: str
    walk: ChatWalk
    task_id: str

    @property
    def actions(self) -> list[Action]:
        return [s.action for s in self.walk.steps]


def read_chat_row(record: Mapping[str, Any], key: str, source: str, *, extract: Extractor,
                  observe: Observer, no_steps: str, **roles: tuple[str, ...]) -> ChatRow:
    """The issue (from the first user message), the steps after it and the task id of one
    chat row; RecordError(``no_steps``) when the transcript holds no action."""
    messages = require_list(record, key)
    start = first_user_index(messages)
    statement = extract_issue(message_text(messages[start]))
    walk = walk_chat(messages, start + 1, extract=extract, observe=observe, **roles)
    if not walk.steps:
        raise RecordError(no_steps)
    return ChatRow(statement, walk, optional_str(record.get("instance_id")) or task_id_from_source(source))


def walk_chat(
    messages: Sequence[Any],
    start: int,
    *,
    extract: Extractor,
    observe: Observer,
    assistant_roles: tuple[str, ...] = ("assistant",),
    env_roles: tuple[str, ...] = ("user", "tool"),
) -> ChatWalk:
    """Steps from ``messages[start:]``. Each assistant turn gives one step per action (thought on
    the first); its observations are the following environment messages, matched by
    ``tool_call_id`` where present, else in order. A turn without a parseable action is a format
    error: it is counted, and the scaffold's notice that follows it is not an observation."""
    walk = ChatWalk()
    pending: list[_Pending] = []
    skip_notice = False

    def flush() -> None:
        for p in pending:
            obs = p.observed or Observed("")
            walk.steps.append(Step(action=p.action, thought=p.thought, observation=obs.text,
                                   exit_code=obs.exit_code, timed_out=obs.timed_out))
        pending.clear()

    for index in range(start, len(messages)):
        message = messages[index]
        if not isinstance(message, dict):
            raise RecordError(f"message {index} must be an object, got {type(message).__name__}")
        role = message.get("role")
        if role in assistant_roles:
            flush()
            try:
                thought, calls = extract(message)
            except ActionParseError:
                walk.format_errors += 1
                skip_notice = True
                continue
            if not calls:
                walk.message_turns += 1
                skip_notice = True
                continue
            skip_notice = False
            pending.extend(_Pending(action, call_id, thought if i == 0 else "")
                           for i, (action, call_id) in enumerate(calls))
        elif role in env_roles:
            if skip_notice and not pending:
                skip_notice = False
                continue
            target = _match(pending, message.get("tool_call_id") if role == "tool" else None)
            if target is not None:
                target.observed = observe(message_text(message))
    flush()
    return walk


def _match(pending: list[_Pending], call_id: Any) -> _Pending | None:
    if call_id:
        for p in pending:
            if p.call_id == call_id and p.observed is None:
                return p
    for p in pending:
        if p.observed is None:
            return p
    return None


def tool_calls(message: Mapping[str, Any]) -> list[tuple[Action, str | None]]:
    """The OpenAI ``tool_calls`` of a message as actions (arguments as a JSON string or an
    object; the list itself may be JSON text). Raises ActionParseError for a broken call."""
    calls = maybe_json(message.get("tool_calls"))
    if not calls:
        return []
    if not isinstance(calls, list):
        raise ActionParseError(f"tool_calls must be a list, got {type(calls).__name__}")
    out = []
    for call in calls:
        if not isinstance(call, dict):
            raise ActionParseError("tool call must be an object")
        function = call.get("function") if isinstance(call.get("function"), dict) else call
        name = function.get("name")
        if not isinstance(name, str) or not name:
            raise ActionParseError("tool call without a function name")
        out.append((from_tool_call(name, function.get("arguments")), call.get("id")))
    return out
