"""The reward of a whole episode (rlvr / hybrid), pure: the test reward's shapes, the hybrid
alignment (inserted, skipped and malformed turns) and combination, None for infrastructure
failures. No torch, no docker."""

from __future__ import annotations

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.config import RewardWeights
from swe_srl.rewards.compare import RewardConfig
from swe_srl.rewards.episode import (
    SIMILARITY,
    EpisodeScore,
    align_turns,
    episode_reward,
    reward_from_tests,
    reward_weights,
    score_episode,
    turn_credit,
    turn_similarities,
)
from swe_srl.rewards.text import similarity
from swe_srl.schemas import TestReport

LS = make_action("bash", {"command": "ls"})
CAT = make_action("bash", {"command": "cat src/a.py"})
SUBMIT = make_action("submit", {})
EXPERT = [render_xml(LS), render_xml(CAT), render_xml(SUBMIT)]


def report(**fields) -> TestReport:
    return TestReport(instance_id="t", **fields)


def episode_similarity(actions, expert_actions) -> float:
    """The hybrid similarity component as training computes it (score_episode)."""
    score = score_episode(report(resolved=True), actions, expert_actions, {SIMILARITY: 1.0, "tests": 0.0})
    return score.components[SIMILARITY]


# --------------------------------------------------------------------------- test reward


def test_resolved_shape_is_binary_and_infra_is_none():
    assert reward_from_tests(report(resolved=True, fail_to_pass=1.0)) == 1.0
    assert reward_from_tests(report(resolved=False, fail_to_pass=0.5)) == 0.0
    assert reward_from_tests(report(infra_error="container died")) is None
    assert reward_from_tests(None) is None


def test_f2p_fraction_shape_scores_partial_fixes_but_not_regressions():
    assert reward_from_tests(report(fail_to_pass=0.5, pass_to_pass=1.0), "f2p_fraction") == 0.5
    assert reward_from_tests(report(fail_to_pass=1.0, pass_to_pass=0.9), "f2p_fraction") == 0.0
    assert reward_from_tests(report(fail_to_pass=0.0, patch_applied=False), "f2p_fraction") == 0.0
    assert reward_from_tests(report(fail_to_pass=1.0, infra_error="timeout"), "f2p_fraction") is None


# --------------------------------------------------------------------------- hybrid similarity


GREP = make_action("bash", {"command": "grep -rn parse src"})
EDIT = make_action("str_replace_editor", {"command": "str_replace", "path": "src/a.py", "old_str": "x", "new_str": "y"})
TEST = make_action("bash", {"command": "python -m pytest -q tests"})
LONG = [LS, GREP, CAT, EDIT, TEST, SUBMIT]
LONG_EXPERT = [render_xml(a) for a in LONG]


def test_alignment_is_order_preserving_and_maximises_the_total():
    assert align_turns([[1, 0, 0], [0, 1, 0], [0, 0, 1]]) == [0, 1, 2]
    assert align_turns([[1, 0, 0], [0.1, 0.2, 0.1], [0, 1, 0], [0, 0, 1]]) == [0, None, 1, 2]
    assert align_turns([[0, 0, 1], [1, 0, 0]]) == [2, None]  # crossing pairs: the better one
    assert align_turns([[1, 0], None, [0, 1]]) == [0, None, 1]  # a malformed turn aligns with nothing
    assert align_turns([]) == [] and align_turns([None]) == [None]
    assert align_turns([[0.0, 0.0]]) == [None]  # nothing similar: no pair


def test_an_expert_copy_scores_one():
    assert episode_similarity([LS, CAT, SUBMIT], EXPERT) == 1.0
    assert episode_similarity(LONG, LONG_EXPERT) == 1.0


def test_an_inserted_turn_costs_its_share_and_shifts_nothing():
    # The fixed alignment (turn i vs step i) compared every turn after the insertion with the
    # wrong expert step; the alignment skips the extra turn.
    scores = turn_similarities([LS, GREP, make_action("bash", {"command": "pwd"}), CAT, EDIT, TEST, SUBMIT],
                               LONG_EXPERT)
    assert scores == [1.0, 1.0, 0.0, 1.0, 1.0, 1.0, 1.0]
    assert episode_similarity([LS, GREP, make_action("bash", {"command": "pwd"}), CAT, EDIT, TEST, SUBMIT],
                              LONG_EXPERT) == pytest.approx(6 / 7)


