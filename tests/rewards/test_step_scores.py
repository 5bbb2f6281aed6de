"""The step-level validation metric shared by training validation and `swe-srl eval --mode steps`."""

from __future__ import annotations

import pytest

from swe_srl.rewards.similarity import StepScores


def test_metrics_from_rewards_by_hand():
    scores = StepScores.of([-1.0, 0.5, 1.0, 0.25])
    assert (scores.n, scores.format_errors, scores.exact) == (4, 1, 1)
    m = scores.metrics()
    assert m["reward"] == pytest.approx((-1 + 0.5 + 1 + 0.25) / 4)
    assert m["format_error_rate"] == 0.25
    assert m["similarity"] == pytest.approx((0.5 + 1 + 0.25) / 3)
    assert m["exact_match"] == 0.25 and m["n"] == 4


def test_all_format_errors_and_empty():
    assert StepScores.of([-1.0, -1.0]).metrics()["similarity"] == 0.0
    assert StepScores.of([]).metrics() == {}
