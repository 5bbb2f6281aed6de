"""The CPU recipe for the real model (issue 18): step time and peak memory of SFT and SRL steps of
SmolLM2-135M-Instruct under each memory/speed setting, so the presets ``smollm2-cpu-sft`` and
``smollm2-cpu`` are chosen by measurement.

Each variant is a real ``swe-srl train`` process (a few steps on the bundled step targets, no
validation); its resident memory is sampled every 0.1 s (psutil) and its per-step times read from
metrics.jsonl (the first step is left out: it warms the allocator). Variants run interleaved,
``--repeats`` rounds, and the table gives medians, with the ratio against the first variant of
each method (the project's settings before the presets existed: float32, no micro-batches).

    .venv/bin/python benchmarks/cpu_recipe.py                 # all variants, 3 rounds
    .venv/bin/python benchmarks/cpu_recipe.py --repeats 1 --only sft
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

import psutil

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from swe_srl.pretrained import convert_smollm2  # noqa: E402

PRESET_KEYS = ["optim.max_tokens_per_microbatch=1024", "optim.logprob_chunk_tokens=64", "run.precision=bf16"]
# (method, name, preset, overrides): the first of each method is its baseline.
VARIANTS = [
    ("sft", "fp32, whole batch (before)", "smollm2-cpu-sft",
     ["optim.max_tokens_per_microbatch=0", "optim.logprob_chunk_tokens=0", "run.precision=fp32"]),
    ("sft", "fp32 + activation checkpointing + chunked log-probs", "smollm2-cpu-sft",
     ["optim.max_tokens_per_microbatch=0", "run.precision=fp32", "run.activation_checkpointing=true"]),
    ("sft", "fp32 + 1024-token micro-batches", "smollm2-cpu-sft", ["run.precision=fp32"]),
    ("sft", "bf16 + 1024-token micro-batches (preset)", "smollm2-cpu-sft", []),
    ("sft", "preset, 1 thread", "smollm2-cpu-sft", ["run.threads=1"]),
    ("sft", "preset + LoRA r=16", "smollm2-cpu-sft", ["model.lora={r: 16, alpha: 32, dropout: 0.0}", "optim.lr=1e-3"]),
    ("srl", "fp32, whole batch (before)", "smollm2-cpu",
     ["optim.max_tokens_per_microbatch=0", "optim.logprob_chunk_tokens=0", "run.precision=fp32"]),
    ("srl", "bf16 + 1024-token micro-batches (preset)", "smollm2-cpu", []),
]


def run_variant(model: Path, data: Path, out: Path, preset: str, overrides: list[str], steps: int) -> dict:
    cmd = [str(REPO / ".venv" / "bin" / "swe-srl"), "train", "-c", preset, "--model", str(model), "-d", str(data),
           "-o", str(out), "--set", f"run.max_steps={steps}", "--set", "run.eval_every=0", "--set", "run.save_every=0",
           "--set", "run.progress=false", "--set", "run.tensorboard=false", "--set", "run.seed=0"]
    for item in overrides:
        cmd += ["--set", item]
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1")
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    handle, peak = psutil.Process(proc.pid), 0
    while proc.poll() is None:
        try:
            peak = max(peak, handle.memory_info().rss)
        except psutil.Error:
            pass
        time.sleep(0.1)
    if proc.returncode != 0:
        raise SystemExit(f"variant failed ({' '.join(cmd)}): {proc.stderr.read()[-2000:]}")
    rows = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    rows = [r for r in rows if "step_time" in r]
    return {"peak_rss_gb": peak / 1e9, "step_s": statistics.median(r["step_time"] for r in rows[1:]),
            "wall_s": time.perf_counter() - started,
            "tokens_per_step": statistics.mean(r.get("train/forward_tokens", 0) for r in rows)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3, help="optimizer steps per run (the first is not timed)")
    parser.add_argument("--only", choices=["sft", "srl"], default=None)
    parser.add_argument("--match", nargs="+", default=None, metavar="TEXT",
                        help="only the variants whose name contains one of these (e.g. 'fp32 + 1024' 'preset)')")
    parser.add_argument("--model", type=Path, default=REPO / "runs" / "smollm2-135m")
    parser.add_argument("--data", type=Path, default=REPO / "runs" / "bench-learning" / "dataset" / "train.jsonl")
    parser.add_argument("--out", type=Path, default=REPO / "runs" / "bench-cpu-recipe")
    args = parser.parse_args()
    model = convert_smollm2(args.model)
    if not args.data.is_file():
        raise SystemExit(f"error: {args.data} not found (run benchmarks/learning.py or swe-srl build-dataset first)")
    variants = [v for v in VARIANTS if args.only in (None, v[0])
                and (args.match is None or any(m in v[1] for m in args.match))]
    results: dict[str, list[dict]] = {f"{m}: {n}": [] for m, n, _, _ in variants}
    for round_ in range(args.repeats):
        for method, name, preset, overrides in variants:
            out = args.out / f"{method}-{len(results[f'{method}: {name}'])}-{abs(hash(name)) % 10**6}"
            if out.exists():
                import shutil

                shutil.rmtree(out)
            results[f"{method}: {name}"].append(run_variant(model, args.data, out, preset, overrides, args.steps))
            print(f"round {round_}: {method}: {name}: {results[f'{method}: {name}'][-1]}", flush=True)
    load = os.getloadavg()
    summary = {"machine": f"{platform.machine()}, {os.cpu_count()} cores, load {load[0]:.1f} at the end",
               "repeats": args.repeats, "steps": args.steps, "results": results}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "cpu_recipe.json").write_text(json.dumps(summary, indent=2))
    print(f"\n{summary['machine']}; medians of {args.repeats} runs, steps 2..{args.steps} of each\n")
    print("| method | settings | step time (s) | vs before | peak RSS (GB) | tokens/step |")
    print("|---|---|---|---|---|---|")
    base: dict[str, float] = {}
    for method, name, _, _ in variants:
        runs = results[f"{method}: {name}"]
        step = statistics.median(r["step_s"] for r in runs)
        base.setdefault(method, step)
        print(f"| {method} | {name} | {step:.1f} | {base[method] / step:.2f}x | "
              f"{statistics.median(r['peak_rss_gb'] for r in runs):.1f} | "
              f"{statistics.median(r['tokens_per_step'] for r in runs):,.0f} |")


if __name__ == "__main__":
    main()
