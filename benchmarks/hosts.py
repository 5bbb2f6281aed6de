"""Ray host actors vs the local path: episodes/min of the demo tasks' expert replays (model
time ~0, so this measures scheduling + sandbox + grading), alternating run by run.

    python benchmarks/hosts.py [--runs 3] [--workers 2]

local: evaluate_tasks with `workers` threads on the process's engine. ray: the same through one
HostWorker actor (`episodes_per_host = workers`) on the same engine, and through two host
names on it (per-host counts). Ray starts once, outside the timings; each run creates its
actors (part of the measured cost, as in a real run). Prints one JSON object.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")

    import ray

    from swe_srl.evaluate import EvalConfig, evaluate_tasks
    from swe_srl.experts import ExpertReplay, load_scripts
    from swe_srl.harness import HarnessConfig
    from swe_srl.hosts import RESOURCE_PREFIX, HostPool, HostsConfig
    from swe_srl.sandbox.images.source import ensure_image
    from swe_srl.tasks import load_tasks

    tasks = load_tasks("demo")
    for task in tasks:
        ensure_image(task)  # built once, outside the timings
    ray.init(resources={RESOURCE_PREFIX + n: 1 for n in ("one", "a", "b")}, include_dashboard=False,
             log_to_driver=False)
    ray = HarnessConfig(sandbox="ray")
    settings = {
        "local": EvalConfig(workers=args.workers),
        "ray-1-host": EvalConfig(harness=ray, hosts=HostsConfig(hosts=("one=",), episodes_per_host=args.workers)),
        "ray-2-hosts": EvalConfig(harness=ray, hosts=HostsConfig(hosts=("a=", "b="),
                                                                 episodes_per_host=max(1, args.workers // 2))),
    }
    times: dict[str, list[float]] = {k: [] for k in settings}
    starts: list[float] = []  # HostPool with one host actor: start, ping, close (no episode)
    per_host: dict[str, dict] = {}
    for _ in range(args.runs):
        start = time.perf_counter()
        with HostPool(settings["ray-1-host"].hosts):
            pass
        starts.append(time.perf_counter() - start)
        for name, config in settings.items():
            replay = ExpertReplay.from_scripts(load_scripts(tasks), tasks)
            start = time.perf_counter()
            summary = evaluate_tasks(replay.policy(), tasks, tempfile.mkdtemp(prefix="bench-hosts-"), config,
                                     thread_safe_policy=True)
            times[name].append(time.perf_counter() - start)
            if summary["resolved"] != len(tasks):
                raise SystemExit(f"{name}: resolved {summary['resolved']}/{len(tasks)}: {summary}")
            per_host[name] = summary["per_host"]
    medians = {k: statistics.median(v) for k, v in times.items()}
    per_episode = medians["ray-1-host"] / len(tasks) * args.workers  # seconds one slot holds an episode
    print(
        json.dumps(
            {
                "machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                "load_avg_1m_at_end": round(os.getloadavg()[0], 2),
                "tasks": len(tasks),
                "workers": args.workers,
                "seconds": {k: [round(t, 2) for t in v] for k, v in times.items()},
                "episodes_per_min": {k: round(len(tasks) / m * 60, 1) for k, m in medians.items()},
                "ray_over_local": round(medians["ray-1-host"] / medians["local"], 3),
                "actor_start_seconds": [round(t, 2) for t in starts],
                # What a long-lived actor pays per run once its start is paid (a real run starts it once)
                "ray_over_local_without_start": round(
                    (medians["ray-1-host"] - statistics.median(starts)) / medians["local"], 3
                ),
                "per_host": per_host,
                "seconds_per_episode_slot": round(per_episode, 2),
            },
            indent=2,
        )
    )


if __name__ == "__main__":
    main()
