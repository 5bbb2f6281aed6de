"""The SRL step reward: how similar the policy's action is to the expert's.

A chain of small pure functions of text (no torch, no docker):
completion -> :func:`parse_completion` (format check) -> canonical action text ->
:func:`similarity` against the re-canonicalised expert action -> reward in [-1, 1].

Format contract (:func:`parse_completion`), strict on purpose so the format signal is crisp:
  * exactly one ``</think>``; at most one ``<think>``, before it, with only whitespace before
    ``<think>``. The opening tag may be missing because many chat templates (Qwen3,
    DeepSeek-R1) put it in the prompt, so the completion starts inside the thought.
  * after ``</think>``: exactly one complete action (one ``<function=...>...</function>``
    for ``syntax="xml"``, one fenced bash block for ``"bash_block"``), no unterminated call,
    and only whitespace around it. Prose outside the think block would be reasoning that
    the agent scaffold drops; ``allow_prose=True`` accepts it anyway.
Anything else is a format violation, reward -1.

Similarity = difflib's ratio 2M/T (M matched characters, T total) with ``autojunk=False``.
difflib's default autojunk treats every character that fills more than 1% of a 200+ char
string as junk (spaces, ``e``, newlines), so long edits lose almost every match: a 348-char
edit scored 0.078 instead of 0.830 on real agent actions. Modes:
  * ``difflib``: the stdlib, the reference values;
  * ``cydifflib``: the same algorithm compiled, identical values, ~8x faster (falls back to
    ``difflib`` with a warning when not installed);
  * ``lcs``: rapidfuzz Indel normalised similarity, 2*LCS/T: much faster, a different
    metric (LCS >= difflib's greedy matching blocks, so values are equal or higher).
"""

from __future__ import annotations

import difflib
import re
import warnings
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, Literal, Mapping, Sequence

from rapidfuzz.distance import Indel

from ..actions import ActionSyntax, find_fenced_blocks, find_xml_calls, make_action, parse_action, render_xml
from ..errors import ActionParseError, ConfigError, InputError
from ..prompts import THINK_CLOSE, THINK_OPEN
from ..schemas import Action

try:  # compiled difflib; a core dependency, but the exact stdlib path must keep working
    import cydifflib as _cydifflib
except ImportError:  # pragma: no cover - depends on the environment
    _cydifflib = None

SimilarityMode = Literal["difflib", "cydifflib", "lcs"]
# What a completion calling another tool than the expert scores: the plain text similarity
# (the tool name is part of the canonical text, so it already costs), or 0.
ToolMismatch = Literal["text", "zero"]
SIMILARITY_MODES: tuple[str, ...] = ("difflib", "cydifflib", "lcs")
FORMAT_VIOLATION = -1.0

_FUNCTION_OPEN_RE = re.compile(r"<function=")
_cydifflib_warned = False


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
    if action is None:
        return None
    return ParsedCompletion(thought=thought, action=action, action_text=render_xml(action))


@lru_cache(maxsize=65536)
def canonical_target(target: str) -> tuple[str, str | None]:
    """(canonical text, tool) of an expert action given in any syntax. Text that does not
    parse is compared as it stands (stripped), with an unknown tool."""
    try:
        action = parse_action(target)
    except ActionParseError:
        return target.strip(), None
    return render_xml(action), action.tool


def _check_mode(mode: str) -> None:
    if mode not in SIMILARITY_MODES:
        raise ConfigError(f"similarity mode must be one of {list(SIMILARITY_MODES)}, got {mode!r}")


def _sequence_matcher(mode: SimilarityMode) -> Callable[..., Any]:
    """The SequenceMatcher class for a difflib-family mode."""
    global _cydifflib_warned
    if mode == "cydifflib":
        if _cydifflib is not None:
            return _cydifflib.SequenceMatcher
        if not _cydifflib_warned:
            warnings.warn("cydifflib is not installed; similarity mode 'cydifflib' falls back to "
                          "the stdlib difflib (same values, ~8x slower): pip install cydifflib",
                          RuntimeWarning, stacklevel=3)
            _cydifflib_warned = True
    return difflib.SequenceMatcher


