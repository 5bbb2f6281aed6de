"""Benchmark: `build-dataset` on a paper-scale corpus vs a naive baseline, in one run.

The SRL paper's SWE data is ~5,000 expert trajectories cut into ~134k step targets. This script
generates a corpus of that size in the SWE-smith format (XML function calls in text, the
paper's own syntax) as JSONL, then converts it twice, each in a fresh subprocess so that peak
RSS is measured per converter:

  ours   : `swe_srl.dataset.build_dataset` (streams records, writes step targets as it goes)
  naive  : json.load of the whole corpus + a per-step Python loop building every step target
           in memory, then one json dump (what a first script usually looks like)

Usage: python benchmarks/build_dataset.py [--trajectories 5000] [--repeats 3] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

TOOLS = ["bash", "str_replace_editor"]
WORDS = ("parser value config token request handler cache index error state module field "
         "object result stream buffer record schema session client server path").split()


def _text(rng: random.Random, n_chars: int) -> str:
    out, size = [], 0
    while size < n_chars:
        w = rng.choice(WORDS)
        out.append(w)
        size += len(w) + 1
    return " ".join(out)


def _code(rng: random.Random, lines: int) -> str:
    return "\n".join(f"{i:6d}\t    {rng.choice(WORDS)} = {rng.choice(WORDS)}({rng.randint(0, 99)})" for i in range(1,
            lines + 1))


def _call(rng: random.Random) -> str:
    roll = rng.random()
    if roll < 0.45:
        return (f"<function=bash>\n<parameter=command>grep -rn \"{rng.choice(WORDS)}\" /testbed/src "
                f"| head -{rng.randint(5, 40)}</parameter>\n</function>")
    if roll < 0.75:
        return (f"<function=str_replace_editor>\n<parameter=command>view</parameter>\n"
                f"<parameter=path>/testbed/src/{rng.choice(WORDS)}.py</parameter>\n</function>")
    old = _code(rng, rng.randint(2, 8))
    return (f"<function=str_replace_editor>\n<parameter=command>str_replace</parameter>\n"
            f"<parameter=path>/testbed/src/{rng.choice(WORDS)}.py</parameter>\n"
            f"<parameter=old_str>{old}</parameter>\n"
            f"<parameter=new_str>{old.replace('(', '(1 + ')}</parameter>\n</function>")


def make_corpus(path: Path, n_traj: int, steps_mean: float = 26.8, seed: int = 0) -> int:
    """Write ``n_traj`` SWE-smith rows to ``path``; returns the number of steps written."""
    rng = random.Random(seed)
    total = 0
    with path.open("w", encoding="utf-8") as fh:
        for i in range(n_traj):
            n_steps = max(3, int(rng.gauss(steps_mean, 8)))
            total += n_steps
            problem = _text(rng, rng.randint(600, 2500))
            messages = [
                {"role": "system", "content": "You are a helpful assistant that can interact with a computer to solve "
                                              "tasks."},
                {"role": "user", "content": f"<uploaded_files>\n/testbed\n</uploaded_files>\n<pr_description>\n"
                                             f"{problem}\n</pr_description>\nMake the changes."},
            ]
            for _ in range(n_steps - 1):
                messages.append({"role": "assistant",
                                 "content": _text(rng, rng.randint(80, 400)) + "\n\n" + _call(rng)})
                messages.append({"role": "user", "content": "OBSERVATION:\n" + _code(rng, rng.randint(5, 120))})
            messages.append({"role": "assistant", "content": "Done.\n\n<function=submit>\n</function>"})
            row = {"instance_id": f"bench__repo-{i // 3}", "traj_id": f"bench__repo-{i // 3}.{i}",
                   "model": "bench", "resolved": True, "patch": "diff --git a/x b/x\n", "messages": messages}
            fh.write(json.dumps(row) + "\n")
    return total


def run_ours(corpus: Path, out: Path) -> dict:
    from swe_srl.dataset import DatasetConfig, build_dataset

    result = build_dataset([corpus], out, DatasetConfig(), output="jsonl")
    return {"step_targets": sum(result.stats["step_targets"].values())}


def run_naive(corpus: Path, out: Path) -> dict:
    """The baseline: everything in memory, one pass of plain Python per step."""
    import re

    rows = [json.loads(line) for line in corpus.open(encoding="utf-8")]
    call = re.compile(r"<function=.*?</function>", re.DOTALL)
    targets = []
    for row in rows:
        msgs = row["messages"]
        problem = msgs[1]["content"]
        steps = []
        for j in range(2, len(msgs), 2):
            m = call.search(msgs[j]["content"])
            obs = msgs[j + 1]["content"] if j + 1 < len(msgs) else ""
            steps.append((m.group(0) if m else "", obs[:2000]))
        for k, (action, _) in enumerate(steps):
            context = [{"action": a, "observation": o} for a, o in steps[max(0, k - 2):k]]
            targets.append({"id": f"{row['traj_id']}#{k}", "problem_statement": problem,
                            "context": context, "target": action})
    out.mkdir(parents=True, exist_ok=True)
    with (out / "train.jsonl").open("w", encoding="utf-8") as fh:
        fh.write("\n".join(json.dumps(t) for t in targets) + "\n")
    return {"step_targets": len(targets)}


def _child(which: str, corpus: str, out: str) -> None:
    start = time.perf_counter()
    info = (run_ours if which == "ours" else run_naive)(Path(corpus), Path(out))
    info["seconds"] = time.perf_counter() - start
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(json.dumps(info))


def measure(which: str, corpus: Path, out: Path) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", which, str(corpus), str(out)],
                          capture_output=True, text=True, check=True)
    return json.loads(proc.stdout.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--trajectories", type=int, default=5000)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--keep", type=Path, default=None, help="keep the corpus and outputs here")
    ap.add_argument("--child", nargs=3, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        _child(*args.child)
        return
    work = args.keep or Path(tempfile.mkdtemp(prefix="swe-srl-bench-"))
    work.mkdir(parents=True, exist_ok=True)
    corpus = work / "corpus.jsonl"
    t0 = time.perf_counter()
    steps = make_corpus(corpus, args.trajectories)
    print(f"corpus: {args.trajectories} trajectories, {steps} steps, {corpus.stat().st_size / 1e6:.0f} MB "
          f"(generated in {time.perf_counter() - t0:.1f} s)")
    results: dict[str, list[dict]] = {"ours": [], "naive": []}
    for _ in range(args.repeats):
        for which in ("ours", "naive"):
            results[which].append(measure(which, corpus, work / f"out-{which}"))
    print(f"machine: {os.cpu_count()} cores, python {sys.version.split()[0]}")
    summary = {}
    for which, runs in results.items():
        secs = statistics.median(r["seconds"] for r in runs)
        rss = statistics.median(r["peak_rss_mb"] for r in runs)
        summary[which] = (secs, rss)
        print(f"{which:6s} step_targets={runs[0]['step_targets']:>7d}  median {secs:6.2f} s  "
              f"peak RSS {rss:7.0f} MB  runs: {', '.join(format(r['seconds'], '.2f') for r in runs)}")
    print(f"ratio ours/naive: time {summary['ours'][0] / summary['naive'][0]:.2f}x, "
          f"peak RSS {summary['ours'][1] / summary['naive'][1]:.2f}x")
    if args.keep is None:
        import shutil

        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
