"""Peak memory and time of one GRPO policy update (``swe_srl.rl.update.policy_update``) on the
same batch, with and without a token budget per micro-batch (``optim.max_tokens_per_microbatch``)
and chunked log-probs (``optim.logprob_chunk_tokens``).

The model is a randomly initialised Qwen2 (32k vocabulary, hidden 256, 4 layers, float32),
the batch one GRPO group: 8 completions of one 512-token prompt, 64 to 512 tokens long (the
longest sequence 1024 tokens), seq-mean-token-mean, beta 0. Each measurement is a fresh
process (peak memory is a process's high-water mark): build the model, AdamW with its state
already allocated, and the batch; read the peak; run the update twice; the first update's rise
of the peak is the figure ("update peak"), the second update's wall and CPU time the time. On CPU
the peak is ``getrusage`` max RSS, on a GPU ``torch.cuda.max_memory_allocated``. Settings
alternate run by run, so machine noise hits each; medians over ``--runs``.

    .venv/bin/python benchmarks/update_memory.py              # 5 runs per setting
    .venv/bin/python benchmarks/update_memory.py --runs 3 --budget 2048 --chunk 128
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

os.environ.setdefault("HF_HUB_OFFLINE", "1")

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

VOCAB, HIDDEN, LAYERS, PROMPT, GROUP = 32000, 256, 4, 512, 8


def measure(budget: int, chunk: int, device: str) -> dict:
    """One fresh-process measurement (run by the child)."""
    import resource
    from types import SimpleNamespace

    import torch
    from transformers import Qwen2Config, Qwen2ForCausalLM

    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.policy.base import Sample
    from swe_srl.rl.distributed import Dist
    from swe_srl.rl.optim import build_optimizer
    from swe_srl.rl.update import policy_update

    torch.manual_seed(0)
    dev = torch.device(device)
    model = Qwen2ForCausalLM(Qwen2Config(
        vocab_size=VOCAB, hidden_size=HIDDEN, intermediate_size=4 * HIDDEN, num_hidden_layers=LAYERS,
        num_attention_heads=4, num_key_value_heads=4, tie_word_embeddings=True)).to(dev)
    model.train()
    cfg = load_config(TrainConfig, None, {
        "optim.lr": 1e-5, "optim.max_grad_norm": 1.0, "optim.max_tokens_per_microbatch": budget,
        "optim.logprob_chunk_tokens": chunk, "generation.max_new_tokens": PROMPT, "generation.temperature": 1.0})
    optimizer = build_optimizer(model, cfg.optim)
    for p in model.parameters():  # allocate AdamW's state now: it is the same in every setting
        p.grad = torch.zeros_like(p)
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)
    g = torch.Generator().manual_seed(1)
    prompt = tuple(torch.randint(10, VOCAB, (PROMPT,), generator=g).tolist())
    lengths = [64 * (i + 1) for i in range(GROUP)]  # 64 .. 512 completion tokens
    samples = [Sample("", prompt, tuple(torch.randint(10, VOCAB, (n,), generator=g).tolist()), None, "stop")
               for n in lengths]
    advantages = torch.linspace(-1.0, 1.0, GROUP)
    valid = torch.ones(GROUP, dtype=torch.bool)
    session = SimpleNamespace(config=cfg, dist=Dist(device=dev), tokenizer=SimpleNamespace(pad_token_id=0),
                              model=model, optimizer=optimizer, step=0, bf16=False)

    def peak() -> float:
        if dev.type == "cuda":
            torch.cuda.synchronize()
            return torch.cuda.max_memory_allocated() / 2**20
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux

    before = peak()
    times = []
    for _ in range(2):
        started, cpu = time.perf_counter(), time.process_time()
        metrics = policy_update(session, samples, advantages, valid, None,
                                max_tokens=cfg.generation.max_new_tokens)
        if dev.type == "cuda":
            torch.cuda.synchronize()
        times.append((time.perf_counter() - started, time.process_time() - cpu))
        if len(times) == 1:
            after = peak()
    return {"before_mib": before, "peak_mib": after, "update_peak_mib": after - before, "seconds": times[1][0],
            "cpu_seconds": times[1][1], "loss": metrics["train/loss"], "grad_norm": metrics["train/grad_norm"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--budget", type=int, default=2048, help="optim.max_tokens_per_microbatch of 'after'")
    parser.add_argument("--chunk", type=int, default=128, help="optim.logprob_chunk_tokens of 'after'")
    parser.add_argument("--device", default="cuda" if _cuda() else "cpu")
    parser.add_argument("--child", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(*args.child, args.device)))
        return
    settings = {"before (no budget, no chunks)": (0, 0), f"budget {args.budget}": (args.budget, 0),
                f"chunks of {args.chunk}": (0, args.chunk), f"after (budget {args.budget} + chunks of {args.chunk})":
                (args.budget, args.chunk)}
    results: dict[str, list[dict]] = {name: [] for name in settings}
    for run in range(args.runs):
        for name, (budget, chunk) in settings.items():
            out = subprocess.run([sys.executable, __file__, "--device", args.device, "--child", str(budget),
                                  str(chunk)],
                                 capture_output=True, text=True, check=True, cwd=REPO)
            results[name].append(json.loads(out.stdout.strip().splitlines()[-1]))
            print(f"run {run + 1} {name}: {results[name][-1]}", file=sys.stderr)
    import torch

    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, {args.device}, torch {torch.__version__}, "
          f"load average {os.getloadavg()[0]:.1f}")
    first = results[next(iter(settings))]
    base, base_t, base_cpu = (statistics.median(r[k] for r in first) for k in ("update_peak_mib", "seconds",
            "cpu_seconds"))
    print("| setting | update peak (MiB) | process peak (MiB) | peak vs before | wall (s) | vs before | CPU (s) | vs "
          "before |")
    print("|---|---|---|---|---|---|---|---|")
    for name, rows in results.items():
        rise, total, seconds, cpu = (statistics.median(r[k] for r in rows)
                                     for k in ("update_peak_mib", "peak_mib", "seconds", "cpu_seconds"))
        print(f"| {name} | {rise:.0f} | {total:.0f} | {rise / base:.2f}x | {seconds:.2f} | {seconds / base_t:.2f}x | "
              f"{cpu:.2f} | {cpu / base_cpu:.2f}x |")
    grads = {name: rows[0]["grad_norm"] for name, rows in results.items()}
    print(f"grad norm per setting (same update): {grads}")


def _cuda() -> bool:
    try:
        import torch

        return torch.cuda.is_available()
    except ImportError:
        return False


if __name__ == "__main__":
    main()
