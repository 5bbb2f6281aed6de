"""GRPO step time: swe-srl's loop against TRL's ``GRPOTrainer`` on the same work.

Same tiny model (``swe_srl.tiny_model``), same prompts (step targets rendered with the
model's chat template), same G, same completion budget, same similarity reward, beta 0,
one update per generation batch, float32 on CPU. Dynamic sampling is off in our loop
(every group is kept, one sampling round) so both do exactly one generation and one
forward/backward over the same number of completions per step.

Rounds alternate TRL and ours (so machine noise hits both); the first ``--warmup`` steps of
each run are dropped; the figure is the median step time over every remaining step, and
the ratio is ours / TRL.

    .venv/bin/python benchmarks/grpo_step.py                # 8 prompts x G=4, 32 new tokens
    .venv/bin/python benchmarks/grpo_step.py --prompts 16 --generations 8 --steps 6
"""

from __future__ import annotations

import argparse
import json
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


def step_targets(n: int):
    """``n`` step targets: the bundled samples when present, else short synthetic ones."""
    from swe_srl.actions import make_action, render_xml
    from swe_srl.paths import SAMPLES_DIR
    from swe_srl.schemas import StepTarget

    if SAMPLES_DIR.is_dir():
        from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets

        out = Path(tempfile.mkdtemp(prefix="grpo-bench-data-"))
        build_dataset([SAMPLES_DIR], out, DatasetConfig(val_fraction=0.0, observation_budget=300,
                                                        context_rounds=1), output="jsonl")
        targets = load_step_targets(out / "train.jsonl")
        if len(targets) >= n:
            return targets[:n]
    return [StepTarget(id=f"t{i}", trajectory_id=f"t{i}", task_id=f"t{i}", step_index=0, num_steps=1,
                       problem_statement=f"Fix the bug in src/mod{i}.py", context=(),
                       target=render_xml(make_action("bash", {"command": f"cat src/mod{i}.py"})),
                       target_tool="bash") for i in range(n)]


def run_trl(model_dir: Path, targets, args, steps: int) -> dict:
    """Step times of TRL's GRPOTrainer (on_step_begin -> on_step_end)."""
    from datasets import Dataset
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback
    from trl import GRPOConfig, GRPOTrainer

    from swe_srl.prompts import messages_for_target
    from swe_srl.rewards.similarity import RewardConfig, SimilarityReward

    score = SimilarityReward(RewardConfig(similarity="cydifflib"))

    def similarity_reward(completions, target, **_):
        texts = [c[-1]["content"] if isinstance(c, list) else c for c in completions]
        return score(texts, [{"target": t} for t in target])

    class Timer(TrainerCallback):
        def __init__(self):
            self.times, self.lengths = [], []

        def on_step_begin(self, *a, **k):
            self._t = time.perf_counter()

        def on_step_end(self, *a, **k):
            self.times.append(time.perf_counter() - self._t)

        def on_log(self, _args, _state, _control, logs=None, **k):
            if logs and "completions/mean_length" in logs:
                self.lengths.append(logs["completions/mean_length"])

    rows = [{"prompt": messages_for_target(t), "target": t.target} for t in targets]
    data = Dataset.from_list(rows * steps)
    timer = Timer()
    with tempfile.TemporaryDirectory(prefix="grpo-bench-trl-") as out:
        config = GRPOConfig(
            output_dir=out, use_cpu=True, gradient_checkpointing=False, beta=0.0,
            num_generations=args.generations, max_completion_length=args.max_new_tokens,
            per_device_train_batch_size=args.prompts * args.generations, gradient_accumulation_steps=1,
            temperature=1.0, top_p=1.0, learning_rate=1e-6, max_steps=steps, logging_steps=1,
            save_strategy="no", report_to="none", disable_tqdm=True, seed=args.seed, shuffle_dataset=False,
            bf16=False, max_grad_norm=1.0,
        )
        model = AutoModelForCausalLM.from_pretrained(model_dir, dtype="float32")
        tokenizer = AutoTokenizer.from_pretrained(model_dir)
        trainer = GRPOTrainer(model=model, reward_funcs=similarity_reward, args=config, train_dataset=data,
                              processing_class=tokenizer, callbacks=[timer])
        trainer.train()
    return {"times": timer.times, "completion_len": statistics.mean(timer.lengths) if timer.lengths else None}


