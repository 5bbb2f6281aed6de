"""Counts and distributions of a `build-dataset` run, written to stats.json."""

from __future__ import annotations

from collections import Counter, defaultdict
from dataclasses import dataclass, field
from typing import Any

from .decontam import DecontamStats

MAX_LISTED_SKIPS = 10_000  # stats.json lists this many skipped records; counts cover all
EXAMPLES_PER_RULE = 3  # leaky steps quoted per rule in stats.json


def percentiles(values: list[int], points=(0, 50, 90, 99, 100)) -> dict[str, float]:
    """Nearest-rank percentiles plus the mean; empty input gives zeros."""
    if not values:
        return {f"p{p}": 0 for p in points} | {"mean": 0.0, "count": 0}
    ordered = sorted(values)
    n = len(ordered)
    out: dict[str, float] = {}
    for p in points:
        idx = min(n - 1, max(0, round(p / 100 * (n - 1))))
        out[f"p{p}"] = ordered[idx]
    out["mean"] = round(sum(ordered) / n, 2)
    out["count"] = n
    return out


@dataclass
class LeakStats:
    """Leaky-trajectory counts: per rule, trajectories and steps matched; trajectories and
    step targets dropped; a few quoted examples per rule."""

    mode: str = "drop"
    scanned: int = 0
    trajectories: int = 0
    steps: int = 0
    dropped_trajectories: int = 0
    dropped_targets: int = 0
    rule_trajectories: Counter = field(default_factory=Counter)
    rule_steps: Counter = field(default_factory=Counter)
    examples: list = field(default_factory=list)

    def count(self, traj, step_leaks, dropped_targets: int = 0) -> None:
        """Count one scanned trajectory (``step_leaks``: per step, its Leak matches);
        ``dropped_targets`` > 0 means it was dropped with that many step targets."""
        self.scanned += 1
        leaky = [(k, leaks) for k, leaks in enumerate(step_leaks) if leaks]
        if not leaky:
            return
        self.trajectories += 1
        self.steps += len(leaky)
        if dropped_targets:
            self.dropped_trajectories += 1
            self.dropped_targets += dropped_targets
        rules = set()
        for k, leaks in leaky:
            for rule in dict.fromkeys(leak.rule for leak in leaks):
                self.rule_steps[rule] += 1
                rules.add(rule)
            for leak in leaks:
                if sum(e["rule"] == leak.rule for e in self.examples) < EXAMPLES_PER_RULE:
                    self.examples.append({"trajectory_id": traj.trajectory_id, "step": k,
                                          "rule": leak.rule, "text": leak.text})
        self.rule_trajectories.update(rules)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "trajectories_scanned": self.scanned,
            "leaky_trajectories": self.trajectories,
            "leaky_steps": self.steps,
            "dropped_trajectories": self.dropped_trajectories,
            "dropped_step_targets": self.dropped_targets,
            "by_rule": {rule: {"trajectories": self.rule_trajectories[rule], "steps": n}
                        for rule, n in self.rule_steps.most_common()},
            "examples": self.examples,
        }


@dataclass
class DatasetStats:
    """Mutable accumulator; ``to_dict()`` is what lands in stats.json."""

    by_format: dict = field(default_factory=lambda: defaultdict(Counter))
    dropped: Counter = field(default_factory=Counter)
    skipped: list = field(default_factory=list)
    skipped_count: int = 0
    skipped_by_reason: Counter = field(default_factory=Counter)
    steps_per_trajectory: list = field(default_factory=list)
    tools: Counter = field(default_factory=Counter)
    target_chars: list = field(default_factory=list)
    context_chars: list = field(default_factory=list)
    splits: Counter = field(default_factory=Counter)
    split_keys: dict = field(default_factory=lambda: defaultdict(set))
    leaks: LeakStats = field(default_factory=LeakStats)
    decontamination: DecontamStats = field(default_factory=DecontamStats)

    def count_skip(self, skip) -> None:
        self.skipped_count += 1
        self.skipped_by_reason[_reason_kind(skip.reason)] += 1
        if len(self.skipped) < MAX_LISTED_SKIPS:
            self.skipped.append(skip.to_dict())

    def count_trajectory(self, traj, reason: str | None) -> None:
        fmt = self.by_format[traj.source_format]
        fmt["trajectories"] += 1
        if reason is not None:
            self.dropped[reason] += 1
            fmt[f"dropped: {reason}"] += 1
            return
        fmt["used"] += 1
        fmt["steps"] += len(traj.steps)
        self.steps_per_trajectory.append(len(traj.steps))

    def count_target(self, target) -> None:
        self.by_format[target.source_format]["step_targets"] += 1
        self.tools[target.target_tool] += 1
        self.splits[target.split] += 1
        self.split_keys[target.split].add(target.trajectory_id)
        self.target_chars.append(len(target.target))
        self.context_chars.append(
            len(target.problem_statement)
            + sum(len(r.action) + len(r.observation) for r in target.context)
        )

    @property
    def num_targets(self) -> int:
        return sum(self.splits.values())

    def to_dict(self) -> dict[str, Any]:
        return {
            "step_targets": dict(self.splits),
            "trajectories_per_split": {k: len(v) for k, v in self.split_keys.items()},
            "by_format": {k: dict(v) for k, v in sorted(self.by_format.items())},
            "dropped_trajectories": dict(self.dropped),
            "skipped_records": {
                "count": self.skipped_count,
                "by_reason": dict(self.skipped_by_reason),
                "listed": self.skipped,
            },
            "steps_per_trajectory": percentiles(self.steps_per_trajectory),
            "target_tools": dict(self.tools.most_common()),
            "target_chars": percentiles(self.target_chars),
            "context_chars": percentiles(self.context_chars),
            "leaks": self.leaks.to_dict(),
            "decontamination": self.decontamination.to_dict(),
        }


def _reason_kind(reason: str) -> str:
    """Group free-text skip reasons by their first clause for the summary counts."""
    return reason.split(":", 1)[0].strip()[:80]
