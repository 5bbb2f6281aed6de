"""The reward of a whole episode (rlvr / hybrid), pure: the test reward's shapes, the hybrid
alignment rule and combination, None for infrastructure failures. No torch, no docker."""

from __future__ import annotations

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.config import RewardWeights
from swe_srl.rewards.episode import (episode_reward, episode_similarity, expert_index, reward_from_tests,
                                     reward_weights, score_episode, turn_similarities)
from swe_srl.rewards.compare import ActionSimilarity
from swe_srl.rewards.text import similarity
from swe_srl.schemas import TestReport

LS = make_action("bash", {"command": "ls"})
CAT = make_action("bash", {"command": "cat src/a.py"})
SUBMIT = make_action("submit", {})
EXPERT = [render_xml(LS), render_xml(CAT), render_xml(SUBMIT)]


def report(**fields) -> TestReport:
    return TestReport(instance_id="t", **fields)


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


def test_alignment_compares_turn_i_with_expert_step_min_i_and_last():
    assert [expert_index(i, 3) for i in range(6)] == [0, 1, 2, 2, 2, 2]
    assert expert_index(0, 1) == 0


def test_an_expert_copy_scores_one_and_extra_turns_are_compared_with_the_submit():
    assert episode_similarity([LS, CAT, SUBMIT], EXPERT) == 1.0
    # Turn 3 and 4 run past the expert: both are compared with its submit.
    scores = turn_similarities([LS, CAT, LS, LS, SUBMIT], EXPERT)
    expected_extra = similarity("ls", "submit")  # content: the command against the tool name
    assert scores[:2] == [1.0, 1.0] and scores[4] == 1.0
    assert scores[2] == scores[3] == pytest.approx(expected_extra) and expected_extra < 1.0


def test_turn_similarity_uses_the_configured_comparison():
    pwd = make_action("bash", {"command": "pwd"})
    assert turn_similarities([pwd], EXPERT) == [0.0]  # content: "pwd" vs "ls"
    call = turn_similarities([pwd], EXPERT, ActionSimilarity(compare="call"))
    assert call == [pytest.approx(similarity(render_xml(pwd), render_xml(LS)))] and call[0] > 0.9
    assert turn_similarities([SUBMIT], EXPERT, ActionSimilarity("args")) == [0.0]  # another tool


def test_format_error_turns_score_minus_one_and_the_mean_is_over_turns():
    scores = turn_similarities([None, CAT, None], EXPERT)
    assert scores[0] == scores[2] == -1.0
    assert scores[1] == pytest.approx(1.0)
    assert episode_similarity([None, CAT, None], EXPERT) == pytest.approx((-1.0 + 1.0 - 1.0) / 3)
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


def test_score_episode_gives_components_and_none_after_an_infrastructure_failure():
    weights = {"similarity": 0.5, "tests": 1.0}
    components, reward = score_episode(report(resolved=True), [LS, CAT, SUBMIT], EXPERT, weights)
    assert components == {"tests": 1.0, "similarity": 1.0} and reward == pytest.approx(1.5)
    components, reward = score_episode(report(infra_error="engine gone"), [LS], EXPERT, weights,
                                       infra_error="engine gone")
    assert components == {"tests": None, "similarity": None} and reward is None
    assert score_episode(None, [], (), {"tests": 1.0}, infra_error="no image") == ({"tests": None}, None)
