"""Flaky-task calibration: what repeated gradings of a task's gold patch and of an empty patch
say about the task, the file that records it, and how eval and rlvr / hybrid training use it.

``swe-srl env calibrate`` (:func:`swe_srl.sandbox.calibrate.calibrate_tasks`) grades each
task's gold patch and an empty patch N times, each run in a fresh container, through the
grading eval uses (:func:`swe_srl.sandbox.grading.grade`). A run that ends in an
infrastructure failure is counted apart and is no evidence. On the graded runs (:func:`judge`):

* ``broken``: the gold patch never resolves, or the empty patch resolves in some run;
* ``flaky``: not broken, and the gold patch resolves in some runs but not all, or some
  FAIL_TO_PASS / PASS_TO_PASS test passes in some runs of one patch and fails in others;
* ``stable``: otherwise;
* ``unknown``: no graded run of the gold or of the empty patch; a rerun of calibrate retries it.

A test passes as grading scores it (:func:`swe_srl.rewards.testlog.score`: FAIL_TO_PASS
passed or xfail; PASS_TO_PASS also skipped). Each entry keeps a fingerprint of what the outcome
depends on (patches, test lists, test command, base commit, image): the entry of a task that
changed since is not used, and calibrate runs that task again.
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

from . import paths
from .errors import InputError
from .jsonio import write_json_atomic
from .rewards.testlog import score
from .schemas import Task, TestReport

Verdict = Literal["stable", "flaky", "broken", "unknown"]
FlakyMode = Literal["skip", "downweight", "keep"]
VERDICTS: tuple[Verdict, ...] = ("stable", "flaky", "broken", "unknown")
FORMAT_VERSION = 1
RULE = ("broken: the gold patch never resolves, or the empty patch resolves in some run; "
        "flaky: not broken, and the gold patch resolves in some runs but not all, or a FAIL_TO_PASS/"
        "PASS_TO_PASS test passes in some runs of one patch and fails in others; stable: otherwise; "
        "unknown: no graded run of a patch. Runs with an infrastructure failure are no evidence.")
_KEPT_INFRA_ERRORS = 3


@dataclass(frozen=True)
class PatchRuns:
    """What N gradings of one patch (gold or empty) on one task showed."""

    graded: int = 0
    """Runs whose infrastructure held: the evidence."""
    infra_failures: int = 0
    """Runs that ended in an infrastructure failure (not evidence)."""
    resolved: int = 0
    """Graded runs that resolved the task."""
    passes: Mapping[str, int] = field(default_factory=dict)
    """Per FAIL_TO_PASS / PASS_TO_PASS test: the graded runs in which it passed."""
    seconds: float = 0.0
    """Grading time of all the runs together."""

    @classmethod
    def of(cls, task: Task, reports: Sequence[TestReport]) -> PatchRuns:
        graded = [r for r in reports if r.infra_error is None]
        tests = dict.fromkeys((*task.fail_to_pass, *task.pass_to_pass))
        passes = {t: sum(_passed(r.statuses, t, t in task.fail_to_pass) for r in graded) for t in tests}
        return cls(graded=len(graded), infra_failures=len(reports) - len(graded),
                   resolved=sum(bool(r.resolved) for r in graded), passes=passes,
                   seconds=round(sum(r.duration for r in reports), 3))

    @property
    def runs(self) -> int:
        return self.graded + self.infra_failures

    def rate(self, count: int) -> float | None:
        """``count`` over the graded runs (None without any)."""
        return round(count / self.graded, 4) if self.graded else None

    def to_dict(self) -> dict[str, Any]:
        return {"graded": self.graded, "infra_failures": self.infra_failures, "resolved": self.resolved,
                "resolved_rate": self.rate(self.resolved),
                "seconds": self.seconds, "seconds_per_run": round(self.seconds / self.runs, 3) if self.runs else None,
                "pass_rates": {t: self.rate(n) for t, n in self.passes.items()}, "passes": dict(self.passes)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> PatchRuns:
        return cls(graded=int(data["graded"]), infra_failures=int(data["infra_failures"]),
                   resolved=int(data["resolved"]), passes={str(t): int(n) for t, n in data["passes"].items()},
                   seconds=float(data.get("seconds") or 0.0))


def _passed(statuses: Mapping[str, str], test: str, fail_to_pass: bool) -> bool:
    """Grading's own rule for one test: FAIL_TO_PASS must pass (or xfail), PASS_TO_PASS may skip."""
    return score(statuses, (test,) if fail_to_pass else (), () if fail_to_pass else (test,))[0]


