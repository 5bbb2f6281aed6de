"""Rewards as pure functions of text and test reports: no torch, no docker, no sandbox (a
test in tests/rewards/test_testlog.py holds every module here to that).

``similarity`` (the SRL step reward) and ``combine`` (weighted sums with None = left out)
are re-exported here, except the function ``similarity`` (it would shadow its module's
name). ``testlog`` (test logs -> statuses -> score) is imported on its own; the harness that
runs the tests in a container is :mod:`swe_srl.sandbox.grading`.
"""

from .combine import CombinedReward, RewardFn, RewardValue, check_weights, combine, reward_name
from .similarity import (
    FORMAT_VIOLATION,
    SIMILARITY_MODES,
    FormatReward,
    ParsedCompletion,
    SimilarityMode,
    SimilarityReward,
    ToolMismatch,
    canonical_target,
    parse_completion,
    similarities,
    srl_reward,
)

__all__ = [
    "FORMAT_VIOLATION", "SIMILARITY_MODES", "CombinedReward", "FormatReward",
    "ParsedCompletion", "RewardFn", "RewardValue", "SimilarityMode", "SimilarityReward",
    "ToolMismatch", "canonical_target", "check_weights", "combine", "parse_completion",
    "reward_name", "similarities", "srl_reward",
]
