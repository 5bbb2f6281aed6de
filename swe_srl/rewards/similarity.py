"""The SRL step reward: how similar the policy's action is to the expert's.

A chain of small pure functions of text (no torch, no docker):
completion -> :func:`parse_completion` (format check) -> the action -> its similarity to the
re-parsed expert action (:class:`~.compare.ActionSimilarity`) -> reward in [-1, 1].

Format contract (:func:`parse_completion`), strict on purpose so the format signal is crisp:
  * exactly one ``</think>``; at most one ``<think>``, before it, with only whitespace before
    ``<think>``. The opening tag may be missing because many chat templates (Qwen3,
    DeepSeek-R1) put it in the prompt, so the completion starts inside the thought.
  * after ``</think>``: exactly one complete action (one ``<function=...>...</function>``
    for ``syntax="xml"``, one fenced bash block for ``"bash_block"``), no unterminated call,
    and only whitespace around it. Prose outside the think block would be reasoning that
    the agent scaffold drops; ``allow_prose=True`` accepts it anyway.
  * the action has the arguments it needs (:func:`swe_srl.actions.missing_arguments`): a bash
    call with a command, an editor call with its command and path. Without this rule the
    tiny model's SRL runs collapsed to an empty ``<function=bash></function>`` on every
    step: well-formed, harmless, never -1.
Anything else is a format violation, reward -1.

The similarity of a well-formed action to the expert's is :class:`~.compare.ActionSimilarity`:
``compare`` (``content``, the default: what the action does, the tool and its argument values
without the call syntax; ``call``: the whole canonical XML call) and ``similarity`` (a text
metric, ``difflib`` / ``cydifflib`` / ``lcs``, see :mod:`.text`; or ``args``, argument
matching). The exact definitions are in :mod:`swe_srl.rewards.compare`.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from ..actions import ActionSyntax, find_fenced_blocks, find_xml_calls, make_action, missing_arguments, render_xml
from ..errors import ConfigError, InputError
from ..prompts import THINK_CLOSE, THINK_OPEN
from ..schemas import Action
from .compare import (  # noqa: F401  # re-exported: the reward's public names live here too
    SIMILARITY_MODES,
    ActionSimilarity,
    Compare,
    RewardConfig,
    SimilarityMode,
    ToolMismatch,
    canonical_target,
)
from .text import similarities, similarity  # noqa: F401  # re-exported

FORMAT_VIOLATION = -1.0

_FUNCTION_OPEN_RE = re.compile(r"<function=")


@dataclass(frozen=True)
class ParsedCompletion:
    """A well-formed completion: the thought, the action, its canonical (XML) text."""

    thought: str
    action: Action
    action_text: str


def _split_think(text: str) -> tuple[str, str] | None:
    """(thought, rest after ``</think>``), or None when the think block is malformed."""
    if text.count(THINK_CLOSE) != 1:
        return None
    head, rest = text.split(THINK_CLOSE)
    opens = head.count(THINK_OPEN)
    if opens > 1 or THINK_OPEN in rest:
        return None
    if opens == 1:
        before, head = head.split(THINK_OPEN)
        if before.strip():
            return None
    return head.strip(), rest


def _xml_action(rest: str, allow_prose: bool) -> Action | None:
    calls = find_xml_calls(rest)
    if len(calls) != 1 or len(_FUNCTION_OPEN_RE.findall(rest)) != 1:
        return None
    if not allow_prose and rest.strip() != calls[0].raw:
        return None
    return calls[0]


def _bash_block_action(rest: str, allow_prose: bool) -> Action | None:
    blocks = find_fenced_blocks(rest)
    # Two fences per block; a stray third one is an unterminated second block.
    if len(blocks) != 1 or rest.count("```") != 2:
        return None
    language, body = blocks[0]
    command = body.strip("\n")
    if language not in ("bash", "sh", "shell") or not command.strip():
        return None
    if not allow_prose and not (rest.strip().startswith("```") and rest.strip().endswith("```")):
        return None
    return make_action("bash", {"command": command}, raw=body)


def parse_completion(text: str, *, syntax: ActionSyntax = "xml",
                     allow_prose: bool = False) -> ParsedCompletion | None:
    """The thought and the single action of a policy completion, or None for a format
    violation (see the module docstring for the contract)."""
    parts = _split_think(text)
    if parts is None:
        return None
    thought, rest = parts
    if syntax == "xml":
        action = _xml_action(rest, allow_prose)
    elif syntax == "bash_block":
        action = _bash_block_action(rest, allow_prose)
    else:
        raise ConfigError(f"completion syntax must be 'xml' or 'bash_block', got {syntax!r}")
    if action is None or missing_arguments(action):  # a call that cannot do anything is malformed
        return None
    return ParsedCompletion(thought=thought, action=action, action_text=render_xml(action))


def _sample_target(sample: Any, key: str) -> str:
    value = sample.get(key) if isinstance(sample, Mapping) else getattr(sample, key, None)
    if not isinstance(value, str):
        raise InputError(f"reward sample has no text field {key!r} (the expert action to compare with)")
    return value


def _check_batch(completions: Sequence[str], samples: Sequence[Any]) -> None:
    if len(completions) != len(samples):
        raise InputError(f"reward got {len(completions)} completions but {len(samples)} samples")


@dataclass(frozen=True)
class SimilarityReward:
    """The SRL reward function: ``fn(completions, samples) -> list[float]``, each in [-1, 1].

    ``samples[i][target_key]`` is the expert action (canonical text, as in a step target
    row). -1 for a format violation, else the :class:`~.compare.ActionSimilarity` of the
    action to the expert's under ``settings`` (``reward.similarity``, ``reward.compare``,
    ``reward.tool_mismatch``; see that module)."""

    settings: RewardConfig = RewardConfig()
    syntax: ActionSyntax = "xml"
    allow_prose: bool = False
    target_key: str = "target"

    def __post_init__(self) -> None:
        if self.syntax not in ("xml", "bash_block"):
            raise ConfigError(f"completion syntax must be 'xml' or 'bash_block', got {self.syntax!r}")

    @property
    def name(self) -> str:
        return "similarity"

    @property
    def scorer(self) -> ActionSimilarity:
        return self.settings.scorer()

    def __call__(self, completions: Sequence[str], samples: Sequence[Any]) -> list[float | None]:
        _check_batch(completions, samples)
        rewards: list[float | None] = [FORMAT_VIOLATION] * len(completions)
        # Group by expert action: a GRPO batch holds G completions per target, and the
        # matcher's index of the target is built once per group.
        groups: dict[str, list[tuple[int, Action]]] = {}
        for i, (completion, sample) in enumerate(zip(completions, samples)):
            parsed = parse_completion(completion, syntax=self.syntax, allow_prose=self.allow_prose)
            if parsed is not None:
                groups.setdefault(_sample_target(sample, self.target_key), []).append((i, parsed.action))
        scorer = self.scorer
        for target, members in groups.items():
            for (i, _), score in zip(members, scorer.scores([action for _, action in members], target)):
                rewards[i] = score
        return rewards


def srl_reward(completion: str, target: str, mode: SimilarityMode = "cydifflib", *,
               compare: Compare = "content", tool_mismatch: ToolMismatch = "text",
               syntax: ActionSyntax = "xml", allow_prose: bool = False) -> float:
    """The SRL reward of one completion against one expert action, in [-1, 1]."""
    fn = SimilarityReward(RewardConfig(mode, compare, tool_mismatch), syntax, allow_prose)
    return float(fn([completion], [{"target": target}])[0])  # type: ignore[arg-type]  # never None


@dataclass(frozen=True)
class StepScores:
    """Sums behind the step-level validation metric (the SRL paper's): kept as sums so that
    distributed ranks can add them before dividing."""

    n: int = 0
    reward_sum: float = 0.0
    format_errors: int = 0
    similarity_sum: float = 0.0
    exact: int = 0

    @classmethod
    def of(cls, rewards: Sequence[float]) -> StepScores:
        """Scores from SRL rewards (-1 = format violation, else the similarity)."""
        valid = [r for r in rewards if r != FORMAT_VIOLATION]
        return cls(n=len(rewards), reward_sum=float(sum(rewards)), format_errors=len(rewards) - len(valid),
                   similarity_sum=float(sum(valid)), exact=sum(1 for r in valid if r >= 1.0))

    def metrics(self) -> dict[str, float]:
        """Mean reward (violations count -1), format-error rate, mean similarity of the
        well-formed answers, exact-match rate."""
        if self.n == 0:
            return {}
        return {"reward": self.reward_sum / self.n, "format_error_rate": self.format_errors / self.n,
                "similarity": self.similarity_sum / max(self.n - self.format_errors, 1),
                "exact_match": self.exact / self.n, "n": self.n}
