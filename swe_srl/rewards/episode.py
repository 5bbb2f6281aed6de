"""The reward of a whole agent episode (``--method rlvr`` / ``hybrid``): pure arithmetic on
the grading report and the episode's actions (no torch, no docker).

rlvr: the test reward alone. ``resolved`` shape: 1.0 when every FAIL_TO_PASS and
PASS_TO_PASS test passes, else 0.0; ``f2p_fraction`` shape: the fraction of FAIL_TO_PASS
tests that pass, 0.0 when any PASS_TO_PASS test fails. An empty patch scores 0.0.

hybrid: ``weights.similarity * similarity + weights.tests * tests``. The similarity
component compares each policy turn with the expert trajectory of the same task under a
fixed alignment: policy turn ``i`` (0-based, format errors included) is compared with
expert step ``min(i, N - 1)``, so turns past the expert's length are compared with its
last action (its submit) and a long episode pays for every wasted turn. A turn that broke
the format (no action) scores -1; a turn with an action scores its similarity to the expert's
action with the SRL reward's metric and settings (``reward.similarity``, ``reward.compare``,
``reward.tool_mismatch``; :mod:`swe_srl.rewards.compare`). The component is the mean over the
episode's turns (-1 for an episode without any turn).

A None component (the grading harness failed: nothing is known) with a nonzero weight makes
the episode's reward None: left out of its group, never scored 0.
"""

from __future__ import annotations

from typing import Literal, Mapping, Optional, Sequence

from ..errors import InputError
from ..schemas import Action, TestReport
from .combine import combine
from .compare import ActionSimilarity
from .similarity import FORMAT_VIOLATION

TESTS, SIMILARITY = "tests", "similarity"
TestRewardShape = Literal["resolved", "f2p_fraction"]


def reward_from_tests(report: Optional[TestReport], shape: TestRewardShape = "resolved") -> Optional[float]:
    """The test component of one episode; None when the harness failed (or never ran)."""
    if report is None or report.infra_error:
        return None
    if shape == "resolved":
        return 1.0 if report.resolved else 0.0
    if not report.patch_applied or report.pass_to_pass < 1.0:
        return 0.0
    return float(report.fail_to_pass)


def expert_index(turn: int, num_expert_steps: int) -> int:
    """The expert step policy turn ``turn`` is compared with (see the module docstring)."""
    return min(turn, num_expert_steps - 1)


def turn_similarities(actions: Sequence[Optional[Action]], expert_actions: Sequence[str],
                      scorer: ActionSimilarity = ActionSimilarity()) -> list[float]:
    """Per policy turn: -1 for a format error (None), else the similarity of its action to
    the aligned expert action (text in any syntax, e.g. canonical XML)."""
    if not expert_actions:
        raise InputError("hybrid similarity needs an expert trajectory with at least one step")
    return [FORMAT_VIOLATION if action is None
            else scorer.score(action, expert_actions[expert_index(i, len(expert_actions))])
            for i, action in enumerate(actions)]


def episode_similarity(actions: Sequence[Optional[Action]], expert_actions: Sequence[str],
                       scorer: ActionSimilarity = ActionSimilarity()) -> float:
    """The hybrid similarity component: mean over turns, -1 without any turn."""
    scores = turn_similarities(actions, expert_actions, scorer)
    return sum(scores) / len(scores) if scores else FORMAT_VIOLATION


def episode_reward(components: Mapping[str, Optional[float]], weights: Mapping[str, float]) -> Optional[float]:
    """Weighted sum of the components; None when a weighted component is None."""
    return combine({name: [value] for name, value in components.items()}, weights)[0]


def reward_weights(method: str, similarity_weight: float, tests_weight: float) -> dict[str, float]:
    """rlvr trains on the test reward alone; hybrid on both components, as configured."""
    if method == "rlvr":
        return {TESTS: 1.0}
    return {SIMILARITY: similarity_weight, TESTS: tests_weight}


def score_episode(report: Optional[TestReport], actions: Sequence[Optional[Action]],
                  expert_actions: Sequence[str], weights: Mapping[str, float], *,
                  shape: TestRewardShape = "resolved", scorer: ActionSimilarity = ActionSimilarity(),
                  infra_error: Optional[str] = None) -> tuple[dict[str, Optional[float]], Optional[float]]:
    """(components, reward) of one episode: the test component, the similarity component when
    ``weights`` has one (None after an infrastructure failure), and their weighted sum (None
    after an infrastructure failure)."""
    components: dict[str, Optional[float]] = {TESTS: reward_from_tests(report, shape)}
    if SIMILARITY in weights:
        components[SIMILARITY] = None if infra_error else episode_similarity(actions, expert_actions, scorer)
    return components, (None if infra_error else episode_reward(components, weights))