def test_a_skipped_expert_step_costs_its_share():
    skipped = [LS, CAT, EDIT, TEST, SUBMIT]  # no grep
    assert turn_similarities(skipped, LONG_EXPERT) == [1.0] * 5
    assert episode_similarity(skipped, LONG_EXPERT) == pytest.approx(5 / 6)


def test_a_malformed_turn_scores_minus_one_and_shifts_nothing():
    turns = [LS, GREP, None, CAT, EDIT, TEST, SUBMIT]
    assert turn_similarities(turns, LONG_EXPERT) == [1.0, 1.0, -1.0, 1.0, 1.0, 1.0, 1.0]
    assert episode_similarity(turns, LONG_EXPERT) == pytest.approx((6 - 1) / 7)


def test_extra_turns_past_the_expert_are_not_all_compared_with_its_submit():
    scores = turn_similarities([LS, CAT, LS, LS, SUBMIT], EXPERT)
    assert scores == [1.0, 1.0, 0.0, 0.0, 1.0]  # the repeats align with nothing
    assert episode_similarity([LS, CAT, LS, LS, SUBMIT], EXPERT) == pytest.approx(3 / 5)


def test_per_turn_credit_is_each_turns_share_against_the_episode():
    assert turn_credit([1.0, 0.0, -1.0], 0.0, 0.5) == [0.5, 0.0, -0.5]
    assert turn_credit([], 0.3, 0.5) == []


def test_turn_similarity_uses_the_configured_comparison():
    pwd = make_action("bash", {"command": "pwd"})
    expert = [render_xml(LS)]
    assert turn_similarities([pwd], expert) == [0.0]  # content: "pwd" vs "ls"
    call = turn_similarities([pwd], expert, RewardConfig(compare="call").scorer())
    assert call == [pytest.approx(similarity(render_xml(pwd), render_xml(LS)))] and call[0] > 0.9
    assert turn_similarities([SUBMIT], expert, RewardConfig("args").scorer()) == [0.0]  # another tool


def test_format_error_turns_score_minus_one_and_the_sum_is_over_max_turns_steps():
    scores = turn_similarities([None, CAT, None], EXPERT)
    assert scores[0] == scores[2] == -1.0
    assert scores[1] == pytest.approx(1.0)
    assert episode_similarity([None, CAT, None], EXPERT) == pytest.approx((-1.0 + 1.0 - 1.0) / 3)
    assert episode_similarity([CAT], EXPERT) == pytest.approx(1 / 3)  # two expert steps missed
    assert episode_similarity([], EXPERT) == -1.0  # an episode without a turn did nothing


def test_hybrid_combination_weights_components_and_none_wins():
    default = RewardWeights()
    weights = reward_weights("hybrid", default.similarity, default.tests)
    assert weights == {"similarity": 0.5, "tests": 1.0}
    assert episode_reward({"similarity": 0.4, "tests": 1.0}, weights) == pytest.approx(1.2)
    assert episode_reward({"similarity": -1.0, "tests": 0.0}, weights) == pytest.approx(-0.5)
    assert episode_reward({"similarity": 0.4, "tests": None}, weights) is None
    only_tests = {"similarity": 0.0, "tests": 1.0}  # a zero weight never leaks its None
    assert episode_reward({"similarity": None, "tests": 1.0}, only_tests) == 1.0
    assert reward_weights("rlvr", default.similarity, default.tests) == {"tests": 1.0}


def test_score_episode_gives_components_turns_and_none_after_an_infrastructure_failure():
    weights = {"similarity": 0.5, "tests": 1.0}
    score = score_episode(report(resolved=True), [LS, None, SUBMIT], EXPERT, weights)
    assert score.turn_scores == (1.0, -1.0, 1.0)
    assert score.components == {"tests": 1.0, "similarity": pytest.approx(1 / 3)}
    assert score.reward == pytest.approx(1.0 + 0.5 / 3)
    score = score_episode(report(infra_error="engine gone"), [LS], EXPERT, weights, infra_error="engine gone")
    assert score.components == {"tests": None, "similarity": None} and score.reward is None
    assert score_episode(None, [], (), {"tests": 1.0}, infra_error="no image") == EpisodeScore({"tests": None}, None)
