"""Benchmark: `swe-srl eval` harness throughput on the 8 demo tasks with 1, 2 and 4 workers.

The policy is the scripted expert replay (swe_srl.experts.ExpertReplay), so model time is ~0 and
what is measured is the harness: one Docker container per episode (start, expert actions run
through the str_replace_editor / bash tools, diff, remove) plus grading in a fresh container.
Every run must resolve all 8 tasks, else the script fails (a fast harness that gets the answer
wrong measures nothing).

Per setting: episodes per minute (8 / wall seconds of the whole `evaluate_tasks` call), and
the time split summed over instances from summary.json (model / sandbox / grading / wall per
instance). Baseline = 1 worker, run in the same script; settings alternate run by run so each
sees the same machine load. One untimed warm-up run builds the task images first.

Usage: .venv/bin/python benchmarks/eval.py [--runs 3] [--workers 1,2,4] [--json OUT]
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
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swe_srl.evaluate import EvalConfig, evaluate_tasks  # noqa: E402
from swe_srl.experts import ExpertReplay, load_scripts  # noqa: E402
from swe_srl.harness import HarnessConfig  # noqa: E402
from swe_srl.sandbox.images.source import ensure_image  # noqa: E402
from swe_srl.tasks import load_tasks  # noqa: E402


def one_run(tasks, scripts, workers: int, harness: HarnessConfig = HarnessConfig()) -> dict:
    """One whole evaluation of ``tasks`` in a fresh output folder; returns its measurements."""
    replay = ExpertReplay.from_scripts(scripts, tasks)
    with tempfile.TemporaryDirectory(prefix="swe-srl-bench-eval-") as out:
        started = time.perf_counter()
        config = EvalConfig(workers=workers, model_name="expert-script", harness=harness)
        summary = evaluate_tasks(replay.policy(), tasks, out, config, thread_safe_policy=True)
        wall = time.perf_counter() - started
        if summary["resolved"] != len(tasks):
            details = {}
            for task in tasks:
                path = Path(out) / "instances" / task.instance_id / "result.json"
                record = json.loads(path.read_text()) if path.is_file() else {}
                if not record.get("resolved"):
                    report = record.get("report") or {}
                    details[task.instance_id] = {"infra": record.get("infra_error"), "exit": record.get("exit_reason"),
                                                 "log": (report.get("log_tail") or "")[-1500:]}
            raise SystemExit(f"workers={workers}: resolved {summary['resolved']}/{len(tasks)}: "
                             f"{json.dumps(details, indent=1)}")
    split = summary["time_seconds"]
    return {"wall": wall, "episodes_per_min": 60 * len(tasks) / wall, "model": split["model"],
            "sandbox": split["sandbox"], "grading": split["grading"], "instance_wall": split["wall"],
            "image_cache": summary.get("image_cache")}


def load_average() -> float:
    return os.getloadavg()[0]


def machine() -> str:
    try:
        docker = subprocess.run(["docker", "version", "--format", "{{.Server.Version}}"], capture_output=True,
                                text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        docker = "?"
    return (f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"Docker {docker or '?'}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per worker count (median reported)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated worker counts; the first is the baseline")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args()
    counts = [int(w) for w in args.workers.split(",")]
    tasks = load_tasks("demo")
    scripts = load_scripts(tasks)
    for task in tasks:
        ensure_image(task)
    print(f"machine: {machine()}; load average at start {load_average():.1f}")
    one_run(tasks, scripts, counts[-1])  # warm-up: image cache, page cache, docker's own caches
    results: dict[int, list[dict]] = {w: [] for w in counts}
    loads = []
    for run in range(args.runs):
        for workers in counts:  # alternate settings so each sees the same load
            loads.append(load_average())
            results[workers].append(one_run(tasks, scripts, workers))
            r = results[workers][-1]
            print(f"run {run + 1} workers={workers}: {r['wall']:.1f} s wall, {r['episodes_per_min']:.1f} episodes/min",
                  flush=True)
    base = statistics.median(r["episodes_per_min"] for r in results[counts[0]])
    print(f"\n{len(tasks)} demo tasks, scripted expert replay, median of {args.runs} runs; "
          f"load average {min(loads):.1f}-{max(loads):.1f}\n")
    print("| workers | episodes/min (median, min-max) | vs 1 worker | wall s | per-instance s: model / sandbox / "
          "grading / wall |")
    print("|---|---|---|---|---|")
    for workers in counts:
        rows = results[workers]
        epm = [r["episodes_per_min"] for r in rows]
        # summary.json's times are summed over instances: shown per instance
        per = {k: statistics.median(r[k] for r in rows) / len(tasks)
               for k in ("model", "sandbox", "grading", "instance_wall")}
        print(f"| {workers} | {statistics.median(epm):.1f} ({min(epm):.1f}-{max(epm):.1f}) | "
              f"{statistics.median(epm) / base:.2f}x | {statistics.median(r['wall'] for r in rows):.1f} | "
              f"{per['model']:.3f} / {per['sandbox']:.2f} / {per['grading']:.2f} / {per['instance_wall']:.2f} |")
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "runs": {str(k): v for k, v in results.items()}},
                                        indent=2) + "\n")


if __name__ == "__main__":
    main()
