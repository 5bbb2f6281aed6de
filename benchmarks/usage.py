"""What reading a container's costs at removal costs (``swe_srl.sandbox.usage.container_usage``:
one one-shot engine stats call, plus an exec on cgroup v2), per container, in milliseconds:

1. isolated: each container closed > 1 s after the previous stats call (the engine's stats
   collector is idle and answers at once);
2. back to back: containers opened and closed one after another (a stats call that arrives
   within 1 s of the previous one waits for the collector's next pass);
3. in an eval of the demo tasks (expert replays, ``--workers``): every container's stats call,
   the share of the workers' time they took, and the eval's wall time with the stats read vs
   without (the call replaced by an unmeasured result), runs alternating so both see the same
   machine load.

    .venv/bin/python benchmarks/usage.py [--containers 10] [--runs 3] [--workers 1,2]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import swe_srl.sandbox.docker as docker_sandbox  # noqa: E402
from swe_srl.evaluate import EvalConfig, evaluate_tasks  # noqa: E402
from swe_srl.experts import ExpertReplay, load_scripts  # noqa: E402
from swe_srl.sandbox import SandboxConfig, open_sandbox  # noqa: E402
from swe_srl.sandbox.images import ensure_image  # noqa: E402
from swe_srl.schemas import ResourceUsage  # noqa: E402
from swe_srl.tasks import load_tasks  # noqa: E402

MEASURE = docker_sandbox.container_usage
CALLS: list[float] = []


def timed_usage(api, container_id):
    start = time.perf_counter()
    try:
        return MEASURE(api, container_id)
    finally:
        CALLS.append(time.perf_counter() - start)


def no_usage(api, container_id):
    return ResourceUsage(containers=1, unmeasured=1)


def describe(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(values) * 1000:.0f} ms, mean {statistics.mean(values) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {max(values) * 1000:.0f} ms (n={len(values)})")


def containers(image: str, count: int, gap: float) -> list[float]:
    CALLS.clear()
    for _ in range(count):
        with open_sandbox(SandboxConfig(image=image)) as box:
            box.exec("true")
            time.sleep(gap)
    return list(CALLS)


def one_eval(tasks, scripts, workers: int, measure: bool) -> tuple[float, list[float]]:
    docker_sandbox.container_usage = timed_usage if measure else no_usage
    CALLS.clear()
    with tempfile.TemporaryDirectory(prefix="swe-srl-bench-usage-") as out:
        start = time.perf_counter()
        summary = evaluate_tasks(ExpertReplay.from_scripts(scripts, tasks).policy(), tasks, out,
                                 EvalConfig(workers=workers), thread_safe_policy=True)
        wall = time.perf_counter() - start
    docker_sandbox.container_usage = timed_usage
    if summary["resolved"] != len(tasks):
        raise SystemExit(f"not every task resolved: {summary['infrastructure_errors']}")
    return wall, list(CALLS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    tasks = load_tasks("demo")
    scripts = load_scripts(tasks)
    image = ensure_image(tasks[0])
    for task in tasks:
        ensure_image(task)
    docker_sandbox.container_usage = timed_usage
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")
    print(f"isolated (1.5 s between stats calls): {describe(containers(image, args.containers, 1.5))}")
    print(f"back to back:                         {describe(containers(image, args.containers, 0.0))}")
    one_eval(tasks, scripts, 1, True)  # warm-up
    for workers in (int(w) for w in args.workers.split(",")):
        walls: dict[bool, list[float]] = {True: [], False: []}
        calls: list[float] = []
        for _ in range(args.runs):
            for measure in (True, False):
                wall, seen = one_eval(tasks, scripts, workers, measure)
                walls[measure].append(wall)
                calls += seen if measure else []
        on, off = statistics.median(walls[True]), statistics.median(walls[False])
        # The share of the workers' time spent waiting for stats: robust where the walls are noisy.
        share = sum(calls) / args.runs / (on * workers)
        print(f"eval of {len(tasks)} demo tasks, {workers} worker(s): stats calls {describe(calls)}, "
              f"{sum(calls) / args.runs:.2f} s per eval = {share:.1%} of the workers' time; "
              f"eval wall median {on:.2f} s with vs {off:.2f} s without ({on / off:.3f}x), "
              f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