def similarities(candidates: Sequence[str], reference: str,
                 mode: SimilarityMode = "cydifflib") -> list[float]:
    """``similarity(c, reference, mode)`` for each candidate, sharing the work on
    ``reference`` (difflib indexes its second sequence once for all candidates)."""
    _check_mode(mode)
    if mode == "lcs":
        return [Indel.normalized_similarity(c, reference) for c in candidates]
    matcher = _sequence_matcher(mode)(None, "", reference, autojunk=False)
    scores = []
    for candidate in candidates:
        if candidate == reference:
            scores.append(1.0)  # exact: identical strings give 2n/2n (and "" vs "" is 1.0)
            continue
        matcher.set_seq1(candidate)
        scores.append(matcher.ratio())
    return scores


def similarity(a: str, b: str, mode: SimilarityMode = "cydifflib") -> float:
    """Similarity of ``a`` to ``b`` in [0, 1] (1 = identical). For the difflib modes this is
    ``difflib.SequenceMatcher(None, a, b, autojunk=False).ratio()``, which is not always
    symmetric: pass the candidate first and the reference second."""
    return similarities([a], b, mode)[0]


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
    row). -1 for a format violation, else the similarity of the canonical action texts;
    with ``tool_mismatch="zero"`` a call to a different tool than the expert's scores 0."""

    mode: SimilarityMode = "cydifflib"
    tool_mismatch: ToolMismatch = "text"
    syntax: ActionSyntax = "xml"
    allow_prose: bool = False
    target_key: str = "target"

    def __post_init__(self) -> None:
        _check_mode(self.mode)
        if self.tool_mismatch not in ("text", "zero"):
            raise ConfigError(f"tool_mismatch must be 'text' or 'zero', got {self.tool_mismatch!r}")
        if self.syntax not in ("xml", "bash_block"):
            raise ConfigError(f"completion syntax must be 'xml' or 'bash_block', got {self.syntax!r}")

    @property
    def name(self) -> str:
        return "similarity"

    def __call__(self, completions: Sequence[str], samples: Sequence[Any]) -> list[float | None]:
        _check_batch(completions, samples)
        rewards: list[float | None] = [FORMAT_VIOLATION] * len(completions)
        # Group by expert action: a GRPO batch holds G completions per target, and the
        # matcher's index of the target is built once per group.
        groups: dict[str, list[tuple[int, ParsedCompletion]]] = {}
        for i, (completion, sample) in enumerate(zip(completions, samples)):
            parsed = parse_completion(completion, syntax=self.syntax, allow_prose=self.allow_prose)
            if parsed is not None:
                groups.setdefault(_sample_target(sample, self.target_key), []).append((i, parsed))
        for target, members in groups.items():
            reference, target_tool = canonical_target(target)
            scores = similarities([p.action_text for _, p in members], reference, self.mode)
            for (i, parsed), score in zip(members, scores):
                mismatch = target_tool is not None and parsed.action.tool != target_tool
                rewards[i] = 0.0 if mismatch and self.tool_mismatch == "zero" else score
        return rewards


@dataclass(frozen=True)
class FormatReward:
    """``valid`` for a well-formed completion, ``invalid`` otherwise (defaults 1 / 0, so its
    batch mean is the well-formed fraction)."""

    syntax: ActionSyntax = "xml"
    allow_prose: bool = False
    valid: float = 1.0
    invalid: float = 0.0

    @property
    def name(self) -> str:
        return "format"

    def __call__(self, completions: Sequence[str], samples: Sequence[Any]) -> list[float | None]:
        _check_batch(completions, samples)
        return [self.valid if parse_completion(c, syntax=self.syntax, allow_prose=self.allow_prose)
                else self.invalid for c in completions]


def srl_reward(completion: str, target: str, mode: SimilarityMode = "cydifflib", *,
               tool_mismatch: ToolMismatch = "text", syntax: ActionSyntax = "xml",
               allow_prose: bool = False) -> float:
    """The SRL reward of one completion against one expert action, in [-1, 1]."""
    fn = SimilarityReward(mode, tool_mismatch, syntax, allow_prose)
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
    def of(cls, rewards: Sequence[float]) -> "StepScores":
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
