"""What of an action the SRL reward compares (``compare``) and how (``similarity``).

compare, for the text modes ``difflib`` / ``cydifflib`` / ``lcs`` (:mod:`swe_srl.rewards.text`):
  * ``content`` (default): the text of what the action does (:func:`content_text`). For
    ``bash``, the command string alone. For any other tool, the tool name, then each argument
    value on its own line, keys in a fixed order (``actions.ARG_ORDER`` for the tools that
    have one, then the other keys sorted); list values as space-separated items, numbers in
    decimal. Keys, tags and quoting are left out: they are the wrapper every call shares. The
    tool name still counts (a view scored against an edit starts from different text) but the
    ``<function=...>`` wrapper does not: ``ls`` against ``pwd`` scores 0.0, not 0.959.
  * ``call``: the whole canonical XML call, wrapper included (the reward before ``content``;
    for ablations). ~50 shared characters lift any two bash calls to ~0.8-1.

similarity ``args``: argument matching (NVIDIA PivotRL's idea). 0.0 unless the policy calls
the expert's tool with exactly the expert's set of argument keys; otherwise the mean over
those keys of ``cydifflib.SequenceMatcher(None, policy_value, expert_value,
autojunk=False).ratio()`` on the value texts (as in ``content``); a matching call without
arguments (``submit``) scores 1.0. It compares argument values itself, so ``compare`` does not
apply (leave it at ``content``; ``call`` with ``args`` is a configuration error). For a bash
call it equals ``content`` + ``cydifflib`` (one key, the command).

``tool_mismatch="zero"`` scores a call to another tool than the expert's 0.0 in every mode
(``args`` always does); ``"text"`` leaves it to the text similarity.

Expert actions come as text (a step target's canonical XML, a fenced bash block, or a command
string) and are parsed once (cached). One that does not parse is compared as its stripped text
by the text modes, and scores 0.0 under ``args`` (there is no tool to match).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal, Optional, Sequence

from ..actions import ARG_ORDER, parse_action, render_xml
from ..errors import ActionParseError, ConfigError
from ..schemas import Action
from .text import TEXT_MODES, similarities, similarity

SimilarityMode = Literal["difflib", "cydifflib", "lcs", "args"]
SIMILARITY_MODES: tuple[str, ...] = (*TEXT_MODES, "args")
Compare = Literal["content", "call"]
COMPARES: tuple[str, ...] = ("content", "call")
# What a call to another tool than the expert's scores: the plain similarity ("text"), or 0.
ToolMismatch = Literal["text", "zero"]
TOOL_MISMATCHES: tuple[str, ...] = ("text", "zero")


def _value_text(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return " ".join(str(v) for v in value)
    if isinstance(value, dict):
        return json.dumps(value, sort_keys=True)
    return str(value)


def _content_keys(action: Action) -> list[str]:
    order = ARG_ORDER.get(action.tool, ())
    return [k for k in order if k in action.arguments] + sorted(k for k in action.arguments if k not in order)


def content_text(action: Action) -> str:
    """What the action does, without the call syntax: for bash the command (and any other
    argument values after it), else the tool name and then the argument values, one a line."""
    keys = _content_keys(action)
    head = [action.tool]
    if action.tool == "bash" and "command" in action.arguments:
        keys, head = ["command", *(k for k in keys if k != "command")], []
    return "\n".join([*head, *(_value_text(action.arguments[k]) for k in keys)])


def compared_text(action: Action, compare: Compare = "content") -> str:
    """The text a text-mode similarity compares: :func:`content_text` or the canonical call."""
    return content_text(action) if compare == "content" else render_xml(action)


@lru_cache(maxsize=65536)
def expert_action(target: str) -> Optional[Action]:
    """The expert action of a step target in any syntax; None when it does not parse.
    Cached: a GRPO batch scores G completions against each target. Treat it as read-only."""
    try:
        return parse_action(target)
    except ActionParseError:
        return None


def canonical_target(target: str, compare: Compare = "content") -> tuple[str, Optional[str]]:
    """(compared text, tool) of an expert action given in any syntax. Text that does not
    parse is compared as it stands (stripped), with an unknown tool."""
    action = expert_action(target)
    if action is None:
        return target.strip(), None
    return compared_text(action, compare), action.tool


def args_similarity(candidate: Action, expert: Action) -> float:
    """The ``args`` mode (see the module docstring): 0 unless tool and key set match, else
    the mean cydifflib ratio of the argument values."""
    if candidate.tool != expert.tool or set(candidate.arguments) != set(expert.arguments):
        return 0.0
    if not expert.arguments:
        return 1.0
    ratios = [similarity(_value_text(candidate.arguments[k]), _value_text(expert.arguments[k]), "cydifflib")
              for k in expert.arguments]
    return sum(ratios) / len(ratios)


def check_reward_modes(similarity_mode: str, compare: str, tool_mismatch: str, where: str = "") -> None:
    """ConfigError (one line, naming the setting) for an unknown or contradictory mode."""
    if similarity_mode not in SIMILARITY_MODES:
        raise ConfigError(f"{where}similarity must be one of {list(SIMILARITY_MODES)}, got {similarity_mode!r}")
    if compare not in COMPARES:
        raise ConfigError(f"{where}compare must be one of {list(COMPARES)}, got {compare!r}")
    if tool_mismatch not in TOOL_MISMATCHES:
        raise ConfigError(f"{where}tool_mismatch must be one of {list(TOOL_MISMATCHES)}, got {tool_mismatch!r}")
    if similarity_mode == "args" and compare != "content":
        raise ConfigError(f"{where}similarity 'args' compares argument values itself; {where}compare "
                          f"applies to the text modes only: leave it at 'content' (got {compare!r})")


@dataclass(frozen=True)
class ActionSimilarity:
    """Scores well-formed policy actions against one expert action, in [0, 1]."""

    similarity: SimilarityMode = "cydifflib"
    compare: Compare = "content"
    tool_mismatch: ToolMismatch = "text"

    def __post_init__(self) -> None:
        check_reward_modes(self.similarity, self.compare, self.tool_mismatch)

    def scores(self, actions: Sequence[Action], target: str) -> list[float]:
        """The similarity of each action to the expert action ``target`` (text in any syntax)."""
        expert = expert_action(target)
        if self.similarity == "args":
            return [0.0 if expert is None else args_similarity(a, expert) for a in actions]
        reference = target.strip() if expert is None else compared_text(expert, self.compare)
        values = similarities([compared_text(a, self.compare) for a in actions], reference,
                              self.similarity)  # type: ignore[arg-type]  # a text mode here
        if self.tool_mismatch == "zero" and expert is not None:
            values = [0.0 if a.tool != expert.tool else v for a, v in zip(actions, values)]
        return values

    def score(self, action: Action, target: str) -> float:
        return self.scores([action], target)[0]
