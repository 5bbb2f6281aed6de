"""Weighted reward sums and the None (left out) rules."""

from __future__ import annotations

import math

import pytest

from swe_srl.errors import ConfigError, InputError
from swe_srl.rewards.combine import CombinedReward, combine, reward_name
from swe_srl.rewards.similarity import FormatReward, SimilarityReward
from swe_srl.schemas import RewardResult

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


def test_combined_reward_follows_the_contract_and_reports_components():
    def infra_flaky(completions, samples):
        return [None if s.get("broken") else 1.0 for s in samples]

    combined = CombinedReward.of((SimilarityReward(), 1.0), (FormatReward(), 0.0), (infra_flaky, 0.5))
    assert combined.name == "similarity+format+infra_flaky"
    good = f"<think>ok</think>\n{TARGET}"
    samples = [{"target": TARGET}, {"target": TARGET, "broken": True}, {"target": TARGET}]
    values = combined([good, good, "garbage"], samples)
    assert values == [1.5, None, -0.5]
    results = combined.evaluate([good, good, "garbage"], samples)
    assert results[1] == RewardResult(value=None, components={"similarity": 1.0, "format": 1.0, "infra_flaky": None})
    assert results[2].components["format"] == 0.0


def test_combined_reward_checks_its_parts():
    with pytest.raises(ConfigError, match="distinct names"):
        CombinedReward.of((SimilarityReward(), 1.0), (SimilarityReward(mode="lcs"), 1.0))
    with pytest.raises(ConfigError, match="at least one"):
        CombinedReward({}, {})
    short = CombinedReward({"short": lambda completions, samples: [1.0]}, {"short": 1.0})
    with pytest.raises(InputError, match="returned 1 values for 2 completions"):
        short(["a", "b"], [{}, {}])
    assert reward_name(lambda c, s: []) == "<lambda>"
