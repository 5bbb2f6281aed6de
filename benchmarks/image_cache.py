"""Benchmark: eval throughput under a tight image budget vs no budget.

The 8 demo tasks with their scripted expert replays (as benchmarks/eval.py; every run must
resolve all 8), 2 workers, in three settings:

* ``none``: no budget; every task image is present (the baseline);
* ``tight``: a budget that holds the base image and 3 task images (2 episodes in flight + 1),
  so 5 of the 8 images must be evicted and rebuilt in every run; the images of the next 2
  tasks are made in the background (``harness.image_prefetch: 2``, the default);
* ``tight, no prefetch``: the same budget, each image made when its episode asks for it.

Each tight run starts with the engine at the budget (evicted beforehand, untimed: the steady
state of a machine kept at its budget); each ``none`` run starts with every image rebuilt
(untimed). Per setting: episodes per minute (8 / wall seconds of `evaluate_tasks`), median of
``--runs``, and what the cache did (images built when asked, prefetched, evicted) plus the
peak of the project's image bytes it measured against the budget. Settings alternate run by
run so each sees the same machine load.

It evicts images on the engine it runs against (``DOCKER_HOST``): the project's images other
than the demo task images are held (never evicted), and every demo image is rebuilt at the
end. Best run against an engine of its own (see benchmarks/README.md).

Usage: .venv/bin/python benchmarks/image_cache.py [--runs 3] [--json OUT]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from eval import load_average, machine, one_run  # noqa: E402

from swe_srl.experts import load_scripts  # noqa: E402
from swe_srl.harness import HarnessConfig  # noqa: E402
from swe_srl.sandbox.client import docker_client  # noqa: E402
from swe_srl.sandbox.images.cache import ImageCache  # noqa: E402
from swe_srl.sandbox.images.disk import GB, human_bytes, take_snapshot  # noqa: E402
from swe_srl.sandbox.images.source import ensure_image  # noqa: E402
from swe_srl.tasks import load_tasks  # noqa: E402

WORKERS = 2


def tight_budget(demo_ids: set[str], images: int = WORKERS + 1) -> int:
    """The project's image bytes without the demo task images, plus room for ``images`` of them."""
    snap = take_snapshot(docker_client())
    room = images * max(snap.own_bytes(i) for i in demo_ids)
    return snap.total_bytes() - snap.freed_by(demo_ids) + room


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args()
    tasks = load_tasks("demo")
    scripts = load_scripts(tasks)
    client = docker_client()
    tags = [ensure_image(t) for t in tasks]
    demo_ids = {client.images.get(tag).id for tag in tags}
    others = [i.ref for i in take_snapshot(client).images.values() if i.id not in demo_ids]
    with ImageCache().hold(others):
        budget = tight_budget(demo_ids)
        settings = {"none": HarnessConfig(),
                    "tight": HarnessConfig(image_budget_gb=budget / GB, image_prefetch=2),
                    "tight, no prefetch": HarnessConfig(image_budget_gb=budget / GB, image_prefetch=0)}
        print(f"machine: {machine()}; load average at start {load_average():.1f}; "
              f"tight budget {human_bytes(budget)} (base + {WORKERS + 1} of {len(tasks)} task images)")
        one_run(tasks, scripts, WORKERS)  # warm-up: page cache, docker's own caches
        results: dict[str, list[dict]] = {name: [] for name in settings}
        loads = []
        for run in range(args.runs):
            for name, harness in settings.items():
                if harness.image_budget_gb is None:
                    for task in tasks:
                        ensure_image(task)
                else:
                    ImageCache.of(harness.image_budget_gb).enforce()
                loads.append(load_average())
                results[name].append(one_run(tasks, scripts, WORKERS, harness))
                r = results[name][-1]
                print(f"run {run + 1} {name}: {r['wall']:.1f} s wall, {r['episodes_per_min']:.1f} episodes/min, "
                      f"cache {r['image_cache']}", flush=True)
    for task in tasks:  # leave every demo image present, as other users of the engine expect
        ensure_image(task)
    report(results, args.runs, loads, budget, len(tasks))
    if args.json:
        args.json.write_text(json.dumps({"machine": machine(), "budget_bytes": budget, "runs": results},
                                        indent=2) + "\n")


def report(results: dict[str, list[dict]], runs: int, loads: list[float], budget: int, n_tasks: int) -> None:
    base = statistics.median(r["episodes_per_min"] for r in results["none"])
    print(f"\n{n_tasks} demo tasks, scripted expert replay, {WORKERS} workers, median of {runs} runs; "
          f"load average {min(loads):.1f}-{max(loads):.1f}; tight budget {human_bytes(budget)}\n")
    print("| budget | episodes/min (median, min-max) | vs none | images built on demand / prefetched / evicted "
          "per run | budget - peak project image bytes |")
    print("|---|---|---|---|---|")
    for name, rows in results.items():
        epm = [r["episodes_per_min"] for r in rows]
        caches = [r["image_cache"] for r in rows if r["image_cache"]]
        made = "-" if not caches else " / ".join(
            f"{statistics.median(c[k] for c in caches):g}" for k in ("built", "prefetched", "evicted"))
        peak = "-" if not caches else f"{budget - max(c['peak_bytes'] for c in caches):,} B"
        print(f"| {name} | {statistics.median(epm):.1f} ({min(epm):.1f}-{max(epm):.1f}) | "
              f"{statistics.median(epm) / base:.2f}x | {made} | {peak} |")


if __name__ == "__main__":
    main()
