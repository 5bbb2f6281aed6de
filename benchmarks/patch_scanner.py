"""The patch scanner (``swe_srl.rewards.scanner``) on every honest patch in reach: false
positives and time per patch, and what it adds to a guarded grade.

Patches: the gold patch of each demo task (base texts from its ``repo/``), the demo experts'
recorded final patches (same bases), the 250 synthetic tasks' expert patches (bases rebuilt by
``trajectories/synthgen``), and where ``../shared/real-samples`` exists the real SWE-bench
Verified gold patches there and the final patches of the real agent trajectories there (no base
text: their hunks are read alone).

    python benchmarks/patch_scanner.py [--runs 5] [--grade 3]

``--grade N``: also grade each demo task's gold patch N times with ``GradingConfig(scan=True)``
and ``scan=False`` in Docker (alternating) and report the medians and their ratio. Prints one
JSON object.
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import platform
import statistics
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "real-samples"


class GoldPatch(NamedTuple):
    source: str
    id: str
    patch: str
    base: dict | None
    test_files: tuple


def _bases(patch: str, read) -> dict:
    from swe_srl.rewards.scanner import python_paths

    return {path: read(path) for path in python_paths(patch)}


def _read_or_none(folder: Path):
    def read(path: str) -> str | None:
        file = folder / path
        return file.read_text(encoding="utf-8") if file.is_file() else None
    return read


def gold_patches(real: Path = REAL) -> Iterator[GoldPatch]:
    """Every honest patch in reach (see the module docstring)."""
    from swe_srl.formats import read_trajectories
    from swe_srl.paths import EXPERT_TRAJECTORIES_DIR, SYNTHETIC_TRAJECTORIES_DIR
    from swe_srl.tasks import files_in_patch, load_local_tasks

    demo = {t.instance_id: t for t in load_local_tasks()}
    for task in demo.values():
        read = _read_or_none(Path(task.metadata["task_dir"]) / "repo")
        yield GoldPatch("demo gold", task.instance_id, task.patch, _bases(task.patch, read), task.test_files)
    for traj in read_trajectories(EXPERT_TRAJECTORIES_DIR, on_skip=lambda skip: None):
        task = demo.get(traj.task_id)
        if task is not None and traj.final_patch:
            read = _read_or_none(Path(task.metadata["task_dir"]) / "repo")
            yield GoldPatch("demo expert", traj.task_id, traj.final_patch, _bases(traj.final_patch, read),
                            task.test_files)
    sys.path.insert(0, str(ROOT / "trajectories"))
    from synthgen import DEFAULT_SEED, make_tasks

    files = {t.task_id: t.files for t in make_tasks(250, DEFAULT_SEED)}
    with gzip.open(SYNTHETIC_TRAJECTORIES_DIR / "trajectories.jsonl.gz", "rt", encoding="utf-8") as fh:
        for line in fh:
            row = json.loads(line)
            base = files.get(row["task_id"], {})
            yield GoldPatch("synthetic expert", row["task_id"], row["final_patch"],
                            _bases(row["final_patch"], base.get), ())
    records = real / "swebench" / "verified_records.sample.jsonl"
    if records.is_file():
        for line in records.read_text(encoding="utf-8").splitlines():
            row = json.loads(line)
            yield GoldPatch("SWE-bench Verified gold", row["instance_id"], row["patch"], None,
                            tuple(files_in_patch(row.get("test_patch") or "")))
    if real.is_dir():
        for traj in read_trajectories([p for p in sorted(real.iterdir()) if p.is_dir() and p.name != "swebench"],
                                      on_skip=lambda skip: None):
            if traj.final_patch:
                yield GoldPatch("real agent final patch", traj.task_id, traj.final_patch, None, ())


def scan_all(patches: list[GoldPatch], runs: int) -> dict:
    from swe_srl.rewards.scanner import scan_patch

    per_source: dict[str, dict] = {}
    flagged = []
    seconds = []
    for item in patches:
        times = []
        for _ in range(runs):
            start = time.perf_counter()
            findings = scan_patch(item.patch, item.base, test_files=item.test_files)
            times.append(time.perf_counter() - start)
        seconds.append(statistics.median(times))
        row = per_source.setdefault(item.source, {"patches": 0, "flagged": 0, "with_base": 0})
        row["patches"] += 1
        row["with_base"] += int(item.base is not None)
        if findings:
            row["flagged"] += 1
            flagged.append({"source": item.source, "id": item.id, "findings": [str(f) for f in findings]})
    return {"per_source": per_source, "patches": len(patches), "flagged": flagged,
            "scan_ms_median": round(1000 * statistics.median(seconds), 3),
            "scan_ms_max": round(1000 * max(seconds), 3),
            "patch_bytes_median": int(statistics.median(len(p.patch) for p in patches))}


def grade_cost(runs: int) -> dict:
    """Median seconds of a guarded grade of each demo gold patch with and without the scan."""
    from dataclasses import replace

    from swe_srl.sandbox.grading import GradingConfig, grade
    from swe_srl.sandbox.images.build import build_task_image
    from swe_srl.tasks import load_local_tasks

    tasks = [replace(t, image=build_task_image(t.metadata["task_dir"])) for t in load_local_tasks()]
    on, off = GradingConfig(scan=True), GradingConfig(scan=False)
    timings: dict[str, list[float]] = {"scan": [], "no_scan": []}
    for _ in range(runs):
        for task in tasks:
            for name, config in (("scan", on), ("no_scan", off)):
                start = time.perf_counter()
                report = grade(task, task.patch, config)
                timings[name].append(time.perf_counter() - start)
                if not report.resolved:
                    raise SystemExit(f"{task.instance_id}: gold patch not resolved with {name}: {report.rejected}")
    scan, plain = statistics.median(timings["scan"]), statistics.median(timings["no_scan"])
    return {"grades_per_mode": len(timings["scan"]), "scan_s_median": round(scan, 3),
            "no_scan_s_median": round(plain, 3), "ratio": round(scan / plain, 3)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="scans of each patch (median)")
    parser.add_argument("--grade", type=int, default=0, help="grades of each demo gold patch per mode (0: none)")
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    result = {"machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
                         f"Python {platform.python_version()}",
              **scan_all(list(gold_patches()), max(args.runs, 1))}
    if args.grade:
        result["grading"] = grade_cost(args.grade)
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
