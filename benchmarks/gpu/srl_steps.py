"""GPU check: a few SRL steps of a Qwen2.5-Coder-shaped model, fsdp + vLLM rollouts, bf16 compute.

What it runs is the production loop (``swe_srl.rl.trainer.train``), on one process:
``run.parallel=fsdp`` (FSDP2 over one rank), float32 master weights with bf16 autocast,
activation checkpointing, ``rollout.engine=vllm`` colocated on the same GPU with a weight push
after every optimizer step. The model is randomly initialised from the published shape (built
offline: no hub), with the project's small offline tokenizer; its prompts are the step targets
of the bundled trajectories.

A random model never writes a well-formed action, so every SRL reward would be -1 and no group
would carry signal (no update to time). The reward is replaced by a stand-in that varies within
a group (the completion's length mod 7): rewarding costs microseconds either way, so the
sampling, update and push are exactly SRL's.

    python benchmarks/gpu/srl_steps.py --shape 1.5b --out OUT          # one H200: ~3-4 min
    python benchmarks/gpu/srl_steps.py --shape 1.5b --variants base lora bypass sleep --out OUT
    python benchmarks/gpu/srl_steps.py --shape tiny --engine hf         # CPU smoke run (CI)

Variants (``--variants``, each a run of its own on the same shape) check what only real weights
on a GPU show (issue 19):

- ``base``: the defaults: TIS against the engine's bf16 log-probs (``train/is_weight_max``,
  ``train/mismatch_kl``, ``train/is_clip_fraction`` say how far engine and trainer are apart),
  the bucketed bf16 push, fsdp loaded on the meta device (``load_rss_gib``: the trainer
  process's peak host memory when the run has set up);
- ``bypass``: ``grpo.rollout_correction=bypass`` (the engine's log-probs as the ratio's old
  ones, dual-clip only), to compare the ratio's tail with TIS's;
- ``lora``: LoRA adapters folded into the pushed weights, with the float32 engine this needs
  (a bf16 engine is refused: the deltas round away); ``logprob_gap`` shows the push reached it;
- ``sleep``: the engine sleeps during the update (``rollout.sleep_level`` 1) and the push goes
  in small buckets: ``gpu_used_gib`` vs ``base`` is what sleeping frees.

Writes OUT/result.json and OUT/result.md (a table row per shape): median over the timed steps
(step 1 is the warm-up and is left out) of step time, its rollout / update / push parts,
rollout tokens/s, update tokens/s, the trainer's peak GPU memory, and MFU of the update
(6 x linear-layer parameters x forwarded tokens / update time / the GPU's dense bf16 peak;
attention scores and the activation-checkpointing recompute are not counted).
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(REPO))

SHAPES = {"tiny": "", "0.5b": "Qwen/Qwen2.5-Coder-0.5B-Instruct", "1.5b": "Qwen/Qwen2.5-Coder-1.5B-Instruct",
          "7b": "Qwen/Qwen2.5-Coder-7B-Instruct"}
# Dense bf16 peak of each card (the vendor's figure without sparsity), TFLOP/s.
PEAK_TFLOPS = {"H200": 989.0, "H100": 989.0, "A100": 312.0, "L40S": 362.0, "A10G": 125.0}
SHAPE_FIELDS = ("hidden_size", "num_hidden_layers", "num_attention_heads", "num_key_value_heads",
                "intermediate_size", "vocab_size", "tie_word_embeddings")


def stand_in_reward(texts: list[str], infos: Any) -> list[float]:
    """Varies within a group for any model: every group has signal, so every step updates."""
    return [(len(t) % 7) / 7 for t in texts]


def build_model(shape: str, out: Path, device: str) -> Path:
    """The tiny offline model's tokenizer and chat template, with random weights of ``shape``."""
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM

    from swe_srl.model_shape import KNOWN_SHAPES
    from swe_srl.tiny_model import make_tiny_model

    make_tiny_model(out)
    if not shape:
        return out
    config = AutoConfig.from_pretrained(out)
    for key in SHAPE_FIELDS:
        setattr(config, key, KNOWN_SHAPES[shape][key])
    config.max_position_embeddings = 32768
    for stale in out.glob("model*.safetensors*"):
        stale.unlink()
    torch.manual_seed(0)
    with torch.device(device):
        model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.save_pretrained(out)
    del model
    return out


