"""Weighted sums of reward components, with "left out" (None) kept honest (the hybrid
episode reward, :func:`swe_srl.rewards.episode.episode_reward`, is one).

Every reward function follows one contract (TRL's)::

    fn(completions: list[str], samples: list[Mapping]) -> list[float | None]

``None`` means "left out": nothing is known about that sample (the grading harness failed,
a container died). It must never turn into a score, so the rules are:

  * a None (or NaN) in any component with a nonzero weight makes the combined value None;
  * a component with weight 0 is computed and logged but never affects the value, not
    even through its Nones;
  * every component needs an explicit weight, and every weight names a component, so a
    typo in a config is an error rather than a silently ignored reward.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from ..errors import ConfigError, InputError

RewardValue = float | None
RewardFn = Callable[[Sequence[str], Sequence[Any]], list[RewardValue]]


def _is_missing(value: RewardValue) -> bool:
    return value is None or math.isnan(value)


def check_weights(names: Sequence[str], weights: Mapping[str, float]) -> None:
    """ConfigError unless ``weights`` gives one finite weight to exactly the ``names``."""
    unweighted = [n for n in names if n not in weights]
    if unweighted:
        raise ConfigError(f"reward component(s) {unweighted} have no weight; give each a weight (0 to only log it)")
    unknown = [n for n in weights if n not in names]
    if unknown:
        raise ConfigError(f"reward weight(s) {unknown} name no reward component; components: {list(names)}")
    bad = {n: w for n, w in weights.items() if not isinstance(w, (int, float)) or not math.isfinite(w)}
    if bad:
        raise ConfigError(f"reward weights must be finite numbers, got {bad}")


def combine(named_rewards: Mapping[str, Sequence[RewardValue]],
            weights: Mapping[str, float]) -> list[RewardValue]:
    """Per sample, ``sum(weights[name] * named_rewards[name][i])``; None where a component
    with a nonzero weight is None or NaN (see the module docstring)."""
    check_weights(list(named_rewards), weights)
    lengths = {name: len(values) for name, values in named_rewards.items()}
    if len(set(lengths.values())) > 1:
        raise InputError(f"reward components disagree on the number of samples: {lengths}")
    size = next(iter(lengths.values()), 0)
    active = [(name, float(weights[name])) for name in named_rewards if weights[name] != 0]
    combined: list[RewardValue] = []
    for i in range(size):
        values = [(w, named_rewards[name][i]) for name, w in active]
        if any(_is_missing(v) for _, v in values):
            combined.append(None)
        else:
            combined.append(sum(w * float(v) for w, v in values if v is not None))  # none is: checked above
    return combined
