"""Step time of rlvr on the demo tasks in Docker, rollouts in line vs one step ahead
(``rollout.async_ahead``: the next batch's episodes run while the update runs).

Same config both ways (``tiny-cpu`` preset, rlvr, G episodes per task, whole-conversation
agent, a random-init Qwen2 body of ``--hidden`` x ``--layers`` on the tiny model's tokenizer,
so that the update costs something next to the episodes), runs alternated so both see the same
machine load. The figure per run is the median ``step_time`` over steps 2..N (step 1 has
nothing to overlap with); the table gives the median over runs and the ratio.

    PYTHONPATH=. .venv/bin/python benchmarks/async_rollouts.py --runs 3 --steps 4
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "benchmarks"))


def one_run(model: Path, out: Path, ahead: bool, args: argparse.Namespace) -> dict:
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.run_log import read_jsonl
    from swe_srl.rl.trainer import train

    cfg = load_config(TrainConfig, "tiny-cpu", {
        "method": "rlvr", "model.path": str(model), "run.out_dir": str(out), "run.progress": False,
        "run.tensorboard": False, "run.max_steps": args.steps, "run.save_every": 0, "run.eval_every": 0,
        "optim.batch_size": args.tasks, "grpo.num_generations": args.generations, "grpo.max_resample_rounds": 1,
        "grpo.dynamic_sampling_eps": -1.0, "episodes.workers": args.tasks * args.generations,
        "episodes.harness.agent.max_steps": args.turns, "episodes.harness.agent.context": "conversation",
        "generation.max_new_tokens": args.tokens, "rollout.async_ahead": ahead})
    train(cfg)
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "step_time" in r]
    later = rows[1:]
    return {"step": statistics.median(r["step_time"] for r in later),
            "rollout": statistics.median(r["time/rollout_s"] for r in later),
            "update": statistics.median(r["time/update_s"] for r in later),
            "wait": statistics.median(r.get("time/ahead_wait_s", 0.0) for r in later)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--tasks", type=int, default=1, help="tasks per step (optim.batch_size)")
    parser.add_argument("--generations", type=int, default=2, help="G episodes per task")
    parser.add_argument("--turns", type=int, default=4, help="agent.max_steps")
    parser.add_argument("--tokens", type=int, default=48, help="generation.max_new_tokens")
    parser.add_argument("--hidden", type=int, default=512)
    parser.add_argument("--layers", type=int, default=4)
    args = parser.parse_args()
    from rollout import make_model

    load = os.getloadavg()[0]
    print(f"# {platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}, "
          f"load {load:.1f}, {time.strftime('%Y-%m-%d')}")
    results: dict[bool, list[dict]] = {False: [], True: []}
    with tempfile.TemporaryDirectory() as tmp:
        model = make_model(Path(tmp) / "model", args.hidden, args.layers)
        for run in range(args.runs):
            for ahead in (False, True):
                got = one_run(model, Path(tmp) / f"run-{run}-{int(ahead)}", ahead, args)
                results[ahead].append(got)
                print(f"run {run + 1} {'ahead ' if ahead else 'inline'}: step {got['step']:.2f} s "
                      f"(waited for the batch {got['rollout']:.2f} s, update {got['update']:.2f} s, "
                      f"waited for the draw ahead {got['wait']:.2f} s)", flush=True)
    inline = statistics.median(r["step"] for r in results[False])
    ahead = statistics.median(r["step"] for r in results[True])
    print(f"median step time, steps 2..{args.steps}: inline {inline:.2f} s, one step ahead {ahead:.2f} s "
          f"-> {inline / ahead:.2f}x; load now {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
