"""Rewards as pure functions of text and test reports: no torch, no docker, no sandbox (a
test in tests/rewards/test_testlog.py holds every module here to that).

``similarity`` (the SRL step reward), ``compare`` (what of an action it compares, and how: the
``reward`` settings, :class:`RewardConfig`) and
``combine`` (weighted sums with None = left out) are re-exported here, and ``similarities``
from ``text`` (the string metrics); the function ``similarity`` is not (it would shadow its
module's name). ``testlog`` (test logs -> statuses -> score) is imported on its own; the
harness that runs the tests in a container is :mod:`swe_srl.sandbox.grading`.
"""

from .combine import RewardFn, RewardValue, check_weights, combine
from .compare import (
    COMPARES,
    SIMILARITY_MODES,
    ActionSimilarity,
    Compare,
    RewardConfig,
    SimilarityMode,
    ToolMismatch,
    args_similarity,
    canonical_target,
    content_text,
)
from .similarity import FORMAT_VIOLATION, ParsedCompletion, SimilarityReward, parse_completion, srl_reward
from .text import similarities

__all__ = [
    "COMPARES", "FORMAT_VIOLATION", "SIMILARITY_MODES", "ActionSimilarity", "Compare", "ParsedCompletion",
    "RewardConfig", "RewardFn", "RewardValue", "SimilarityMode", "SimilarityReward", "ToolMismatch",
    "args_similarity", "canonical_target", "check_weights", "combine", "content_text", "parse_completion",
    "similarities", "srl_reward",
]