def run_ours(model_dir: Path, data_dir: Path, args, steps: int) -> dict:
    """Step times of swe-srl's loop (sample -> score -> filter -> update), from metrics.jsonl."""
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.run_log import read_jsonl
    from swe_srl.rl.trainer import train

    with tempfile.TemporaryDirectory(prefix="grpo-bench-ours-") as out:
        config = load_config(TrainConfig, "tiny-cpu", {
            "method": "srl", "model.path": str(model_dir), "data.train": str(data_dir / "train.jsonl"),
            "data.shuffle": False, "run.out_dir": out, "run.max_steps": steps, "run.eval_every": 0,
            "run.save_every": 0, "run.progress": False, "run.tensorboard": False, "run.seed": args.seed,
            "optim.batch_size": args.prompts, "optim.lr": 1e-6, "optim.max_grad_norm": 1.0,
            "grpo.num_generations": args.generations, "generation.max_new_tokens": args.max_new_tokens,
            "generation.temperature": 1.0, "grpo.dynamic_sampling_eps": -1.0, "grpo.max_resample_rounds": 1,
            "grpo.beta": 0.0,
        })
        train(config)
        rows = [r for r in read_jsonl(Path(out) / "metrics.jsonl") if "step_time" in r]
    return {"times": [r["step_time"] for r in rows],
            "completion_len": statistics.mean(r["completion_len/mean"] for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--prompts", type=int, default=8, help="step targets per step")
    parser.add_argument("--generations", type=int, default=4, help="G")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--steps", type=int, default=5, help="measured steps per run")
    parser.add_argument("--warmup", type=int, default=1, help="steps dropped at the start of each run")
    parser.add_argument("--rounds", type=int, default=2, help="alternating TRL/ours runs")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args()

    import torch
    import transformers
    import trl

    from swe_srl.dataset import SplitWriter
    from swe_srl.tiny_model import make_tiny_model

    work = Path(tempfile.mkdtemp(prefix="grpo-bench-"))
    model_dir = make_tiny_model(work / "model", seed=args.seed)
    targets = step_targets(args.prompts)
    writer = SplitWriter(work / "data", splits=("train",))
    for t in targets:
        writer.write(t)
    writer.commit()

    steps = args.warmup + args.steps
    results: dict[str, list] = {"trl": [], "ours": []}
    lengths: dict[str, list] = {"trl": [], "ours": []}
    for r in range(args.rounds):
        for name in ("trl", "ours"):
            out = run_trl(model_dir, targets, args, steps) if name == "trl" else run_ours(model_dir, work / "data",
                    args, steps)
            results[name] += out["times"][args.warmup:]
            lengths[name].append(out["completion_len"])
            print(f"round {r + 1} {name}: " + " ".join(f"{t:.3f}" for t in out["times"]), flush=True)

    med = {k: statistics.median(v) for k, v in results.items()}
    summary = {
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__} "
        f"({torch.get_num_threads()} threads), transformers {transformers.__version__}, trl {trl.__version__}",
        "shape": f"{args.prompts} prompts x G={args.generations}, {args.max_new_tokens} new tokens, "
        f"{args.steps} steps x {args.rounds} rounds (+{args.warmup} warm-up each)",
        "median_step_s": med,
        "ratio_ours_over_trl": med["ours"] / med["trl"],
        "mean_completion_len": {
            k: statistics.mean(x for x in v if x is not None) if any(x is not None for x in v) else None
            for k, v in lengths.items()
        },
        "step_times": results,
    }
    print(json.dumps({k: v for k, v in summary.items() if k != "step_times"}, indent=2))
    if args.json:
        args.json.write_text(json.dumps(summary, indent=2))


if __name__ == "__main__":
    main()
