"""Benchmark: the leak scan of build-dataset — hits on real and bundled trajectories, scan
speed, and build_dataset's wall time with the scan on (`--leaks drop`, the default) vs off
(`--leaks keep`, the baseline).

Corpora: the bundled samples, demo expert runs and synthetic trajectories, and
``../shared/real-samples`` where present (published trajectories, never copied here); then a
generated SWE-smith corpus (the paper's syntax, from benchmarks/build_dataset.py).

Usage: python benchmarks/leaks.py [--trajectories 1000] [--repeats 5]
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from swe_srl.dataset import DatasetConfig, build_dataset  # noqa: E402
from swe_srl.formats import read_trajectories  # noqa: E402
from swe_srl.leaks import scan_trajectory  # noqa: E402
from swe_srl.paths import EXPERT_TRAJECTORIES_DIR, SAMPLES_DIR, SYNTHETIC_TRAJECTORIES_DIR  # noqa: E402

CORPORA = {"samples": SAMPLES_DIR, "expert": EXPERT_TRAJECTORIES_DIR, "synthetic": SYNTHETIC_TRAJECTORIES_DIR,
           "real-samples": ROOT.parent / "shared" / "real-samples"}


def hits(repeats: int) -> None:
    print("| corpus | trajectories | steps | leaky steps | scan, median CPU us/step |")
    print("|---|---|---|---|---|")
    for name, root in CORPORA.items():
        if not root.is_dir():
            print(f"| {name} | absent | | | |")
            continue
        trajs = list(read_trajectories([root], on_skip=lambda skip: None))
        steps = sum(len(t.steps) for t in trajs)
        found = [leak for t in trajs for leaks in scan_trajectory(t) for leak in leaks]
        for leak in found:
            print(f"  hit: {leak.rule}: {leak.text}")
        times = []
        for _ in range(repeats):
            start = time.process_time()
            for t in trajs:
                scan_trajectory(t)
            times.append(time.process_time() - start)
        print(f"| {name} | {len(trajs)} | {steps} | {len(found)} | {statistics.median(times) / steps * 1e6:.1f} |")


def build_times(inputs: list[Path], out: Path, repeats: int) -> dict[str, list[float]]:
    """CPU seconds of this process per build (wall time on a shared machine is mostly the
    other jobs), runs of the two modes interleaved."""
    times: dict[str, list[float]] = {"keep": [], "drop": []}
    for _ in range(repeats):
        for mode in times:
            start = time.process_time()
            build_dataset(inputs, out / mode, DatasetConfig(leaks=mode), output="jsonl")  # type: ignore[arg-type]
            times[mode].append(time.process_time() - start)
    return times


def report(label: str, times: dict[str, list[float]]) -> None:
    keep, drop = (statistics.median(times[m]) for m in ("keep", "drop"))
    runs = "; ".join(f"{m}: " + ", ".join(f"{t:.2f}" for t in ts) for m, ts in times.items())
    print(f"{label}: CPU s keep {keep:.2f}, drop {drop:.2f}, ratio drop/keep {drop / keep:.2f}x  ({runs})")


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=1000, help="size of the generated SWE-smith corpus")
    ap.add_argument("--repeats", type=int, default=5)
    args = ap.parse_args()
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}, load {os.getloadavg()[0]:.1f}")
    hits(args.repeats)
    with tempfile.TemporaryDirectory(prefix="swe-srl-leaks-") as tmp:
        work = Path(tmp)
        from swe_srl.paths import default_trajectory_inputs

        report("bundled inputs (build-dataset default)", build_times(default_trajectory_inputs(), work, args.repeats))
        spec = importlib.util.spec_from_file_location("bench_build", ROOT / "benchmarks" / "build_dataset.py")
        bench = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
        spec.loader.exec_module(bench)  # type: ignore[union-attr]
        steps = bench.make_corpus(work / "corpus.jsonl", args.trajectories)
        report(f"SWE-smith corpus ({args.trajectories} trajectories, {steps} steps)",
               build_times([work / "corpus.jsonl"], work, args.repeats))


if __name__ == "__main__":
    main()