def judge(gold: PatchRuns, empty: PatchRuns) -> tuple[Verdict, tuple[str, ...]]:
    """The verdict on a task (see the module docstring) and the observations behind it."""
    missing = [name for name, runs in (("gold", gold), ("empty", empty)) if not runs.graded]
    if missing:
        return "unknown", tuple(f"no graded run of the {name} patch (infrastructure failures only)"
                                for name in missing)
    broken = [f"gold patch resolved 0/{gold.graded}"] if not gold.resolved else []
    if empty.resolved:
        broken.append(f"empty patch resolved {empty.resolved}/{empty.graded}")
    flaky = [f"gold patch resolved {gold.resolved}/{gold.graded}"] if 0 < gold.resolved < gold.graded else []
    for name, runs in (("gold", gold), ("empty", empty)):
        flaky += [f"{test} passed {n}/{runs.graded} with the {name} patch"
                  for test, n in runs.passes.items() if 0 < n < runs.graded]
    if broken:
        return "broken", tuple(broken + flaky)
    return ("flaky", tuple(flaky)) if flaky else ("stable", ())


def task_fingerprint(task: Task) -> str:
    """A hash of what a task's grading outcome depends on."""
    payload = {name: getattr(task, name) for name in ("base_commit", "image", "patch", "test_patch", "test_cmd",
                                                      "log_parser", "workdir")}
    payload["tests"] = [list(task.fail_to_pass), list(task.pass_to_pass), list(task.test_files)]
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:16]


@dataclass(frozen=True)
class TaskCalibration:
    """One task's calibration: N runs of its gold and of an empty patch, and the verdict."""

    instance_id: str
    fingerprint: str
    runs: int
    """Runs asked of each patch."""
    gold: PatchRuns
    empty: PatchRuns
    verdict: Verdict
    reasons: tuple[str, ...] = ()
    infra_errors: tuple[str, ...] = ()
    """The first distinct infrastructure errors of its runs."""

    @classmethod
    def of(cls, task: Task, runs: int, gold: Sequence[TestReport], empty: Sequence[TestReport]) -> TaskCalibration:
        gold_runs, empty_runs = PatchRuns.of(task, gold), PatchRuns.of(task, empty)
        verdict, reasons = judge(gold_runs, empty_runs)
        errors = dict.fromkeys(r.infra_error for r in (*gold, *empty) if r.infra_error)
        return cls(task.instance_id, task_fingerprint(task), runs, gold_runs, empty_runs, verdict, reasons,
                   tuple(errors)[:_KEPT_INFRA_ERRORS])

    def to_dict(self) -> dict[str, Any]:
        return {"verdict": self.verdict, "reasons": list(self.reasons), "runs": self.runs,
                "fingerprint": self.fingerprint, "gold": self.gold.to_dict(), "empty": self.empty.to_dict(),
                "infra_errors": list(self.infra_errors)}

    @classmethod
    def from_dict(cls, instance_id: str, data: Mapping[str, Any]) -> TaskCalibration:
        verdict = data["verdict"]
        if verdict not in VERDICTS:
            raise ValueError(f"unknown verdict {verdict!r}")
        return cls(instance_id, str(data["fingerprint"]), int(data["runs"]), PatchRuns.from_dict(data["gold"]),
                   PatchRuns.from_dict(data["empty"]), verdict, tuple(data.get("reasons") or ()),
                   tuple(data.get("infra_errors") or ()))


