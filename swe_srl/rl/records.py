"""Typed records of one training step: the groups it sampled, what it logs of them, and the
totals of the episodes it ran (summed over ranks field by field)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import astuple, dataclass, field
from typing import Any

from ..costs import per_unit
from .distributed import Dist


@dataclass
class Group:
    """The G samples of one data item (a step target's completions, a task's episodes),
    their rewards (None: left out) and their policy-token counts."""

    serial: int  # order in which this step drew it (global over ranks)
    item_id: str
    samples: list[Any]
    rewards: list[float | None]
    lengths: list[int]


@dataclass
class DrawLog:
    """What one optimizer step drew, in draw order over every rank (a rollouts.jsonl row)."""

    ids: list[str]
    rewards: list[list[float | None]] | None = None
    lengths: list[list[int]] | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in (("ids", self.ids), ("rewards", self.rewards), ("lengths", self.lengths))
                if v is not None}


@dataclass
class SampledBatch:
    """One step's dynamic sampling: this rank's kept groups (the batch), every group it drew,
    the draw log and the sampling metrics."""

    kept: list[Group]
    drawn: list[Group]
    log: DrawLog
    metrics: dict[str, float] = field(default_factory=dict)


@dataclass
class EpisodeTotals:
    """Sums over the episodes a step ran (kept or not); ``all_sum`` adds them over ranks."""

    count: float = 0.0
    infra_failures: float = 0.0
    valid: float = 0.0
    tests: float = 0.0
    resolved: float = 0.0
    similarity_count: float = 0.0
    similarity: float = 0.0
    turns: float = 0.0
    format_errors: float = 0.0
    submitted: float = 0.0
    wall_time: float = 0.0
    model_time: float = 0.0
    sandbox_time: float = 0.0
    grading_time: float = 0.0
    # Costs (swe_srl.costs) of the episodes whose infrastructure held, and of those whose did not.
    reward: float = 0.0
    cpu_seconds: float = 0.0
    container_seconds: float = 0.0
    tokens: float = 0.0
    memory_peak_bytes: float = 0.0
    memory_peaks: float = 0.0
    infra_cpu_seconds: float = 0.0
    infra_container_seconds: float = 0.0
    infra_tokens: float = 0.0
    # Graded episodes that grading refused whatever the tests said, and those of them refused
    # for runner tampering found in the patch (swe_srl.rewards.scanner).
    rejected: float = 0.0
    tampering: float = 0.0

    def all_sum(self, dist: Dist) -> EpisodeTotals:
        return EpisodeTotals(*dist.all_sum(astuple(self)))

    def __add__(self, other: EpisodeTotals) -> EpisodeTotals:
        return EpisodeTotals(*(a + b for a, b in zip(astuple(self), astuple(other))))

    @classmethod
    def total(cls, parts: Sequence[EpisodeTotals]) -> EpisodeTotals:
        out = cls()
        for part in parts:
            out = out + part
        return out

    def metrics(self) -> dict[str, float]:
        valid, n = max(self.valid, 1), max(self.count, 1)
        out = {
            "episodes/count": self.count, "episodes/infra_failures": self.infra_failures,
            "episodes/resolved_rate": self.resolved / valid, "reward/tests": self.tests / valid,
            "episodes/turns_mean": self.turns / valid,
            "episodes/format_errors_per_turn": self.format_errors / max(self.turns, 1),
            "episodes/submitted_rate": self.submitted / valid, "episodes/seconds_mean": self.wall_time / n,
            "time/model": self.model_time, "time/sandbox": self.sandbox_time, "time/grading": self.grading_time,
            "episodes/rejected": self.rejected, "episodes/rejected_tampering": self.tampering,
        }
        if self.similarity_count:
            out["reward/similarity"] = self.similarity / self.similarity_count
        return out | self.cost_metrics()

    def cost_metrics(self) -> dict[str, float]:
        """``cost/*``: CPU-, container-seconds and tokens of the step's episodes, the same
        per reward point (when the rewards sum above 0) and per resolved episode (when any), the
        mean memory peak, and what the episodes that hit an infrastructure failure spent (apart)."""
        totals = {"cpu_seconds": self.cpu_seconds, "container_seconds": self.container_seconds, "tokens": self.tokens}
        out = {f"cost/{key}": value for key, value in totals.items()}
        for unit, count in (("reward", self.reward), ("resolved", self.resolved)):
            out.update({f"cost/{key}_per_{unit}": value for key, value in (per_unit(totals, count) or {}).items()})
        if self.memory_peaks:
            out["cost/memory_peak_mb_mean"] = self.memory_peak_bytes / self.memory_peaks / 2**20
        out.update({"cost/infra_cpu_seconds": self.infra_cpu_seconds,
                    "cost/infra_container_seconds": self.infra_container_seconds,
                    "cost/infra_tokens": self.infra_tokens})
        return out


