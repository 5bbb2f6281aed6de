"""Calibrate the bundled demo tasks (gold and empty patch, N gradings each, fresh containers)
and print the verdicts, the seconds per grading run, and calibrate's wall time against the sum
of its gradings' own durations (the overhead of the calibration loop itself).

    .venv/bin/python benchmarks/calibrate.py --runs 5 [--workers 1]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from pathlib import Path

from swe_srl.sandbox.calibrate import calibrate_tasks
from swe_srl.tasks import load_tasks


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=1)
    args = parser.parse_args()
    tasks = load_tasks("demo")
    load_before = os.getloadavg()[0]
    with tempfile.TemporaryDirectory() as tmp:
        started = time.perf_counter()
        calibration = calibrate_tasks(tasks, Path(tmp) / "calibration.json", runs=args.runs, workers=args.workers)
        wall = time.perf_counter() - started
    entries = [calibration.entries[t.instance_id] for t in tasks]
    print(f"{len(tasks)} tasks x {args.runs} runs x 2 patches, {args.workers} worker(s); "
          f"load {load_before:.1f} -> {os.getloadavg()[0]:.1f}")
    print("| task | verdict | gold resolved | empty resolved | s per run (gold / empty) |")
    print("|---|---|---|---|---|")
    for e in entries:
        print(f"| {e.instance_id} | {e.verdict} | {e.gold.resolved}/{e.gold.graded} | "
              f"{e.empty.resolved}/{e.empty.graded} "
              f"| {e.gold.seconds / e.gold.runs:.2f} / {e.empty.seconds / e.empty.runs:.2f} |")
    per_task = [(e.gold.seconds + e.empty.seconds) / (e.gold.runs + e.empty.runs) for e in entries]
    graded_seconds = sum(e.gold.seconds + e.empty.seconds for e in entries)
    print(f"median s per grading run over tasks: {statistics.median(per_task):.2f} "
          f"(min {min(per_task):.2f}, max {max(per_task):.2f}); wall {wall:.1f} s for "
          f"{2 * args.runs * len(tasks)} runs = {wall / len(tasks):.1f} s per task; "
          f"wall / sum of grading durations = {wall / graded_seconds * args.workers:.3f}")


if __name__ == "__main__":
    main()
