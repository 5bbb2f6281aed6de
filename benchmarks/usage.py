"""What reading a container's costs at removal costs (``swe_srl.sandbox.usage.container_usage``),
per container, in milliseconds, for its two ways of reading them:

* ``cgroup`` (the default where the engine runs on this machine): one inspect call, then the
  container's cgroup files;
* ``engine`` (the fallback, forced here): one one-shot engine stats call, which waits for the
  engine's stats collector when another stats call was served within the last second.

Settings:

1. isolated: each container closed > 1 s after the previous one (the collector is idle);
2. back to back: containers opened and closed one after another;
3. an eval of the demo tasks (expert replays, ``--workers``): every container's read, the share
   of the workers' time it took, and the eval's wall time with each way vs ``off`` (the read
   replaced by an unmeasured result), runs alternating so all see the same machine load.

    .venv/bin/python benchmarks/usage.py [--containers 10] [--runs 2] [--workers 1,2]
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
import swe_srl.sandbox.usage as usage  # noqa: E402
from swe_srl.evaluate import EvalConfig, evaluate_tasks  # noqa: E402
from swe_srl.experts import ExpertReplay, load_scripts  # noqa: E402
from swe_srl.sandbox import SandboxConfig, open_sandbox  # noqa: E402
from swe_srl.sandbox.images.source import ensure_image  # noqa: E402
from swe_srl.schemas import ResourceUsage  # noqa: E402
from swe_srl.tasks import load_tasks  # noqa: E402

CGROUP_READ = usage.cgroup_usage
CALLS: list[float] = []
SOURCES: list[ResourceUsage] = []


def timed_usage(api, container_id):
    start = time.perf_counter()
    try:
        measured = usage.container_usage(api, container_id)
        SOURCES.append(measured)
        return measured
    finally:
        CALLS.append(time.perf_counter() - start)


def use(mode: str) -> None:
    """``cgroup`` (default), ``engine`` (cgroup read disabled) or ``off`` (nothing read)."""
    usage.cgroup_usage = CGROUP_READ if mode == "cgroup" else (lambda *args, **kw: None)
    docker_sandbox.container_usage = (lambda api, cid: ResourceUsage(containers=1, unmeasured=1)) \
        if mode == "off" else timed_usage
    CALLS.clear()
    SOURCES.clear()


def describe(values: list[float]) -> str:
    ordered = sorted(values)
    p95 = ordered[min(len(ordered) - 1, round(0.95 * (len(ordered) - 1)))]
    return (f"median {statistics.median(values) * 1000:.0f} ms, mean {statistics.mean(values) * 1000:.0f} ms, "
            f"p95 {p95 * 1000:.0f} ms, max {max(values) * 1000:.0f} ms (n={len(values)})")


def containers(image: str, count: int, gap: float, mode: str) -> list[float]:
    use(mode)
    for _ in range(count):
        with open_sandbox(SandboxConfig(image=image)) as box:
            box.exec("true")
            time.sleep(gap)
    if mode != "off" and any(u.unmeasured for u in SOURCES):
        raise SystemExit(f"{mode}: a container went unmeasured")
    return list(CALLS)


def one_eval(tasks, scripts, workers: int, mode: str) -> tuple[float, list[float]]:
    use(mode)
    with tempfile.TemporaryDirectory(prefix="swe-srl-bench-usage-") as out:
        start = time.perf_counter()
        summary = evaluate_tasks(ExpertReplay.from_scripts(scripts, tasks).policy(), tasks, out,
                                 EvalConfig(workers=workers), thread_safe_policy=True)
        wall = time.perf_counter() - start
    if summary["resolved"] != len(tasks):
        raise SystemExit(f"not every task resolved: {summary['infrastructure_errors']}")
    return wall, list(CALLS)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--containers", type=int, default=10)
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--workers", default="1,2")
    args = parser.parse_args()
    tasks = load_tasks("demo")
    scripts = load_scripts(tasks)
    image = ensure_image(tasks[0])
    for task in tasks:
        ensure_image(task)
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {os.getloadavg()[0]:.2f}")
    for mode in ("cgroup", "engine"):
        print(f"{mode}: isolated (1.5 s apart) {describe(containers(image, args.containers, 1.5, mode))}")
        print(f"{mode}: back to back       {describe(containers(image, args.containers, 0.0, mode))}")
    one_eval(tasks, scripts, 1, "off")  # warm-up
    modes = ("cgroup", "engine", "off")
    for workers in (int(w) for w in args.workers.split(",")):
        walls: dict[str, list[float]] = {m: [] for m in modes}
        calls: dict[str, list[float]] = {m: [] for m in modes}
        for _ in range(args.runs):
            for mode in modes:
                wall, seen = one_eval(tasks, scripts, workers, mode)
                walls[mode].append(wall)
                calls[mode] += seen
        off = statistics.median(walls["off"])
        for mode in modes[:2]:
            on = statistics.median(walls[mode])
            # The share of the workers' time spent reading: robust where the walls are noisy.
            share = sum(calls[mode]) / args.runs / (on * workers)
            print(f"eval, {workers} worker(s), {mode}: reads {describe(calls[mode])}, {share:.1%} of the workers' "
                  f"time; eval wall median {on:.2f} s vs {off:.2f} s off ({on / off:.3f}x), "
                  f"load {os.getloadavg()[0]:.2f}")


if __name__ == "__main__":
    main()
