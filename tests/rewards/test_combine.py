"""Weighted reward sums and the None (left out) rules."""

from __future__ import annotations

import math

import pytest

from swe_srl.errors import ConfigError, InputError
from swe_srl.rewards.combine import combine
from swe_srl.rewards.episode import episode_reward
from swe_srl.rewards.similarity import SimilarityReward, parse_completion

TARGET = "<function=bash>\n<parameter=command>ls</parameter>\n</function>"


def test_weighted_sum():
    out = combine({"sim": [1.0, 0.5, -1.0], "tests": [0.0, 1.0, 1.0]}, {"sim": 0.5, "tests": 2.0})
    assert out == [0.5, 2.25, 1.5]


def test_none_or_nan_in_a_weighted_component_leaves_the_sample_out():
    out = combine({"sim": [1.0, 0.2, math.nan], "tests": [None, 1.0, 1.0]}, {"sim": 1.0, "tests": 1.0})
    assert out == [None, 1.2, None]


def test_zero_weight_component_never_matters():
    out = combine({"sim": [0.3, 0.4], "logged": [None, 7.0]}, {"sim": 1.0, "logged": 0.0})
    assert out == [0.3, 0.4]


def test_weights_must_match_components():
    with pytest.raises(ConfigError, match=r"\['tests'\] have no weight"):
        combine({"sim": [1.0], "tests": [1.0]}, {"sim": 1.0})
    with pytest.raises(ConfigError, match=r"\['simm'\] name no reward"):
        combine({"sim": [1.0]}, {"sim": 1.0, "simm": 1.0})
    with pytest.raises(ConfigError, match="finite"):
        combine({"sim": [1.0]}, {"sim": math.inf})
    with pytest.raises(InputError, match="disagree"):
        combine({"sim": [1.0], "tests": [1.0, 0.0]}, {"sim": 1.0, "tests": 1.0})


def test_components_in_the_reward_contract_combine_with_left_out_samples():
    """Reward functions in TRL's contract (None = left out), weighed by ``combine``: a weighted
    None leaves the sample out, a zero-weight component is only logged."""
    def infra_flaky(completions, samples):
        return [None if s.get("broken") else 1.0 for s in samples]

    good = f"<think>ok</think>\n{TARGET}"
    completions = [good, good, "garbage"]
    samples = [{"target": TARGET}, {"target": TARGET, "broken": True}, {"target": TARGET}]
    parts = {"similarity": SimilarityReward()(completions, samples),
             "format": [1.0 if parse_completion(c) else 0.0 for c in completions],
             "infra_flaky": infra_flaky(completions, samples)}
    assert combine(parts, {"similarity": 1.0, "format": 0.0, "infra_flaky": 0.5}) == [1.5, None, -0.5]
    assert parts["format"] == [1.0, 1.0, 0.0] and parts["infra_flaky"][1] is None


def test_the_episode_reward_checks_its_components():
    with pytest.raises(ConfigError, match=r"\['similarity'\] have no weight"):
        episode_reward({"tests": 1.0, "similarity": 0.5}, {"tests": 1.0})
    with pytest.raises(ConfigError, match=r"\['simm'\] name no reward"):
        episode_reward({"tests": 1.0}, {"tests": 1.0, "simm": 0.5})
    assert episode_reward({"tests": None, "similarity": 0.5}, {"tests": 0.0, "similarity": 2.0}) == 1.0
