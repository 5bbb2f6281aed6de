"""Does SRL help beyond more SFT? Four arms from the same tiny initial model, several seeds.

    (a) sft      SFT for N steps                       (the warm start)
    (b) sft+     SFT for N + M steps                   (the equal-step control the paper lacks)
    (c) sft>srl  SFT for N steps, then SRL for M steps (the paper's recipe)
    (d) srl      SRL for M steps from the initial model

Every arm is validated greedily on the same held-out step targets (tasks never trained on):
mean SRL reward, similarity of the well-formed answers, format-error rate, exact match. The
table gives mean +- std over seeds of the final values; the PNG the held-out reward against
optimizer steps. ``--eps`` repeats arm (c) with other ``grpo.dynamic_sampling_eps`` values.

    .venv/bin/python benchmarks/learning_tiny.py                                  # N=80, M=20, seeds 0 1 2
    .venv/bin/python benchmarks/learning_tiny.py --seeds 0 --sft-steps 40 --srl-steps 10 --eps 1e-4 0.05
    .venv/bin/python benchmarks/learning_tiny.py --ablate runs/bench-learning-tiny/seed-0 --eps 1e-4 \\
        --variant optim.lr=1e-3

Arm (b) continues arm (a)'s run (constant learning rate, so it is the same as N + M steps from
scratch); arm (c) starts from arm (a)'s last checkpoint, as README command 1 does.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import time
from pathlib import Path

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets  # noqa: E402
from swe_srl.paths import default_trajectory_inputs  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.trainer import train  # noqa: E402
from swe_srl.tiny_model import make_tiny_model  # noqa: E402

METRICS = ("val/reward", "val/similarity", "val/format_error_rate", "val/exact_match")
ARMS = ("sft", "sft+", "sft>srl", "srl")


def run_arm(preset: str, out: Path, model: Path, data: Path, steps: int, seed: int, evals: int,
            extra: dict, resume: bool = False) -> list[dict]:
    """Train one arm; its validation rows (step, metrics) from metrics.jsonl."""
    settings = {"data.train": str(data / "train.jsonl"), "data.val": str(data / "val.jsonl"),
                "data.val_limit": 0, "model.path": str(model), "run.out_dir": str(out),
                "run.max_steps": steps, "run.seed": seed, "run.progress": False,
                "run.eval_every": max(1, steps // evals), "run.save_every": steps, **extra}
    cfg = load_config(TrainConfig, preset, [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    train(cfg, resume=resume)
    return [r for r in read_jsonl(out / "metrics.jsonl") if "val/reward" in r]


def one_seed(seed: int, args: argparse.Namespace, data: Path, root: Path) -> dict[str, list[dict]]:
    model = make_tiny_model(root / "model", seed=seed)
    N, M, k = args.sft_steps, args.srl_steps, args.evals
    rows: dict[str, list[dict]] = {}
    rows["sft"] = run_arm("tiny-cpu-sft", root / "sft", model, data, N, seed, k, {})
    shutil.copytree(root / "sft", root / "sft+")
    rows["sft+"] = run_arm("tiny-cpu-sft", root / "sft+", model, data, N + M, seed, k * (N + M) // N, {},
                           resume=True)
    for eps in args.eps:
        name = "sft>srl" if eps == args.eps[0] else f"sft>srl eps={eps:g}"
        srl = run_arm("tiny-cpu", root / name.replace(" ", "_"), root / "sft", data, M, seed, k,
                      {"grpo.dynamic_sampling_eps": eps})
        rows[name] = [dict(r, step=r["step"] + N) for r in srl]
    rows["srl"] = run_arm("tiny-cpu", root / "srl", model, data, M, seed, k,
                          {"grpo.dynamic_sampling_eps": args.eps[0]})
    return rows


def summarise(per_seed: list[dict[str, list[dict]]]) -> dict[str, dict[str, tuple[float, float]]]:
    out: dict[str, dict[str, tuple[float, float]]] = {}
    for arm in per_seed[0]:
        finals = [rows[arm][-1] for rows in per_seed]
        out[arm] = {m: (statistics.mean(f[m] for f in finals),
                        statistics.stdev(f[m] for f in finals) if len(finals) > 1 else 0.0) for m in METRICS}
        out[arm]["steps"] = (float(finals[0]["step"]), 0.0)
    return out


def plot(per_seed: list[dict[str, list[dict]]], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for arm in per_seed[0]:
        steps = [r["step"] for r in per_seed[0][arm]]
        means = [statistics.mean(rows[arm][i]["val/reward"] for rows in per_seed) for i in range(len(steps))]
        ax.plot(steps, means, marker="o", label=arm)
    ax.set_xlabel("optimizer steps (SFT + SRL)")
    ax.set_ylabel("held-out greedy SRL reward (mean over seeds)")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def collapse(run_dirs: list[Path]) -> None:
    """For each run folder (its last checkpoint): greedy answers on every val step target, how
    many are distinct and the most common one's share; and the held-out reward of the best
    single constant answer among the train split's actions (every 7th, at most 400 tried), the
    score a policy that ignores its context can reach."""
    from collections import Counter

    from swe_srl.config import RewardConfig
    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy
    from swe_srl.prompts import format_completion, messages_for_target

    data = run_dirs[0].resolve().parent.parent / "dataset"
    val = load_step_targets(data / "val.jsonl")
    reward = RewardConfig().step_reward()
    infos = [{"target": t.target} for t in val]

    def mean_reward(texts: list[str]) -> float:
        return sum(reward(texts, infos)) / len(val)

    candidates = list(dict.fromkeys(format_completion("",
                                                      t.target) for t in load_step_targets(data / "train.jsonl")[::7]))
    best = max((mean_reward([c] * len(val)), c) for c in candidates[:400])
    print(f"best constant answer: held-out reward {best[0]:.3f}: {best[1].split('</think>')[-1].strip()[:100]!r}")
    for run in run_dirs:
        model = sorted((run / "checkpoints").glob("step-*"))[-1] / "model"
        policy = load_policy(PolicyConfig(backend="hf", model=str(model), device="cpu"))
        texts = [group[0].text for group in policy.generate([messages_for_target(t) for t in val],
                                                             GenerationConfig(temperature=0.0, max_new_tokens=128))]
        answers = Counter(t.rsplit("</think>", 1)[-1].strip() for t in texts)
        top, count = answers.most_common(1)[0]
        print(f"{run}: held-out reward {mean_reward(texts):.3f}, {len(answers)} distinct answers of {len(val)}, "
              f"the most common {count / len(val):.0%}: {top[:100]!r}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--sft-steps", type=int, default=80)
    parser.add_argument("--srl-steps", type=int, default=20)
    parser.add_argument("--evals", type=int, default=4, help="validations per arm (plus step 0)")
    parser.add_argument("--eps", type=float, nargs="+", default=None,
                        help="grpo.dynamic_sampling_eps of arm (c); more values repeat arm (c)")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-learning-tiny")
    parser.add_argument("--ablate", type=Path, default=None, metavar="SEED_DIR",
                        help="only arm (c), once per --eps value and per --variant, from SEED_DIR/sft of an earlier "
                             "run of this script (its dataset and seed); writes "
                             "SEED_DIR/../learning-ablation-SEED.json")
    parser.add_argument("--collapse", type=Path, nargs="+", default=None, metavar="RUN_DIR",
                        help="only count the distinct greedy answers of these runs of this script (their last "
                             "checkpoint) and score the best constant answer")
    parser.add_argument("--variant", action="append", default=[], metavar="KEY=VALUE[,KEY=VALUE]",
                        help="with --ablate: dotted train-config overrides of one more arm (c), repeatable")
    args = parser.parse_args()

    if args.collapse:
        collapse(args.collapse)
        return
    if args.ablate is not None:
        args.eps = args.eps or []  # only the variants asked for
        ablate(args)
        return
    args.eps = args.eps or [0.02]
    if args.out.exists():
        shutil.rmtree(args.out)
    data = args.out / "dataset"
    build_dataset(default_trajectory_inputs(), data, DatasetConfig(), output="jsonl")
    val = load_step_targets(data / "val.jsonl")
    train_tasks = {t.task_id for t in load_step_targets(data / "train.jsonl")}
    assert not train_tasks & {t.task_id for t in val}, "held-out tasks leaked into training"
    started = time.perf_counter()
    per_seed = []
    for seed in args.seeds:  # the result file is rewritten after every seed: a cut run keeps what it did
        per_seed.append(one_seed(seed, args, data, args.out / f"seed-{seed}"))
        result = report(args, per_seed, val, data, started)
    for line in table(result["summary"]):
        print(line)


def parse_variant(text: str) -> dict:
    """``"optim.lr=1e-3,grpo.num_generations=8"`` -> {"optim.lr": 0.001, ...} (values as YAML)."""
    import yaml

    pairs = [part.split("=", 1) for part in text.split(",") if part.strip()]
    if not pairs or any(len(p) != 2 for p in pairs):
        raise SystemExit(f"error: --variant wants KEY=VALUE[,KEY=VALUE], not {text!r}")
    return {k.strip(): yaml.safe_load(v) for k, v in pairs}


def ablate(args: argparse.Namespace) -> None:
    """Arm (c) again with other settings (each ``--variant``, and each ``--eps`` value), from
    the SFT checkpoint of an earlier run of this script; prints and writes a row per variant."""
    seed_dir = args.ablate.resolve()
    seed = int(seed_dir.name.rsplit("-", 1)[-1])
    data = seed_dir.parent / "dataset"
    variants = {f"grpo.dynamic_sampling_eps={eps:g}": {"grpo.dynamic_sampling_eps": eps} for eps in args.eps}
    variants.update({v: parse_variant(v) for v in args.variant})
    result_path = seed_dir.parent / f"learning-ablation-{seed_dir.name}.json"
    rows = json.loads(result_path.read_text())["rows"] if result_path.is_file() else {}
    for name, extra in variants.items():
        out = seed_dir / ("ablate_" + "".join(c if c.isalnum() or c in ".-" else "_" for c in name))
        shutil.rmtree(out, ignore_errors=True)
        srl = run_arm("tiny-cpu", out, seed_dir / "sft", data, args.srl_steps, seed, args.evals, extra)
        steps = [r for r in read_jsonl(out / "metrics.jsonl") if "groups/kept" in r]
        rows[name] = dict(srl[-1], mean_groups_kept=statistics.mean(r["groups/kept"] for r in steps) if steps else 0.0,
                          train_reward_last=steps[-1]["reward/mean"] if steps else None)
        print(f"{name}: " + ", ".join(f"{m} {rows[name][m]:.3f}" for m in METRICS)
              + f", groups kept/step {rows[name]['mean_groups_kept']:.2f}", flush=True)
        result_path.write_text(json.dumps({"seed": seed, "srl_steps": args.srl_steps, "rows": rows}, indent=2))


def report(args: argparse.Namespace, per_seed: list, val: list, data: Path, started: float) -> dict:
    summary = summarise(per_seed)
    plot(per_seed, args.out / "learning.png")
    result = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, Python {platform.python_version()}",
              "val_targets": len(val), "val_tasks": len({t.task_id for t in val}),
              "train_targets": sum(1 for _ in open(data / "train.jsonl")), "seeds": args.seeds[:len(per_seed)],
              "sft_steps": args.sft_steps, "srl_steps": args.srl_steps, "eps": args.eps,
              "seeds_done": len(per_seed), "minutes": (time.perf_counter() - started) / 60,
              "summary": summary, "curves": per_seed}
    (args.out / "learning.json").write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "curves"}, indent=2), flush=True)
    return result


def table(summary: dict) -> list[str]:
    lines = ["| arm | steps | held-out reward | similarity | format errors | exact match |",
             "|---|---|---|---|---|---|"]
    for arm, m in summary.items():
        cells = " | ".join(f"{m[k][0]:.3f} +- {m[k][1]:.3f}" for k in METRICS)
        lines.append(f"| {arm} | {int(m['steps'][0])} | {cells} |")
    return lines


if __name__ == "__main__":
    main()
