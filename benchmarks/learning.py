"""Does SRL beat more SFT, at equal compute, on a real pretrained model? (issue 18)

From ONE SFT warm start of SmolLM2-135M-Instruct (``swe-srl init-model --smollm2``), per seed:

    (b) sft+     more SFT from the warm start
    (c) sft>srl  SRL (GRPO, step-wise similarity reward) from the warm start

(c) runs first; (b) then gets as many SFT steps as give the same counted compute. Compute is
counted in token-forwards: a token forwarded and back-propagated in an update counts 3 (the
backward pass costs about two forwards), a token of sampling (prompt prefill + generated) counts
1. SFT: 3 x every token of its updates; SRL: 3 x every token of its updates + every prompt and
completion token it sampled (dropped groups included). CPU-seconds of each arm are reported too.

Every model (the start model zero-shot, the warm start, each arm and seed) answers every
held-out step target greedily (tasks never trained on), all in one call of
``swe_srl.evaluate.evaluate_steps`` under bf16 autocast: mean SRL reward, similarity of the
well-formed answers, format errors, exact match, distinct answers; also on the subset whose
expert action does not occur verbatim among the train actions. The best constant answer (one
train action given for every target, the best of those tried) is the bar a policy that ignores
its context reaches.

    .venv/bin/python benchmarks/learning.py                      # warm 24 SFT steps, SRL 6 steps, seeds 0 1 2
    .venv/bin/python benchmarks/learning.py --seeds 0 --srl-steps 3 --variant optim.lr=1e-5

The result file (``OUT/learning.json``) is rewritten after every finished model: a cut run keeps
what it did and a rerun with the same OUT reuses it (delete OUT to start over).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from learning_tiny import parse_variant  # noqa: E402  (benchmarks/ is this script's folder)

from swe_srl.config import RewardConfig, TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets  # noqa: E402
from swe_srl.evaluate import evaluate_steps  # noqa: E402
from swe_srl.paths import default_trajectory_inputs  # noqa: E402
from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy  # noqa: E402
from swe_srl.pretrained import convert_smollm2  # noqa: E402
from swe_srl.prompts import format_completion  # noqa: E402
from swe_srl.rl.checkpoint import resolve_model_dir  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.trainer import train  # noqa: E402

METRICS = ("mean_reward", "mean_similarity", "format_error_rate", "exact_match_rate", "distinct_answer_rate")


def run_train(preset: str, out: Path, model: Path, data: Path, steps: int, seed: int, extra: dict) -> dict:
    """Train one arm (no validation inside: every model is scored the same way afterwards);
    its counted compute and CPU-seconds."""
    settings = {"data.train": str(data / "train.jsonl"), "data.val": str(data / "val.jsonl"),
                "model.path": str(model), "run.out_dir": str(out), "run.max_steps": steps, "run.seed": seed,
                "run.progress": False, "run.tensorboard": False, "run.eval_every": 0, "run.save_every": steps,
                **extra}
    cfg = load_config(TrainConfig, preset, [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    cpu, wall = time.process_time(), time.perf_counter()
    train(cfg)
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    rows = [r for r in read_jsonl(out / "metrics.jsonl") if "step_time" in r]
    update = sum(r.get("train/forward_tokens", 0) for r in rows)
    sampled = sum(r.get("prompt_tokens_sampled", 0) + r.get("completion_tokens", 0) for r in rows) \
        if cfg.method != "sft" else 0
    return {"steps": len(rows), "update_tokens": update, "sampled_tokens": sampled,
            "compute_token_forwards": 3 * update + sampled, "cpu_s": cpu, "wall_s": wall,
            "train_reward_last": rows[-1].get("reward/mean") if rows else None,
            "groups_kept_mean": (statistics.mean(r["groups/kept"] for r in rows)
                                 if rows and "groups/kept" in rows[0] else None)}


def score(model: Path, val: list, novel: set[str], max_new_tokens: int) -> dict:
    """Greedy answers on every held-out step target; metrics on all and on the novel subset."""
    # bf16 autocast, as the runs sample and validate
    policy = load_policy(PolicyConfig(backend="hf", model=str(model), device="cpu", autocast_bf16=True))
    wall = time.perf_counter()
    result = evaluate_steps(policy, val, generation=GenerationConfig(temperature=0.0, max_new_tokens=max_new_tokens))
    result["wall_s"] = time.perf_counter() - wall
    subset = [a for a in result["answers"] if a["id"] in novel]
    result["novel"] = subset_metrics(subset)
    return result


def subset_metrics(answers: list[dict]) -> dict:
    rewards = [a["reward"] for a in answers]
    good = [r for r in rewards if r > -1]
    return {"n": len(answers), "mean_reward": statistics.mean(rewards) if rewards else 0.0,
            "mean_similarity": statistics.mean(good) if good else 0.0,
            "format_error_rate": 1 - len(good) / max(len(rewards), 1)}


def best_constant(train_targets: list, val: list, tries: int) -> tuple[float, float, str]:
    """(held-out reward, how many train actions were tried, the answer) of the best single train
    action given as the answer to every held-out target (about ``tries`` of them, evenly spaced)."""
    reward = RewardConfig().step_reward()
    infos = [{"target": t.target} for t in val]
    candidates = list(dict.fromkeys(format_completion("", t.target) for t in train_targets))
    step = max(1, len(candidates) // tries)
    best = max((sum(reward([c] * len(val), infos)) / len(val), c) for c in candidates[::step])
    return best[0], float(len(candidates[::step])), best[1].split("</think>")[-1].strip()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--warm-steps", type=int, default=24)
    parser.add_argument("--srl-steps", type=int, default=6)
    parser.add_argument("--eval-tokens", type=int, default=128, help="greedy tokens per held-out answer")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="train-config overrides of arm (c) (e.g. optim.lr=1e-5); its rows are named after them")
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "smollm2-135m")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-learning")
    args = parser.parse_args()

    model = convert_smollm2(args.model)
    args.out.mkdir(parents=True, exist_ok=True)
    data = args.out / "dataset"
    if not (data / "val.jsonl").is_file():
        build_dataset(default_trajectory_inputs(), data, DatasetConfig(), output="jsonl")
    train_targets, val = load_step_targets(data / "train.jsonl"), load_step_targets(data / "val.jsonl")
    assert not {t.task_id for t in train_targets} & {t.task_id for t in val}, "held-out tasks leaked into training"
    train_actions = {t.target for t in train_targets}
    novel = {t.id for t in val if t.target not in train_actions}
    result_path = args.out / "learning.json"
    result = json.loads(result_path.read_text()) if result_path.is_file() else {}
    result.update(machine=f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
                  val_targets=len(val), val_tasks=len({t.task_id for t in val}), novel_targets=len(novel),
                  train_targets=len(train_targets), warm_steps=args.warm_steps, srl_steps=args.srl_steps,
                  eval_tokens=args.eval_tokens, variant=args.variant)
    models = result.setdefault("models", {})
    runs = result.setdefault("runs", {})

    def save() -> None:
        result_path.write_text(json.dumps(result, indent=2))

    def scored(name: str, path: Path) -> None:
        if name not in models:
            res = score(resolve_model_dir(path), val, novel, args.eval_tokens)
            (args.out / f"answers-{name.replace('>', '_').replace(' ', '_')}.json").write_text(
                json.dumps(res.pop("answers"), indent=1))
            models[name] = res
            save()
        m = models[name]
        print(f"{name}: reward {m['mean_reward']:.3f}, similarity {m['mean_similarity']:.3f}, "
              f"format errors {m['format_error_rate']:.1%}, distinct {m['distinct_answers']}", flush=True)

    if "best_constant" not in result:
        value, tried, answer = best_constant(train_targets, val, 400)
        result["best_constant"] = {"mean_reward": value, "tried": tried, "answer": answer[:200]}
        save()
    scored("start (zero-shot)", model)
    warm = args.out / "warm"
    if "warm" not in runs:
        runs["warm"] = run_train("smollm2-cpu-sft", warm, model, data, args.warm_steps, 0, {})
        save()
    scored("warm (sft)", warm)
    warm_rows = [r for r in read_jsonl(warm / "metrics.jsonl") if "train/forward_tokens" in r]
    sft_step_compute = 3 * statistics.mean(r["train/forward_tokens"] for r in warm_rows)
    variant = {k: v for text in args.variant for k, v in parse_variant(text).items()}
    tag = "".join(f" {k}={v}" for k, v in variant.items())
    for seed in args.seeds:
        srl_name, sft_name = f"sft>srl{tag} seed {seed}", f"sft+ (equal compute to{tag or ' srl'}) seed {seed}"
        srl_dir = args.out / f"seed-{seed}" / ("srl" + tag.replace(" ", "_").replace("=", "-"))
        if srl_name not in runs:
            runs[srl_name] = run_train("smollm2-cpu", srl_dir, warm, data, args.srl_steps, seed, variant)
            save()
        scored(srl_name, srl_dir)
        sft_steps = max(1, round(runs[srl_name]["compute_token_forwards"] / sft_step_compute))
        sft_dir = args.out / f"seed-{seed}" / ("sft" + tag.replace(" ", "_").replace("=", "-"))
        if sft_name not in runs:
            runs[sft_name] = run_train("smollm2-cpu-sft", sft_dir, warm, data, sft_steps, seed, {})
            save()
        scored(sft_name, sft_dir)
    for line in table(result):
        print(line)


def table(result: dict) -> list[str]:
    """Markdown: one row per model, then mean +- std over seeds per arm."""
    lines = [f"best constant answer: held-out reward {result['best_constant']['mean_reward']:.3f} "
             f"(of {int(result['best_constant']['tried'])} train actions tried)", "",
             "| model | compute (token-forwards) | CPU-s | held-out reward | similarity | format errors | exact | "
             "distinct | reward on novel targets |", "|---|---|---|---|---|---|---|---|---|"]
    for name, m in result["models"].items():
        run = result["runs"].get(name) or result["runs"].get("warm" if name.startswith("warm") else "", {})
        lines.append(f"| {name} | {run.get('compute_token_forwards', 0):,} | {run.get('cpu_s', 0):.0f} | "
                     f"{m['mean_reward']:.3f} | {m['mean_similarity']:.3f} | {m['format_error_rate']:.1%} | "
                     f"{m['exact_match_rate']:.1%} | {m['distinct_answers']} | {m['novel']['mean_reward']:.3f} |")
    arms: dict[str, list[dict]] = {}
    for name, m in result["models"].items():
        if " seed " in name:
            arms.setdefault(name.rsplit(" seed ", 1)[0], []).append(m)
    lines += ["", "| arm | seeds | held-out reward | similarity | format errors | reward on novel targets |",
              "|---|---|---|---|---|---|"]
    for arm, ms in arms.items():
        def stat(key: str, novel: bool = False) -> str:
            values = [(m["novel"] if novel else m)[key] for m in ms]
            spread = statistics.stdev(values) if len(values) > 1 else 0.0
            return f"{statistics.mean(values):.3f} +- {spread:.3f}"
        lines.append(f"| {arm} | {len(ms)} | {stat('mean_reward')} | {stat('mean_similarity')} | "
                     f"{stat('format_error_rate')} | {stat('mean_reward', True)} |")
    return lines


if __name__ == "__main__":
    main()