@dataclass(frozen=True)
class Calibration:
    """A calibration file's entries by instance id (``path``: where it was read from)."""

    entries: Mapping[str, TaskCalibration] = field(default_factory=dict)
    path: str | None = None

    def entry(self, task: Task) -> TaskCalibration | None:
        """``task``'s entry, None when it has none or the task changed since it was calibrated."""
        found = self.entries.get(task.instance_id)
        return found if found is not None and found.fingerprint == task_fingerprint(task) else None

    def verdict(self, task: Task) -> Verdict | None:
        """``task``'s verdict; None when it is not calibrated (see :meth:`entry`)."""
        found = self.entry(task)
        return found.verdict if found is not None else None

    def done(self, task: Task, runs: int) -> bool:
        """Whether ``task`` holds a verdict from at least ``runs`` runs (calibrate skips it)."""
        found = self.entry(task)
        return found is not None and found.verdict != "unknown" and found.runs >= runs

    def with_entry(self, entry: TaskCalibration) -> Calibration:
        return replace(self, entries={**self.entries, entry.instance_id: entry})

    def save(self, path: str | os.PathLike) -> None:
        """Write the file atomically: a killed run leaves the previous complete file."""
        write_json_atomic(Path(path), {"version": FORMAT_VERSION, "rule": RULE,
                                       "tasks": {i: e.to_dict() for i, e in sorted(self.entries.items())}})

    @classmethod
    def load(cls, path: str | os.PathLike) -> Calibration:
        """Read a calibration file; InputError (one line) when it is missing or not one."""
        path = Path(path)
        if not path.is_file():
            raise InputError(f"calibration file not found: {path} (write one with `swe-srl env calibrate -o {path}`)")
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if not isinstance(data, dict) or not isinstance(data.get("tasks"), dict):
                raise ValueError("no 'tasks' object")
            if data.get("version") != FORMAT_VERSION:
                raise ValueError(f"format version {data.get('version')!r}, expected {FORMAT_VERSION}")
            entries = {str(i): TaskCalibration.from_dict(str(i), e) for i, e in data["tasks"].items()}
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            raise InputError(f"{path}: not a swe-srl calibration file ({type(exc).__name__}: {exc})") from None
        return cls(entries, str(path))


def resolve_calibration(path: str | os.PathLike | None) -> Calibration | None:
    """The calibration ``path`` names (InputError when missing or unreadable); without a path,
    the default location's file (``runs/calibration.json``), or None when there is none."""
    if path:
        return Calibration.load(path)
    default = paths.DEFAULT_CALIBRATION
    return Calibration.load(default) if default.is_file() else None


def verdict_counts(tasks: Iterable[Task], calibration: Calibration) -> dict[str, int]:
    """How many of ``tasks`` have each verdict (``uncalibrated``: no usable entry)."""
    counts = Counter(calibration.verdict(t) or "uncalibrated" for t in tasks)
    return {name: counts.get(name, 0) for name in (*VERDICTS, "uncalibrated")}


def stable_summary(results: Sequence[Any], tasks: Sequence[Task], calibration: Calibration) -> dict[str, Any]:
    """The resolve rate over the graded instances of stable tasks (``results``: eval's
    InstanceResults, with ``instance_id``, ``resolved`` and ``infra_error``), beside the
    verdict counts of ``tasks``."""
    stable = {t.instance_id for t in tasks if calibration.verdict(t) == "stable"}
    graded = [r for r in results if r.instance_id in stable and not r.infra_error]
    resolved = sum(1 for r in graded if r.resolved)
    return {"calibration": calibration.path, "verdicts": verdict_counts(tasks, calibration),
            "graded": len(graded), "resolved": resolved,
            "resolved_rate": round(resolved / len(graded), 4) if graded else None}


def episode_weight(verdict: Verdict | None, flaky: FlakyMode, flaky_weight: float) -> float:
    """How much a task's episodes count in rlvr / hybrid training: 0 (skipped) for a broken
    task, and for a flaky one with ``flaky: skip``; ``flaky_weight`` for a flaky one with
    ``downweight``; 1 otherwise (stable, unknown, uncalibrated)."""
    if verdict == "broken" or (verdict == "flaky" and flaky == "skip"):
        return 0.0
    return flaky_weight if verdict == "flaky" and flaky == "downweight" else 1.0
