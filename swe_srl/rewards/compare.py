"""What of an action the SRL reward compares (``compare``) and how (``similarity``): the
``reward`` settings, :class:`RewardConfig`, declared and validated once here.

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
from collections.abc import Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Literal

from ..actions import ARG_ORDER, ActionSyntax, parse_action, render_xml
from ..errors import ActionParseError, ConfigError
from ..schemas import Action
from .text import TEXT_MODES, similarities, similarity

if TYPE_CHECKING:
    from .similarity import SimilarityReward

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
def expert_action(target: str) -> Action | None:
    """The expert action of a step target in any syntax; None when it does not parse.
    Cached: a GRPO batch scores G completions against each target. Treat it as read-only."""
    try:
        return parse_action(target)
    except ActionParseError:
        return None


def canonical_target(target: str, compare: Compare = "content") -> tuple[str, str | None]:
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


@dataclass(frozen=True)
class RewardConfig:
    """How a policy action is compared with the expert's (the ``reward`` config section): the
    SRL step reward, training validation, the hybrid per-turn similarity and ``swe-srl eval
    --mode steps`` (exact definitions in the module docstring). A format violation scores -1 in
    every mode. The one declaration of these settings: the scorer (:meth:`scorer`) and the step
    reward (:meth:`step_reward`) hold a ``RewardConfig``."""

    similarity: SimilarityMode = "cydifflib"
    """difflib / cydifflib: difflib's ratio 2M/T without autojunk (identical values, cydifflib
    ~8x faster); lcs: 2*LCS/T (rapidfuzz Indel: far faster, values equal or higher); args:
    argument matching, 0 unless the tool and the argument keys match, else the mean ratio of
    the argument values."""
    compare: Compare = "content"
    """What the text modes compare. content: what the action does (bash: the command; other
    tools: the tool name and the argument values), without the call syntax; call: the whole
    canonical XML call, wrapper included (any two bash calls share ~50 characters of it)."""
    tool_mismatch: ToolMismatch = "text"
    """text: a call to another tool than the expert's scores its plain similarity; zero: 0."""

    def __post_init__(self) -> None:
        if self.similarity not in SIMILARITY_MODES:
            raise ConfigError(f"reward.similarity must be one of {list(SIMILARITY_MODES)}, got {self.similarity!r}")
        if self.compare not in COMPARES:
            raise ConfigError(f"reward.compare must be one of {list(COMPARES)}, got {self.compare!r}")
        if self.tool_mismatch not in TOOL_MISMATCHES:
            raise ConfigError(f"reward.tool_mismatch must be one of {list(TOOL_MISMATCHES)}, "
                              f"got {self.tool_mismatch!r}")
        if self.similarity == "args" and self.compare != "content":
            raise ConfigError("reward.similarity 'args' compares argument values itself; reward.compare applies "
                              f"to the text modes only: leave it at 'content' (got {self.compare!r})")

    def scorer(self) -> ActionSimilarity:
        """The similarity of a well-formed action to the expert's, in [0, 1]."""
        return ActionSimilarity(self)

    def step_reward(self, syntax: ActionSyntax = "xml") -> SimilarityReward:
        """The SRL step reward with these settings, for completions in ``syntax``: the one
        factory training, validation and ``swe-srl eval --mode steps`` build it with."""
        from .similarity import SimilarityReward  # similarity.py imports this module

        return SimilarityReward(self, syntax=syntax)


@dataclass(frozen=True)
class ActionSimilarity:
    """Scores well-formed policy actions against one expert action, in [0, 1], under
    ``settings``."""

    settings: RewardConfig = RewardConfig()

    def scores(self, actions: Sequence[Action], target: str) -> list[float]:
        """The similarity of each action to the expert action ``target`` (text in any syntax)."""
        mode, compare = self.settings.similarity, self.settings.compare
        expert = expert_action(target)
        if mode == "args":
            return [0.0 if expert is None else args_similarity(a, expert) for a in actions]
        reference = target.strip() if expert is None else compared_text(expert, compare)
        values = similarities([compared_text(a, compare) for a in actions], reference,
                              mode)
        if self.settings.tool_mismatch == "zero" and expert is not None:
            values = [0.0 if a.tool != expert.tool else v for a, v in zip(actions, values)]
        return values

    def score(self, action: Action, target: str) -> float:
        return self.scores([action], target)[0]
