"""Sandbox figures, each side by side with its baseline in the same run (same machine load):

1. per-command overhead (p50, p95) of ``DockerSandbox.exec`` vs ``docker exec`` through the CLI
   (how mini-swe-agent runs commands) vs the docker SDK's ``exec_run``; runs interleaved;
2. container lifecycle: ``DockerSandbox`` start (reap + create + start + tools + git scrub),
   ``reset()``, ``close()`` vs ``docker run -d`` + ``docker rm -f`` through the CLI;
3. episodes per minute with 1, 2 and 4 in parallel (episode = start, view a file, edit it
   through str_replace_editor, run the tests, diff, remove);
4. leaked containers after the run: must be zero (asserted).

Grading (``swe_srl.sandbox.grading.grade`` vs SWE-bench's ``run_instance``) is measured by
benchmarks/grading.py, owned by the grading engineer.

    .venv/bin/python benchmarks/sandbox.py [--task swe-srl-demo__datekit-1] [--exec-n 40] [--runs 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from swe_srl.actions import make_action  # noqa: E402
from swe_srl.paths import TASKS_DIR  # noqa: E402
from swe_srl.sandbox import SandboxConfig, open_sandbox, run_tool  # noqa: E402
from swe_srl.sandbox.client import docker_client  # noqa: E402
from swe_srl.sandbox.images.build import build_task_image  # noqa: E402
from swe_srl.sandbox.reaper import list_sandboxes  # noqa: E402

RUN_ID = f"bench-{os.getpid()}"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def ms(values: list[float]) -> str:
    return f"{pct(values, 0.5) * 1000:.0f} / {pct(values, 0.95) * 1000:.0f}"


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def bench_exec(image: str, n: int, runs: int) -> dict[str, list[float]]:
    samples: dict[str, list[float]] = {"DockerSandbox.exec": [], "docker exec (CLI)": [], "SDK exec_run": []}
    with open_sandbox(SandboxConfig(image=image, run_id=RUN_ID)) as box:
        container = docker_client().containers.get(box.container_id)
        for _ in range(runs):
            for _ in range(n):  # interleaved: all three see the same load
                samples["DockerSandbox.exec"].append(timed(lambda: box.exec("true")))
                samples["docker exec (CLI)"].append(timed(lambda: subprocess.run(
                    ["docker", "exec", "-w", "/testbed", box.container_id, "bash", "-c", "true"], check=True)))
                samples["SDK exec_run"].append(timed(lambda: container.exec_run(["bash", "-c", "true"])))
    return samples


def bench_lifecycle(image: str, n: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"DockerSandbox start": [], "DockerSandbox reset": [],
                                   "DockerSandbox close": [], "docker run -d (CLI)": [], "docker rm -f (CLI)": []}
    for _ in range(n):
        start = time.perf_counter()
        box = open_sandbox(SandboxConfig(image=image, run_id=RUN_ID))
        out["DockerSandbox start"].append(time.perf_counter() - start)
        box.exec("echo x >> README.md; touch new.txt")
        out["DockerSandbox reset"].append(timed(box.reset))
        out["DockerSandbox close"].append(timed(box.close))
        start = time.perf_counter()
        cid = subprocess.run(["docker", "run", "-d", "--init", "--network", "none", image, "sleep", "infinity"],
                             check=True, capture_output=True, text=True).stdout.strip()
        out["docker run -d (CLI)"].append(time.perf_counter() - start)
        out["docker rm -f (CLI)"].append(timed(lambda: subprocess.run(["docker", "rm", "-f", cid], check=True,
                                                                      capture_output=True)))
    return out


def episode(image: str, source_file: str, old: str, new: str) -> float:
    start = time.perf_counter()
    with open_sandbox(SandboxConfig(image=image, run_id=RUN_ID)) as box:
        run_tool(box, make_action("str_replace_editor", {"command": "view", "path": f"/testbed/{source_file}"}))
        edited = run_tool(box, make_action("str_replace_editor", {"command": "str_replace",
                                                                  "path": f"/testbed/{source_file}",
                                                                  "old_str": old, "new_str": new}))
        assert edited.exit_code == 0, edited.output
        run_tool(box, make_action("bash", {"command": "python3 -m pytest -q 2>&1 | tail -3"}))
        assert box.diff()
    return time.perf_counter() - start


def bench_episodes(image: str, per_worker: int, workers: tuple[int, ...], edit: tuple[str, str, str]) -> dict:
    results = {}
    for k in workers:
        count = per_worker * k
        start = time.perf_counter()
        with ThreadPoolExecutor(max_workers=k) as pool:
            durations = list(pool.map(lambda _: episode(image, *edit), range(count)))
        wall = time.perf_counter() - start
        results[k] = (count, wall, 60 * count / wall, statistics.median(durations))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--task", default="swe-srl-demo__datekit-1")
    parser.add_argument("--exec-n", type=int, default=40, help="commands per run per method")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--lifecycle-n", type=int, default=8)
    parser.add_argument("--episodes-per-worker", type=int, default=4)
    args = parser.parse_args()

    image = build_task_image(TASKS_DIR / args.task)
    edit = ("datekit/months.py", "return date(year, month + 1, day.day)",
            "return date(year, month + 1, min(day.day, 28))")
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"Docker {docker_client().version()['Version']}, load {os.getloadavg()[0]:.1f}; image {image}")

    samples = bench_exec(image, args.exec_n, args.runs)
    base = pct(samples["docker exec (CLI)"], 0.5)
    print(f"\n| per-command exec (`true`), n={args.exec_n * args.runs} | p50 / p95 ms | p50 vs CLI |\n|---|---|---|")
    for name, values in samples.items():
        print(f"| {name} | {ms(values)} | {pct(values, 0.5) / base:.2f}x |")

    life = bench_lifecycle(image, args.lifecycle_n)
    print(f"\n| lifecycle, n={args.lifecycle_n} | p50 / p95 ms |\n|---|---|")
    for name, values in life.items():
        print(f"| {name} | {ms(values)} |")

    print("\n| episodes in parallel | episodes | wall s | episodes/min | median episode s |\n|---|---|---|---|---|")
    for k, (count, wall, per_min, med) in bench_episodes(image, args.episodes_per_worker, (1, 2, 4), edit).items():
        print(f"| {k} | {count} | {wall:.1f} | {per_min:.1f} | {med:.2f} |")

    leaked = list_sandboxes(RUN_ID)
    print(f"\nleaked containers after the run: {len(leaked)}; load {os.getloadavg()[0]:.1f}")
    assert not leaked, f"leaked sandbox containers: {leaked}"


if __name__ == "__main__":
    main()
