"""``swe-srl env calibrate``: grade each task's gold patch and an empty patch N times, each
run in a fresh container through :func:`~swe_srl.sandbox.grading.grade` (what eval and
training grade with), and record the verdicts (:mod:`swe_srl.calibration`).

The file is rewritten atomically after each task, so a killed calibrate keeps the tasks it
finished and a rerun with the same file runs only the rest (and the tasks whose definition
changed, or that got no verdict because every run was an infrastructure failure).
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from ..calibration import Calibration, TaskCalibration
from ..errors import ConfigError, InfrastructureError, InputError
from ..schemas import Task, TestReport
from .grading import GradingConfig, grade
from .images.source import ensure_image

OnTask = Callable[[TaskCalibration, bool], None]


def calibrate_tasks(tasks: Sequence[Task], out: str | os.PathLike, *, runs: int = 5, workers: int = 1,
                    grading: GradingConfig | None = None, on_task: OnTask | None = None) -> Calibration:
    """Calibrate every task of ``tasks`` that ``out`` does not already hold a verdict for from
    at least ``runs`` runs; entries of other tasks in ``out`` are kept. ``workers``: gradings
    in parallel. ``on_task(entry, resumed)`` is called per task, in order (``resumed``: the
    entry was in the file already). Returns the whole calibration written."""
    if runs < 1:
        raise ConfigError(f"--runs must be >= 1, got {runs}")
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    out = Path(out)
    if out.is_dir():
        raise InputError(f"{out} is a folder: give the calibration file's path (e.g. {out / 'calibration.json'})")
    calibration = Calibration.load(out) if out.exists() else Calibration(path=str(out))
    out.parent.mkdir(parents=True, exist_ok=True)
    grading = grading or GradingConfig()
    for task in tasks:
        if calibration.done(task, runs):
            if on_task is not None:
                on_task(calibration.entries[task.instance_id], True)
            continue
        gold, empty = _grade_runs(task, runs, workers, grading)
        entry = TaskCalibration.of(task, runs, gold, empty)
        calibration = calibration.with_entry(entry)
        calibration.save(out)
        if on_task is not None:
            on_task(entry, False)
    return calibration


def _grade_runs(task: Task, runs: int, workers: int, grading: GradingConfig) -> tuple[list[TestReport],
        list[TestReport]]:
    """``runs`` gradings of the gold patch and of the empty patch, alternated (a slow spell of
    the machine then touches both alike)."""
    try:
        ensure_image(task)  # built once here, not raced by the parallel runs
    except InfrastructureError:
        pass  # every run then reports it as its infrastructure failure
    patches = [patch for _ in range(runs) for patch in (task.patch, "")]
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix="calibrate") as pool:
        reports = list(pool.map(lambda patch: grade(task, patch, grading), patches))
    return reports[0::2], reports[1::2]
