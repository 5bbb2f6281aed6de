"""Issue 20's grading hardening measured against the grading it replaced.

    python benchmarks/grading_hardening.py [--runs 5] [--synthetic 12] [--baseline-rev 7f0b585]

Three measurements, each for this checkout's code and for the baseline revision's (``git archive``
into a temporary folder, run in a subprocess with that folder first on ``PYTHONPATH``):

- ``time``: guarded grading time of every demo task's gold patch (median of ``--runs`` rounds,
  before and after alternating), and the ratio after / before;
- ``false_alarms``: gold patches whose guarded verdict is not the unguarded one (resolved, every
  status the same) or that were rejected, on the demo tasks and on ``--synthetic`` synthetic
  tasks (``trajectories/synthgen``, materialised as local task folders; their statuses come
  from an unguarded run of their gold patch, so every test that passes there is PASS_TO_PASS);
- ``flood``: the grader's peak Python memory (tracemalloc) while grading a patch whose tests
  write ``--flood-mib`` MiB into the results channel.

Prints one JSON object (also the machine). Run as root beside a Docker engine with the demo
task images (``swe-srl env build``).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
import tracemalloc
from dataclasses import replace
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
FLOOD = '''
import fcntl, os
_block = b"x" * (1 << 20)
for _fd in range(3, 64):
    try:
        _flags = fcntl.fcntl(_fd, fcntl.F_GETFL)
        if _flags & os.O_APPEND and _flags & os.O_ACCMODE == os.O_WRONLY:
            for _ in range({mib}):
                os.write(_fd, _block)
    except OSError:
        pass
'''


def _demo_tasks():
    from swe_srl import tasks
    from swe_srl.sandbox.images.build import build_task_image

    return [replace(t, image=build_task_image(t.metadata["task_dir"])) for t in tasks.load_local_tasks()]


def _synthetic_tasks(count: int, workdir: Path):
    """``count`` synthetic tasks as local task folders; each one's expected tests are those its
    gold patch passes when graded without the guard."""
    from swe_srl import tasks
    from swe_srl.sandbox.grading import GradingConfig, grade
    from swe_srl.sandbox.images.build import build_task_image

    sys.path.insert(0, str(ROOT / "trajectories"))
    from synthgen.sandbox import git_diff
    from synthgen.tasks import fixed_files, make_tasks

    out = []
    for item in make_tasks(count, seed=0)[:count]:
        folder = workdir / item.task_id
        for path, text in item.files.items():
            (folder / "repo" / path).parent.mkdir(parents=True, exist_ok=True)
            (folder / "repo" / path).write_text(text)
        test_files = sorted(p for p in item.files if p.startswith("tests/") and p.endswith(".py"))
        row = {"instance_id": item.task_id, "repo": f"synthetic/{item.task_id}", "problem_statement": "synthetic",
               "patch": git_diff(item.files, fixed_files(item)), "test_patch": "", "test_files": test_files,
               "FAIL_TO_PASS": [], "PASS_TO_PASS": [], "test_cmd": tasks.LOCAL_TEST_CMD}
        (folder / "task.json").write_text(json.dumps(row))
        task = tasks.load_local_task(folder)
        task = replace(task, image=build_task_image(folder))
        unguarded = grade(task, task.patch, GradingConfig(guard=False))
        passing = tuple(t for t, s in sorted(unguarded.statuses.items()) if s == "PASSED")
        out.append(replace(task, pass_to_pass=passing))
    return out


def _same_verdict(task, guard_report, plain_report) -> bool:
    return (guard_report.rejected is None and guard_report.infra_error is None
            and guard_report.resolved == plain_report.resolved
            and {t: guard_report.statuses.get(t) for t in task.fail_to_pass + task.pass_to_pass}
            == {t: plain_report.statuses.get(t) for t in task.fail_to_pass + task.pass_to_pass})


def measure_time() -> dict:
    """One guarded grade of every demo task's gold patch: seconds per task."""
    from swe_srl.sandbox.grading import grade

    times = {}
    for task in _demo_tasks():
        start = time.monotonic()
        report = grade(task, task.patch)
        times[task.instance_id] = round(time.monotonic() - start, 3) if report.resolved else None
    return times


