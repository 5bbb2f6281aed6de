"""The reward of a whole agent episode (``--method rlvr`` / ``hybrid``): pure arithmetic on
the grading report and the episode's actions (no torch, no docker).

rlvr: the test reward alone. ``resolved`` shape: 1.0 when every FAIL_TO_PASS and
PASS_TO_PASS test passes, else 0.0; ``f2p_fraction`` shape: the fraction of FAIL_TO_PASS
tests that pass, 0.0 when any PASS_TO_PASS test fails. An empty patch scores 0.0.

hybrid: ``weights.similarity * similarity + weights.tests * tests``. The similarity
component aligns the policy's turns with the expert trajectory of the same task: the
order-preserving alignment that maximises the total similarity, skips allowed on both sides
(dynamic programming, :func:`align_turns`), so one extra, skipped or malformed turn does not
shift every later comparison. Per turn: a turn that broke the format (no action) scores -1; an
aligned turn scores its similarity to its expert step with the SRL reward's metric and settings
(``reward.similarity``, ``reward.compare``, ``reward.tool_mismatch``;
:mod:`swe_srl.rewards.compare`); a turn aligned with no expert step scores 0. The component is
the sum over turns divided by ``max(turns, expert steps)``: a replay of the expert scores 1,
an extra turn or a missed expert step costs its share, and an episode without any turn scores
-1. ``episodes.credit: turn`` also gives each turn its own similarity in its advantage
(:func:`turn_credit`).

A None component (the grading harness failed: nothing is known) with a nonzero weight makes
the episode's reward None: left out of its group, never scored 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from ..errors import InputError
from ..schemas import Action, TestReport
from .combine import combine
from .compare import ActionSimilarity
from .similarity import FORMAT_VIOLATION

TESTS, SIMILARITY = "tests", "similarity"
TestRewardShape = Literal["resolved", "f2p_fraction"]


def reward_from_tests(report: TestReport | None, shape: TestRewardShape = "resolved") -> float | None:
    """The test component of one episode; None when the harness failed (or never ran)."""
    if report is None or report.infra_error:
        return None
    if report.rejected:  # tampering, a killed container, an oversized patch: never partial credit
        return 0.0
    if shape == "resolved":
        return 1.0 if report.resolved else 0.0
    if not report.patch_applied or report.pass_to_pass < 1.0:
        return 0.0
    return float(report.fail_to_pass)


def align_turns(scores: Sequence[Sequence[float] | None]) -> list[int | None]:
    """The expert step each policy turn is aligned with (None: none), strictly increasing over
    the aligned turns, maximising the total score; ``scores[i][j]`` is turn i against expert
    step j, ``scores[i]`` None for a turn that cannot align (a format error). Ties prefer the
    earlier turn and expert step, so the result is deterministic."""
    n = len(scores)
    m = max((len(row) for row in scores if row is not None), default=0)
    best = [[0.0] * (m + 1) for _ in range(n + 1)]  # best[i][j]: turns < i with steps < j
    for i in range(1, n + 1):
        row = scores[i - 1]
        for j in range(1, m + 1):
            here = max(best[i - 1][j], best[i][j - 1])
            if row is not None and row[j - 1] > 0:
                here = max(here, best[i - 1][j - 1] + row[j - 1])
            best[i][j] = here
    aligned: list[int | None] = [None] * n
    i, j = n, m
    while i > 0 and j > 0:
        row = scores[i - 1]
        if row is not None and row[j - 1] > 0 and best[i][j] == best[i - 1][j - 1] + row[j - 1] \
                and best[i][j] != best[i - 1][j] and best[i][j] != best[i][j - 1]:
            aligned[i - 1] = j - 1
            i, j = i - 1, j - 1
        elif best[i][j] == best[i - 1][j]:
            i -= 1
        else:
            j -= 1
    return aligned


def turn_similarities(actions: Sequence[Action | None], expert_actions: Sequence[str],
                      scorer: ActionSimilarity = ActionSimilarity()) -> list[float]:
    """Per policy turn: -1 for a format error (None), the similarity to its aligned expert step
    (:func:`align_turns`), 0 for a turn aligned with none."""
    if not expert_actions:
        raise InputError("hybrid similarity needs an expert trajectory with at least one step")
    scores = [None if action is None else [scorer.score(action, expert) for expert in expert_actions]
              for action in actions]
    aligned = align_turns(scores)
    return [FORMAT_VIOLATION if row is None else (0.0 if j is None else row[j]) for row, j in zip(scores, aligned)]


def turn_credit(turn_scores: Sequence[float], episode_score: float, similarity_weight: float) -> list[float]:
    """Per-turn credit (``episodes.credit: turn``): what each turn adds to its episode's reward
    when its own similarity replaces the episode's, ``weight * (turn - episode)``; the trainer
    divides it by the group's advantage scale and adds it to the episode's advantage."""
    return [similarity_weight * (score - episode_score) for score in turn_scores]


def episode_reward(components: Mapping[str, float | None], weights: Mapping[str, float]) -> float | None:
    """Weighted sum of the components; None when a weighted component is None."""
    return combine({name: [value] for name, value in components.items()}, weights)[0]


def reward_weights(method: str, similarity_weight: float, tests_weight: float) -> dict[str, float]:
    """rlvr trains on the test reward alone; hybrid on both components, as configured."""
    if method == "rlvr":
        return {TESTS: 1.0}
    return {SIMILARITY: similarity_weight, TESTS: tests_weight}


@dataclass(frozen=True)
class EpisodeScore:
    """How one episode was rewarded: its components (tests, and similarity for hybrid), their
    weighted sum (None after an infrastructure failure) and, for hybrid, each turn's similarity
    (see :func:`turn_similarities`; empty otherwise)."""

    components: dict[str, float | None]
    reward: float | None
    turn_scores: tuple[float, ...] = ()


def score_episode(report: TestReport | None, actions: Sequence[Action | None],
                  expert_actions: Sequence[str], weights: Mapping[str, float], *,
                  shape: TestRewardShape = "resolved", scorer: ActionSimilarity = ActionSimilarity(),
                  infra_error: str | None = None) -> EpisodeScore:
    """Score one episode: the test component, the similarity component when ``weights`` has
    one (None after an infrastructure failure), and their weighted sum."""
    components: dict[str, float | None] = {TESTS: reward_from_tests(report, shape)}
    turns: tuple[float, ...] = ()
    if SIMILARITY in weights:
        if infra_error:
            components[SIMILARITY] = None
        else:
            turns = tuple(turn_similarities(actions, expert_actions, scorer))
            # sum over turns / max(turns, expert steps); an episode without any turn did nothing
            components[SIMILARITY] = sum(turns) / max(len(turns), len(expert_actions)) if turns else FORMAT_VIOLATION
    return EpisodeScore(components, None if infra_error else episode_reward(components, weights), turns)
