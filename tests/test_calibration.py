"""The calibration rule (stable / flaky / broken / unknown), the calibration file (round trip,
resume, stale entries, bad files), the resolve rate on stable tasks, and how much a task's
episodes count in training: pure, no Docker."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from swe_srl.calibration import (
    Calibration,
    PatchRuns,
    TaskCalibration,
    episode_weight,
    judge,
    resolve_calibration,
    stable_summary,
    task_fingerprint,
    verdict_counts,
)
from swe_srl.errors import InputError
from swe_srl.evaluate import EvalConfig, InstanceResult, evaluate_tasks
from swe_srl.schemas import Task, TestReport

F2P, P2P = "tests/test_a.py::test_new", "tests/test_a.py::test_old"
TASK = Task(instance_id="o__r-1", repo="o/r", base_commit="0" * 40, problem_statement="?", patch="gold",
            fail_to_pass=(F2P,), pass_to_pass=(P2P,))


def _report(new: str = "PASSED", old: str = "PASSED", *, infra: bool = False, task: Task = TASK) -> TestReport:
    if infra:
        return TestReport(instance_id=task.instance_id, infra_error="container create failed", duration=0.5)
    statuses = {F2P: new, P2P: old}
    resolved = new in ("PASSED", "XFAIL") and old in ("PASSED", "XFAIL", "SKIPPED")
    return TestReport(instance_id=task.instance_id, statuses=statuses, resolved=resolved, duration=1.0)


GOLD = [_report()] * 4
EMPTY = [_report("FAILED")] * 4


def _verdict(gold, empty):
    return TaskCalibration.of(TASK, 4, gold, empty)


def test_a_task_whose_gold_always_resolves_and_empty_never_does_is_stable():
    entry = _verdict(GOLD, EMPTY)
    assert (entry.verdict, entry.reasons) == ("stable", ())
    assert entry.gold.passes == {F2P: 4, P2P: 4} and entry.empty.passes == {F2P: 0, P2P: 4}
    assert entry.gold.to_dict()["pass_rates"] == {F2P: 1.0, P2P: 1.0}
    assert entry.empty.to_dict()["resolved_rate"] == 0.0 and entry.gold.to_dict()["seconds_per_run"] == 1.0


def test_gold_resolving_in_some_runs_only_is_flaky():
    entry = _verdict([_report(), _report(old="FAILED"), _report(), _report()], EMPTY)
    assert entry.verdict == "flaky"
    assert entry.reasons == ("gold patch resolved 3/4", f"{P2P} passed 3/4 with the gold patch")


def test_a_test_that_varies_under_the_empty_patch_alone_is_flaky():
    entry = _verdict(GOLD, [_report("FAILED"), _report("FAILED", "FAILED"), _report("FAILED"), _report("FAILED")])
    assert (entry.verdict, entry.reasons) == ("flaky", (f"{P2P} passed 3/4 with the empty patch",))


def test_gold_that_never_resolves_is_broken_and_so_is_an_empty_patch_that_resolves():
    assert judge(PatchRuns.of(TASK, EMPTY), PatchRuns.of(TASK, EMPTY))[0] == "broken"
    verdict, reasons = judge(PatchRuns.of(TASK, GOLD), PatchRuns.of(TASK, [_report("FAILED")] * 3 + [_report()]))
    # Broken wins over flaky; the flaky observation is still recorded.
    assert verdict == "broken"
    assert reasons == ("empty patch resolved 1/4", f"{F2P} passed 1/4 with the empty patch")


def test_infrastructure_failures_are_no_evidence():
    entry = _verdict(GOLD[:2] + [_report(infra=True)] * 2, EMPTY[:3] + [_report(infra=True)])
    assert entry.verdict == "stable"  # the failed runs neither make it flaky nor broken
    assert (entry.gold.graded, entry.gold.infra_failures, entry.empty.infra_failures) == (2, 2, 1)
    assert entry.gold.to_dict()["pass_rates"][F2P] == 1.0 and entry.infra_errors == ("container create failed",)
    nothing = _verdict([_report(infra=True)] * 4, EMPTY)
    assert nothing.verdict == "unknown" and "no graded run of the gold patch" in nothing.reasons[0]
    assert nothing.gold.to_dict()["resolved_rate"] is None


def test_a_test_passes_as_grading_scores_it():
    """FAIL_TO_PASS: passed or xfail; PASS_TO_PASS may also skip; a test missing from the log failed."""
    runs = PatchRuns.of(TASK, [_report("XFAIL", "SKIPPED"), _report("SKIPPED", "PASSED"),
                               TestReport(instance_id=TASK.instance_id, statuses={})])
    assert runs.passes == {F2P: 1, P2P: 2}


def test_the_file_round_trips_and_resume_skips_only_finished_current_entries(tmp_path):
    path = tmp_path / "calibration.json"
    other = replace(TASK, instance_id="o__r-2")
    calibration = Calibration().with_entry(_verdict(GOLD, EMPTY)).with_entry(
        TaskCalibration.of(other, 4, [_report(infra=True)] * 4, EMPTY))
    calibration.save(path)
    data = json.loads(path.read_text())
    assert data["version"] == 1 and "broken" in data["rule"]
    assert data["tasks"][TASK.instance_id]["gold"]["pass_rates"] == {F2P: 1.0, P2P: 1.0}
    loaded = Calibration.load(path)
    assert loaded.entries == calibration.entries and loaded.path == str(path)
    assert loaded.done(TASK, 4) and loaded.done(TASK, 3) and not loaded.done(TASK, 5)  # more runs asked: redo
    assert not loaded.done(other, 4)  # no verdict (infrastructure only): retried
    changed = replace(TASK, patch="another gold patch")
    assert task_fingerprint(changed) != task_fingerprint(TASK)
    assert loaded.verdict(changed) is None and not loaded.done(changed, 1)  # a changed task is not trusted
    assert verdict_counts([TASK, other, changed], loaded) == {
        "stable": 1, "flaky": 0, "broken": 0, "unknown": 1, "uncalibrated": 1}


@pytest.mark.parametrize("text, why", [("{", "JSONDecodeError"), ('{"version": 1}', "no 'tasks' object"),
                                       ('{"version": 9, "tasks": {}}', "format version 9"),
                                       ('{"version": 1, "tasks": {"x": {"verdict": "odd"}}}', "unknown verdict")])
def test_a_file_that_is_not_a_calibration_is_a_one_line_input_error(tmp_path, text, why):
    path = tmp_path / "c.json"
    path.write_text(text)
    with pytest.raises(InputError, match="not a swe-srl calibration file") as info:
        Calibration.load(path)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_a_named_calibration_must_exist_the_default_one_may_not(tmp_path, monkeypatch):
    from swe_srl import paths

    monkeypatch.setattr(paths, "DEFAULT_CALIBRATION", tmp_path / "none.json")
    assert resolve_calibration("") is None
    with pytest.raises(InputError, match="calibration file not found: .*swe-srl env calibrate"):
        resolve_calibration(tmp_path / "missing.json")
    Calibration().with_entry(_verdict(GOLD, EMPTY)).save(tmp_path / "none.json")
    assert resolve_calibration(None).verdict(TASK) == "stable"


def _tasks_and_calibration():
    """Four tasks: stable, flaky, broken, and one never calibrated."""
    tasks = [replace(TASK, instance_id=f"o__r-{i}", repo="o/r") for i in range(4)]
    entries = [TaskCalibration.of(tasks[0], 4, GOLD, EMPTY),
               TaskCalibration.of(tasks[1], 4, GOLD[:3] + [_report(old="FAILED")], EMPTY),
               TaskCalibration.of(tasks[2], 4, EMPTY, EMPTY)]
    calibration = Calibration(path="calib.json")
    for entry in entries:
        calibration = calibration.with_entry(entry)
    return tasks, calibration


def test_the_stable_resolve_rate_counts_graded_stable_instances_only():
    tasks, calibration = _tasks_and_calibration()
    extra = replace(TASK, instance_id="o__r-9")
    calibration = calibration.with_entry(TaskCalibration.of(extra, 4, GOLD, EMPTY))  # stable, infra in eval
    results = [InstanceResult("o__r-0", resolved=True, exit_reason="submitted"),
               InstanceResult("o__r-1", resolved=True, exit_reason="submitted"),
               InstanceResult("o__r-2", exit_reason="submitted"), InstanceResult("o__r-3", exit_reason="submitted"),
               InstanceResult("o__r-9", infra_error="engine down")]
    summary = stable_summary(results, tasks + [extra], calibration)
    assert summary == {"calibration": "calib.json", "graded": 1, "resolved": 1, "resolved_rate": 1.0,
                       "verdicts": {"stable": 2, "flaky": 1, "broken": 1, "unknown": 0, "uncalibrated": 1}}
    assert stable_summary(results[2:4], tasks, calibration)["resolved_rate"] is None  # no stable graded


def test_eval_summary_reports_the_stable_rate_beside_the_raw_one(tmp_path):
    """Finished instances are read back, so no episode runs (and no policy is needed)."""
    tasks, calibration = _tasks_and_calibration()
    calibration.save(tmp_path / "calibration.json")
    for i, resolved in enumerate((False, True, True, True)):
        folder = tmp_path / "eval" / "instances" / f"o__r-{i}"
        folder.mkdir(parents=True)
        result = InstanceResult(f"o__r-{i}", repo="o/r", resolved=resolved, exit_reason="submitted")
        (folder / "result.json").write_text(json.dumps(result.to_dict()))
    config = EvalConfig(calibration=str(tmp_path / "calibration.json"))
    summary = evaluate_tasks(None, tasks, tmp_path / "eval", config)  # type: ignore[arg-type]
    assert summary["resolved_rate"] == 0.75
    assert summary["stable"]["resolved_rate"] == 0.0 and summary["stable"]["graded"] == 1
    assert json.loads((tmp_path / "eval" / "summary.json").read_text())["stable"] == summary["stable"]


@pytest.mark.parametrize("verdict, mode, weight", [
    ("broken", "keep", 0.0), ("broken", "downweight", 0.0), ("flaky", "skip", 0.0), ("flaky", "downweight", 0.25),
    ("flaky", "keep", 1.0), ("stable", "skip", 1.0), ("unknown", "skip", 1.0), (None, "skip", 1.0)])
def test_broken_tasks_never_train_and_flaky_ones_as_configured(verdict, mode, weight):
    assert episode_weight(verdict, mode, 0.25) == weight
