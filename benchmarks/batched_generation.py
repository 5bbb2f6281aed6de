"""Benchmark: one in-process HF model shared by episode threads, batched (`BatchingPolicy`) vs
taking turns behind a lock (`SerialPolicy`), on the tiny offline model.

Two parts, each at 1, 2 and 4 threads/workers:

- ``generate``: the model side alone. N threads each ask for T turns (one conversation per
  call, greedy, prompts of different lengths per thread and turn, no Docker). Reported: turns
  per second. Every batched answer must equal the serial one (same ids, log-probs within
  1e-5), else the script fails.
- ``eval``: `evaluate_tasks` on the 8 demo tasks in Docker with the tiny model as the policy
  (greedy, ``--steps`` turns of ``--tokens`` tokens), so an episode is container start,
  its model turns, the diff and removal (the untrained model's turns are format errors, let
  run to max_steps: no tool runs, nothing to grade). Batched = the raw HFPolicy handed to
  `evaluate_tasks`, which wraps it (the hook);
  serial = `SerialPolicy` around it. Reported: episodes per minute.

Settings alternate run by run so they see the same machine load; one untimed warm-up each.
torch runs on ``--torch-threads`` threads (default 1: on a shared machine OpenMP threads that
wait for busy cores make every step many times slower).

Usage: .venv/bin/python benchmarks/batched_generation.py [--part generate|eval|both] [--runs 3]
       PYTHONPATH=. .venv-vllm/bin/python benchmarks/batched_generation.py --part generate --backend vllm
(the same wrapper around an in-process vLLM engine: batched turns become one engine call)
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import replace
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy  # noqa: E402
from swe_srl.policy.base import SerialPolicy  # noqa: E402
from swe_srl.policy.batching import BatchingPolicy  # noqa: E402

WORDS = "parse the config file then fix the failing test in src/pkg/module.py".split()


def turn_prompt(thread: int, turn: int) -> list[dict]:
    """A conversation whose length differs per thread and turn (a batch is left-padded)."""
    words = [WORDS[(thread * 7 + turn * 3 + i) % len(WORDS)] for i in range(20 + 37 * thread + 11 * turn)]
    return [{"role": "user", "content": " ".join(words)}]


def run_threads(policy, threads: int, turns: int, config: GenerationConfig,
                tool_ms: float = 0.0) -> tuple[float, dict]:
    """``threads`` callers, ``turns`` generate calls each, a random pause of up to ``tool_ms``
    after each (a tool call in the sandbox); returns (seconds, answers by key)."""
    answers: dict[tuple[int, int], object] = {}
    errors: list[BaseException] = []
    barrier = threading.Barrier(threads + 1)

    def caller(index: int) -> None:
        pauses = random.Random(index)
        barrier.wait()
        try:
            for turn in range(turns):
                answers[index, turn] = policy.generate([turn_prompt(index, turn)], config)[0][0]
                time.sleep(pauses.uniform(0, tool_ms) / 1000)
        except BaseException as exc:  # noqa: BLE001 - re-raised below
            errors.append(exc)

    workers = [threading.Thread(target=caller, args=(i,)) for i in range(threads)]
    for w in workers:
        w.start()
    barrier.wait()
    started = time.perf_counter()
    for w in workers:
        w.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - started, answers


def same_answers(serial: dict, batched: dict) -> None:
    for key, a in serial.items():
        b = batched[key]
        if a.completion_ids != b.completion_ids or max(
                (abs(x - y) for x, y in zip(a.logprobs, b.logprobs)), default=0.0) > 1e-5:
            raise SystemExit(f"batched answer differs from the serial one for (thread, turn) {key}")


def bench_generate(policy, counts: list[int], runs: int, turns: int, tokens: int, wait_ms: float) -> dict:
    config = GenerationConfig(temperature=0.0, max_new_tokens=tokens)
    results: dict[str, list[dict]] = {}
    for threads in counts:  # warm-up
        run_threads(SerialPolicy(policy), threads, 1, config)
    for run in range(runs):
        for threads in counts:
            seconds_s, serial = run_threads(SerialPolicy(policy), threads, turns, config)
            with BatchingPolicy(policy, max_batch=threads, max_wait_ms=wait_ms) as batching:
                seconds_b, batched = run_threads(batching, threads, turns, config)
                mean_batch = batching.conversations / batching.calls
            same_answers(serial, batched)
            n = threads * turns
            for mode, seconds, extra in (("serial", seconds_s, 1.0), ("batched", seconds_b, mean_batch)):
                results.setdefault(f"{mode}/{threads}", []).append(
                    {"seconds": seconds, "turns_per_s": n / seconds, "mean_batch": extra})
            print(f"run {run + 1} threads={threads}: serial {n / seconds_s:.2f} turns/s, "
                  f"batched {n / seconds_b:.2f} turns/s (mean batch {mean_batch:.2f})", flush=True)
    print(f"\ngenerate: {turns} turns per thread, greedy, {tokens} new tokens, median of {runs} runs\n")
    print("| threads | serial turns/s | batched turns/s | batched / serial | mean batch |")
    print("|---|---|---|---|---|")
    for threads in counts:
        s = [r["turns_per_s"] for r in results[f"serial/{threads}"]]
        b = [r["turns_per_s"] for r in results[f"batched/{threads}"]]
        mb = statistics.median(r["mean_batch"] for r in results[f"batched/{threads}"])
        print(f"| {threads} | {statistics.median(s):.2f} ({min(s):.2f}-{max(s):.2f}) | "
              f"{statistics.median(b):.2f} ({min(b):.2f}-{max(b):.2f}) | "
              f"{statistics.median(b) / statistics.median(s):.2f}x | {mb:.2f} |")
    return results


def bench_eval(policy, counts: list[int], runs: int, tokens: int, steps: int) -> dict:
    from swe_srl.agent import AgentConfig
    from swe_srl.evaluate import EvalConfig, evaluate_tasks
    from swe_srl.harness import HarnessConfig
    from swe_srl.sandbox.images.source import ensure_image
    from swe_srl.tasks import load_tasks

    tasks = load_tasks("demo")
    for task in tasks:
        ensure_image(task)
    base = EvalConfig(generation=GenerationConfig(temperature=0.0, max_new_tokens=tokens),
                      harness=HarnessConfig(agent=AgentConfig(max_steps=steps, max_format_errors=steps)),
                      model_name="tiny")

    calls = {"calls": 0, "conversations": 0}
    generate = policy.generate

    def counted(conversations, config):  # the hook still sees an HFPolicy: counted on the instance
        calls["calls"] += 1
        calls["conversations"] += len(conversations)
        return generate(conversations, config)

    policy.generate = counted

    def one(mode: str, workers: int) -> dict:
        config = replace(base, workers=workers)
        calls.update(calls=0, conversations=0)
        with tempfile.TemporaryDirectory(prefix="swe-srl-bench-batch-") as out:
            started = time.perf_counter()
            if mode == "serial":
                summary = evaluate_tasks(SerialPolicy(policy), tasks, out, config, thread_safe_policy=True)
            else:  # the hook: evaluate_tasks wraps an in-process policy in a BatchingPolicy
                summary = evaluate_tasks(policy, tasks, out, config)
            wall = time.perf_counter() - started
        if summary["infrastructure_failures"]:
            raise SystemExit(f"{mode} workers={workers}: {summary['infrastructure_errors']}")
        split = summary["time_seconds"]
        return {"wall": wall, "episodes_per_min": 60 * len(tasks) / wall, "model": split["model"],
                "sandbox": split["sandbox"], "turns": summary["mean_steps"],
                "mean_batch": calls["conversations"] / max(1, calls["calls"])}

    settings = [("serial", 1)] + [(m, w) for w in counts if w > 1 for m in ("serial", "batched")]
    one("batched", max(counts))  # warm-up
    results: dict[str, list[dict]] = {}
    for run in range(runs):
        for mode, workers in settings:
            r = one(mode, workers)
            results.setdefault(f"{mode}/{workers}", []).append(r)
            print(f"run {run + 1} {mode} workers={workers}: {r['wall']:.1f} s, {r['episodes_per_min']:.1f} "
                  f"episodes/min, mean turns {r['turns']}, mean batch {r['mean_batch']:.2f}", flush=True)
    base_epm = statistics.median(r["episodes_per_min"] for r in results["serial/1"])
    print(f"\neval: {len(tasks)} demo tasks, max_steps {steps}, {tokens} new tokens, median of {runs} runs\n")
    print("| workers | mode | episodes/min (median, min-max) | vs 1 worker | vs serial, same workers | "
          "model s per episode | mean batch |")
    print("|---|---|---|---|---|---|---|")
    for mode, workers in settings:
        rows = results[f"{mode}/{workers}"]
        epm = [r["episodes_per_min"] for r in rows]
        serial = statistics.median(r["episodes_per_min"] for r in results[f"serial/{workers}"])
        model = statistics.median(r["model"] for r in rows) / len(tasks)
        print(f"| {workers} | {mode} | {statistics.median(epm):.1f} ({min(epm):.1f}-{max(epm):.1f}) | "
              f"{statistics.median(epm) / base_epm:.2f}x | {statistics.median(epm) / serial:.2f}x | {model:.2f} | "
              f"{statistics.median(r['mean_batch'] for r in rows):.2f} |")
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("generate", "eval", "both"), default="both")
    parser.add_argument("--runs", type=int, default=3, help="timed runs per setting (median reported)")
    parser.add_argument("--workers", default="1,2,4", help="comma-separated thread / worker counts")
    parser.add_argument("--turns", type=int, default=6, help="generate part: turns per thread")
    parser.add_argument("--tokens", type=int, default=128, help="new tokens per turn")
    parser.add_argument("--steps", type=int, default=8, help="eval part: agent max_steps")
    parser.add_argument("--wait-ms", type=float, default=10.0, help="generate part: BatchingPolicy max_wait_ms")
    parser.add_argument("--torch-threads", type=int, default=1)
    parser.add_argument("--backend", choices=("hf", "vllm"), default="hf",
                        help="the shared policy (vllm: run with the vLLM environment's python)")
    parser.add_argument("--json", type=Path, default=None, help="also write the raw measurements here")
    args = parser.parse_args()
    import torch

    from swe_srl.tiny_model import make_tiny_model

    torch.set_num_threads(args.torch_threads)
    counts = [int(w) for w in args.workers.split(",")]
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} on "
          f"{args.torch_threads} thread(s); load average at start {os.getloadavg()[0]:.1f}")
    raw: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        model = str(make_tiny_model(Path(tmp) / "tiny"))
        if args.backend == "vllm":  # float32 like hf; a small KV-cache share of host memory
            policy = load_policy(PolicyConfig(backend="vllm", model=model, dtype="float32", enforce_eager=True,
                                              gpu_memory_utilization=0.05, max_model_len=2048))
        else:
            policy = load_policy(PolicyConfig(backend="hf", model=model, device="cpu"))
        if args.part in ("generate", "both"):
            raw["generate"] = bench_generate(policy, counts, args.runs, args.turns, args.tokens, args.wait_ms)
        if args.part in ("eval", "both"):
            raw["eval"] = bench_eval(policy, counts, args.runs, args.tokens, args.steps)
    print(f"load average at end {os.getloadavg()[0]:.1f}")
    if args.json:
        args.json.write_text(json.dumps(raw, indent=2) + "\n")


if __name__ == "__main__":
    main()