def settings(args: argparse.Namespace, gpu: bool) -> dict[str, Any]:
    """Dotted overrides of the ``paper`` preset for this check."""
    return {
        "method": "srl", "run.parallel": "fsdp", "run.activation_checkpointing": True,
        "run.precision": "bf16" if gpu else "fp32", "model.dtype": "float32",
        "run.cpu_offload": args.shape == "7b",  # 7B: AdamW states in host memory beside vLLM
        "rollout.engine": args.engine, "rollout.gpu_memory_utilization": args.vllm_memory,
        "rollout.max_model_len": args.max_prompt_tokens + args.max_new_tokens + 64,
        "rollout.enforce_eager": not gpu,
        "data.max_prompt_tokens": args.max_prompt_tokens, "data.val_limit": 0,
        "generation.max_new_tokens": args.max_new_tokens, "grpo.num_generations": args.group,
        "grpo.max_resample_rounds": 1, "optim.batch_size": args.batch, "optim.grad_accumulation": 1,
        "optim.max_tokens_per_microbatch": args.microbatch_tokens, "optim.lr": 1e-6,
        "run.max_steps": args.steps, "run.eval_every": 0, "run.save_every": 0, "run.progress": False,
        "run.tensorboard": False,
    }  # fmt: skip


# Extra overrides per variant (see the module docstring).
VARIANTS: dict[str, dict[str, Any]] = {
    "base": {},
    "bypass": {"grpo.rollout_correction": "bypass"},
    "lora": {"model.lora": {"r": 16, "alpha": 32, "dropout": 0.0,
                            "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]},
             "rollout.dtype": "float32", "optim.lr": 1e-4},
    "sleep": {"rollout.sleep_level": 1, "rollout.push_bucket_mb": 256},
}


def run_shape(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    import torch

    from swe_srl.config import RewardConfig, TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.dataset import DatasetConfig, build_dataset
    from swe_srl.model_shape import resolve_shape
    from swe_srl.paths import default_trajectory_inputs
    from swe_srl.rl.run_log import read_jsonl
    from swe_srl.rl.trainer import train

    gpu = torch.cuda.is_available()
    if args.shape != "tiny":  # the final checkpoint: float32 weights + two AdamW moments
        need = 12 * resolve_shape(SHAPES[args.shape]).param_count
        if shutil.disk_usage(work).free < need * 1.1:
            raise SystemExit(f"error: {args.shape} needs ~{need / 2**30:.0f} GiB free under {work.parent} "
                             "for its final checkpoint")
    started = time.perf_counter()
    model_dir = build_model(SHAPES[args.shape], work / "model", "cuda" if gpu else "cpu")
    build_dataset(default_trajectory_inputs(), work / "data", DatasetConfig(), output="jsonl")
    prepared = time.perf_counter() - started
    overrides = settings(args, gpu) | VARIANTS[args.variant] | {
        "model.path": str(model_dir), "data.train": str(work / "data"), "run.out_dir": str(work / "run")}
    config = load_config(TrainConfig, "paper", overrides)
    RewardConfig.step_reward = lambda self, syntax="xml": stand_in_reward  # see the module docstring
    if gpu:
        torch.cuda.reset_peak_memory_stats()
    started = time.perf_counter()
    train(config)
    trained = time.perf_counter() - started
    rows = [r for r in read_jsonl(work / "run" / "metrics.jsonl") if "step_time" in r]
    out = summarize(args, rows, prepared=prepared, trained=trained, gpu=gpu,
                    linear_params=resolve_shape(str(model_dir / "config.json")).matmul_params)
    # ru_maxrss: KiB on Linux; this process built the model folder too (a bf16 copy on the GPU
    # when there is one), so it bounds the run's load from above.
    out["load_rss_gib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20
    return out


def summarize(args: argparse.Namespace, rows: list[dict], *, prepared: float, trained: float, gpu: bool,
              linear_params: int) -> dict[str, Any]:
    import torch

    timed = rows[1:] or rows  # step 1 carries the engine's and the allocator's warm-up

    def med(key: str) -> float:
        return statistics.median(float(r.get(key, 0.0)) for r in timed)

    device = torch.cuda.get_device_name() if gpu else "cpu"
    peak = next((v for k, v in PEAK_TFLOPS.items() if k in device), None)
    update_s = med("time/update_s")
    flops = 6 * linear_params * med("train/forward_tokens")
    out = {
        "shape": args.shape, "variant": args.variant, "device": device, "engine": args.engine, "steps": len(rows),
        "timed_steps": len(timed),
        "group": args.group, "batch": args.batch, "max_new_tokens": args.max_new_tokens,
        "linear_params": linear_params, "prepare_s": round(prepared, 1), "train_s": round(trained, 1),
        "step_s": med("step_time"), "rollout_s": med("time/rollout_s"), "update_s": update_s,
        "push_s": med("rollout/push_seconds"),
        "rollout_tokens_per_s": med("completion_tokens") / max(med("time/rollout_s"), 1e-9),
        "update_tokens_per_s": med("train/forward_tokens") / max(update_s, 1e-9),
        "trainer_peak_gib": max((float(r.get("memory/peak_gib", 0.0)) for r in rows), default=0.0),
        "gpu_used_gib": (lambda free_total: (free_total[1] - free_total[0]) / 2**30)(torch.cuda.mem_get_info())
        if gpu else 0.0,
        "mfu_update": flops / update_s / (peak * 1e12) if peak and update_s > 0 else None,
        "logprob_gap": med("train/logprob_gap"), "weights_version": rows[-1].get("rollout/weights_version"),
        # The ratio's tail (issue 19): worst trainer/engine weight, truncated share, mismatch KL.
        "is_weight_max": max((float(r.get("train/is_weight_max", 1.0)) for r in rows), default=1.0),
        "is_clip_fraction": med("train/is_clip_fraction"), "mismatch_kl": med("train/mismatch_kl"),
    }  # fmt: skip
    return out


def markdown(results: list[dict]) -> str:
    head = ("| shape | variant | device | engine | step s | rollout s | update s | push s | rollout tok/s "
            "| update tok/s | trainer peak GiB | GPU used GiB | host peak GiB | IS weight max | mismatch KL "
            "| logprob gap | MFU (update) |\n|" + "---|" * 17)
    rows = [f"| {r['shape']} | {r['variant']} | {r['device']} | {r['engine']} | {r['step_s']:.2f} | "
            f"{r['rollout_s']:.2f} | {r['update_s']:.2f} | {r['push_s']:.2f} | {r['rollout_tokens_per_s']:.0f} | "
            f"{r['update_tokens_per_s']:.0f} | {r['trainer_peak_gib']:.1f} | {r['gpu_used_gib']:.1f} | "
            f"{r['load_rss_gib']:.1f} | {r['is_weight_max']:.2f} | {r['mismatch_kl']:.2e} | "
            f"{r['logprob_gap']:.2e} | "
            + (f"{100 * r['mfu_update']:.1f}% |" if r["mfu_update"] is not None else "- |") for r in results]
    return "\n".join([head, *rows]) + "\n"


def _in_subprocess(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """``run_shape`` in a child process (spawned: vLLM and CUDA do not survive a fork), so that
    one variant's engine, GPU memory and peak RSS are not the next one's. Not a Pool worker:
    those are daemonic, and a daemonic process may not start the engine's own processes."""
    import multiprocessing

    out = work / f"variant-{args.shape}-{args.variant}.json"
    out.unlink(missing_ok=True)
    child = multiprocessing.get_context("spawn").Process(target=_run_to_file, args=(args, work, out), daemon=False)
    child.start()
    child.join()
    if child.exitcode != 0 or not out.is_file():
        raise RuntimeError(f"the {args.shape}/{args.variant} run failed in its process (exit code {child.exitcode})")
    return json.loads(out.read_text())


def _run_to_file(args: argparse.Namespace, work: Path, out: Path) -> None:
    out.write_text(json.dumps(run_shape(args, work)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--shape", choices=list(SHAPES), nargs="+", default=None,
                        help="default: 1.5b on a GPU, tiny on CPU")
    parser.add_argument("--engine", choices=("vllm", "hf"), default="vllm")
    parser.add_argument("--variants", choices=list(VARIANTS), nargs="+", default=["base"],
                        help="runs per shape (see above); sleep needs a GPU")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=16, help="step targets per update (groups)")
    parser.add_argument("--group", type=int, default=8, help="G, completions per step target")
    parser.add_argument("--max-new-tokens", type=int, default=256)
    parser.add_argument("--max-prompt-tokens", type=int, default=3072)
    parser.add_argument("--microbatch-tokens", type=int, default=32768)
    parser.add_argument("--vllm-memory", type=float, default=0.3, help="rollout.gpu_memory_utilization")
    parser.add_argument("--out", type=Path, default=None, help="writes result.json and result.md here")
    args = parser.parse_args(argv)

    import torch

    if args.engine == "vllm":
        try:
            import vllm  # noqa: F401
        except ImportError:
            print("error: --engine vllm needs the vllm package (or run with --engine hf)", file=sys.stderr)
            return 2
    shapes = args.shape or (["1.5b"] if torch.cuda.is_available() else ["tiny"])
    results = []
    for shape in shapes:
        for variant in args.variants:
            work = Path(tempfile.mkdtemp(prefix=f"srl-gpu-{shape}-{variant}-"))
            try:
                # Each variant in a process of its own: a fresh engine, fresh peak counters.
                result = _in_subprocess(argparse.Namespace(**{**vars(args), "shape": shape, "variant": variant}),
                                        work)
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(json.dumps(result), flush=True)
            results.append(result)
    table = markdown(results)
    print(table)
    if args.out:
        args.out.mkdir(parents=True, exist_ok=True)
        (args.out / "result.json").write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
        (args.out / "result.md").write_text(table, encoding="utf-8")
    return 0


if __name__ == "__main__":  # vLLM spawns processes: the engine must start under this guard
    sys.exit(main())
