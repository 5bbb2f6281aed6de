"""Rollout throughput: completion tokens/s of the in-process vLLM engine (``rollout.engine=vllm``)
vs the trained transformers model sampling itself (``rollout.engine=hf``: ``HFPolicy.generate``).

Same model (a random-init Qwen2-shaped model, built offline on the tiny model's tokenizer; big
enough that generation, not Python overhead, dominates), same prompts (SRL step targets from the
bundled samples, system prompt included), same sampling (temperature 1.0, top-p 1, G samples per
prompt, the same token budget), float32 on both sides. Runs alternate hf / vllm so both see the
same machine load; median over the runs. Also printed: the engine's start time and one weight
push of the whole model (what the trainer pays per optimizer step).

Run in the vLLM environment (tests/vllm_env.sh), which has transformers too:

    PYTHONPATH=. .venv-vllm/bin/python benchmarks/rollout.py                 # 8 prompts x G=8, 128 tokens
    PYTHONPATH=. .venv-vllm/bin/python benchmarks/rollout.py --short-prompts       # decoding only
    PYTHONPATH=. .venv-vllm/bin/python benchmarks/rollout.py --hidden 1024 --layers 6 --runs 5
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


def make_model(out: Path, hidden: int, layers: int, seed: int = 0) -> Path:
    """The tiny model's tokenizer and chat template with a bigger random-init Qwen2 body
    (head_dim 64, 4 key/value heads like Qwen2.5's GQA, MLP 8/3 x hidden)."""
    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from swe_srl.tiny_model import make_tiny_model

    make_tiny_model(out, seed=seed)
    small = Qwen2Config.from_pretrained(out)
    heads = hidden // 64
    config = Qwen2Config(
        vocab_size=small.vocab_size, hidden_size=hidden, intermediate_size=(8 * hidden // 3 + 127) // 128 * 128,
        num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=min(4, heads),
        max_position_embeddings=small.max_position_embeddings, tie_word_embeddings=True,
        bos_token_id=small.bos_token_id, eos_token_id=small.eos_token_id, pad_token_id=small.pad_token_id)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.save_pretrained(out)  # over the tiny weights; tokenizer and generation_config stay
    return out


def timed(fn) -> tuple[float, int]:
    """(seconds, completion tokens) of one ``generate`` call."""
    t0 = time.perf_counter()
    groups = fn()
    return time.perf_counter() - t0, sum(len(s.completion_ids) for g in groups for s in g)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--prompts", type=int, default=8)
    parser.add_argument("--generations", type=int, default=8, help="G: samples per prompt")
    parser.add_argument("--tokens", type=int, default=128, help="max_new_tokens")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--hidden", type=int, default=768)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--eager", action="store_true", help="vLLM enforce_eager (no torch.compile)")
    parser.add_argument("--short-prompts", action="store_true",
                        help="one-line user prompts (~20 tokens) instead of SRL step targets: decoding only")
    args = parser.parse_args()

    import torch
    import transformers
    import vllm
    from grpo_step import step_targets

    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy
    from swe_srl.prompts import messages_for_target

    model_dir = make_model(Path(tempfile.mkdtemp(prefix="rollout-bench-")) / "model", args.hidden, args.layers)
    if args.short_prompts:
        conversations = [[{"role": "user", "content": f"Fix the failing test in src/pkg/mod{i}.py"}]
                         for i in range(args.prompts)]
    else:
        conversations = [messages_for_target(t) for t in step_targets(args.prompts)]
    gen = GenerationConfig(max_new_tokens=args.tokens, temperature=1.0, top_p=1.0, n=args.generations)

    t0 = time.perf_counter()
    engine = load_policy(PolicyConfig(backend="vllm", model=str(model_dir), dtype="float32", seed=0,
                                      gpu_memory_utilization=0.1, max_model_len=4096, enforce_eager=args.eager))
    engine_start = time.perf_counter() - t0
    hf = load_policy(PolicyConfig(backend="hf", model=str(model_dir), dtype="float32", device="cpu",
                                  max_batch_size=args.prompts * args.generations))
    params = sum(p.numel() for p in hf.model.parameters())
    prompt_tokens = [len(s.prompt_ids) for g in hf.generate(conversations, GenerationConfig(max_new_tokens=1))
                     for s in g]

    t0 = time.perf_counter()
    engine.update_weights(hf.model.named_parameters())
    push = time.perf_counter() - t0

    warm = GenerationConfig(max_new_tokens=8, n=2)
    hf.generate(conversations[:2], warm)
    engine.generate(conversations[:2], warm)
    results: dict[str, list[tuple[float, int]]] = {"hf": [], "vllm": []}
    for run in range(args.runs):
        results["hf"].append(timed(lambda: hf.generate(conversations, gen)))
        results["vllm"].append(timed(lambda: engine.generate(conversations, gen)))
        print(f"run {run + 1}: " + ", ".join(f"{k} {v[-1][0]:.2f} s / {v[-1][1]} tokens" for k, v in results.items()),
              flush=True)
    engine.close()

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}; torch "
          f"{torch.__version__} ({torch.get_num_threads()} threads), transformers {transformers.__version__}, "
          f"vllm {vllm.__version__}")
    print(f"model: Qwen2 random init, {params / 1e6:.1f}M params (hidden {args.hidden}, {args.layers} layers, "
          f"vocab {hf.model.config.vocab_size}), float32")
    print(f"batch: {args.prompts} prompts ({min(prompt_tokens)}-{max(prompt_tokens)} prompt tokens) x G="
          f"{args.generations}, max_new_tokens {args.tokens}, median of {args.runs}")
    print(f"vLLM engine start {engine_start:.1f} s (enforce_eager={args.eager}), one push of all weights {push:.2f} s")
    rate = {}
    for name, rows in results.items():
        seconds = statistics.median(s for s, _ in rows)
        rate[name] = statistics.median(n / s for s, n in rows)
        print(f"{name:5s} median {seconds:7.2f} s   {rate[name]:8.1f} tokens/s   "
              f"(tokens per run {min(n for _, n in rows)}-{max(n for _, n in rows)})")
    print(f"vllm / hf tokens/s: {rate['vllm'] / rate['hf']:.2f}x")


if __name__ == "__main__":  # vLLM spawns processes: the engine must start under this guard
    main()