def measure_checks(synthetic: int, flood_mib: int) -> dict:
    """False alarms on gold patches (demo + synthetic) and the grader's memory for a flood."""
    from swe_srl.sandbox.grading import GradingConfig, grade
    from tests.sandbox.test_grading import _init_patch

    demo, alarms, checked = _demo_tasks(), [], 0
    for task in demo:
        guarded, plain = grade(task, task.patch), grade(task, task.patch, GradingConfig(guard=False))
        checked += 1
        if not (guarded.resolved and _same_verdict(task, guarded, plain)):
            alarms.append({"task": task.instance_id, "rejected": guarded.rejected, "resolved": guarded.resolved})
    with tempfile.TemporaryDirectory(prefix="swe-srl-synth-") as tmp:
        for task in _synthetic_tasks(synthetic, Path(tmp)) if synthetic else []:
            guarded, plain = grade(task, task.patch), grade(task, task.patch, GradingConfig(guard=False))
            checked += 1
            if not _same_verdict(task, guarded, plain):
                alarms.append({"task": task.instance_id, "rejected": guarded.rejected, "log": guarded.log_tail[-300:]})
    pagekit = next(t for t in demo if t.instance_id.endswith("pagekit-1"))
    tracemalloc.start()
    flooded = grade(pagekit, _init_patch(FLOOD.format(mib=flood_mib)))
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"gold_patches_checked": checked, "false_alarms": alarms,
            "flood": {"channel_mib": flood_mib, "grader_peak_mib": round(peak / 2**20, 1),
                      "rejected": flooded.rejected, "resolved": flooded.resolved}}


def _worker(src: str, part: str, args) -> dict:
    env = {**os.environ, "PYTHONPATH": src, "OMP_NUM_THREADS": "1"}
    done = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--worker", part,
                           "--synthetic", str(args.synthetic), "--flood-mib", str(args.flood_mib)],
                          cwd=src, env=env, capture_output=True, text=True, check=True)
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5, help="rounds of timing, before and after alternating")
    parser.add_argument("--synthetic", type=int, default=12)
    parser.add_argument("--flood-mib", type=int, default=256)
    parser.add_argument("--baseline-rev", default="7f0b585")
    parser.add_argument("--worker", choices=["time", "checks"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.runs < 1 or args.synthetic < 0 or args.flood_mib < 1:
        parser.error("--runs and --flood-mib must be >= 1, --synthetic >= 0")
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    if args.worker:
        sys.path.insert(0, os.getcwd())
        out = measure_time() if args.worker == "time" else measure_checks(args.synthetic, args.flood_mib)
        print(json.dumps(out))
        return
    with tempfile.TemporaryDirectory(prefix="swe-srl-baseline-") as baseline:
        archive = subprocess.run(["git", "-C", str(ROOT), "archive", args.baseline_rev], check=True,
                                 capture_output=True).stdout
        subprocess.run(["tar", "-x", "-C", baseline], input=archive, check=True)
        sides = {"before": baseline, "after": str(ROOT)}
        runs: dict = {"before": [], "after": []}
        for round_ in range(args.runs):  # alternating, so that load drifts hit both sides alike
            for side in (("before", "after") if round_ % 2 == 0 else ("after", "before")):
                runs[side].append(_worker(sides[side], "time", args))
        result = {}
        for side, src in sides.items():
            per_task = {t: statistics.median(r[t] for r in runs[side]) for t in runs[side][0]}
            result[side] = {"time_s": per_task, "time_total_s": round(sum(per_task.values()), 3),
                            **_worker(src, "checks", args)}
    ratios = [a / b for a, b in zip(result["after"]["time_s"].values(), result["before"]["time_s"].values())]
    print(json.dumps({"machine": f"{platform.machine()} {os.cpu_count()} cpus, {platform.python_version()}",
                      "baseline": args.baseline_rev, "runs": args.runs, **result,
                      "time_ratio_total": round(result["after"]["time_total_s"] / result["before"]["time_total_s"], 3),
                      "time_ratio_median_task": round(statistics.median(ratios), 3)}, indent=1))


if __name__ == "__main__":
    main()
