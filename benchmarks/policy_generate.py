"""Cost of HFPolicy.generate (exact ids + log-probs + stop handling) over a bare
``model.generate`` on the same batch: the baseline every hf-backend sample pays anyway.

    .venv/bin/python benchmarks/policy_generate.py [--runs 5] [--prompts 8] [--n 4] [--tokens 32]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")


def main() -> None:
    import torch

    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy
    from swe_srl.tiny_model import make_tiny_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--prompts", type=int, default=8)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--tokens", type=int, default=32)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        policy = load_policy(PolicyConfig(backend="hf", model=str(make_tiny_model(tmp)), device="cpu"))
        convs = [[{"role": "user", "content": f"Fix issue #{i} in src/pkg/parse.py"}] for i in range(args.prompts)]
        config = GenerationConfig(max_new_tokens=args.tokens, n=args.n, seed=0)
        tok = policy.tokenizer
        rows = [tok.apply_chat_template(c, add_generation_prompt=True, tokenize=False) for c in convs]
        tok.padding_side = "left"
        batch = tok([r for r in rows for _ in range(args.n)], return_tensors="pt", padding=True)

        def baseline() -> None:
            with torch.no_grad():
                policy.model.generate(**batch, max_new_tokens=args.tokens, do_sample=True, top_k=None)

        def ours() -> None:
            policy.generate(convs, config)

        results = {}
        for name, fn in (("model.generate (baseline)", baseline), ("HFPolicy.generate", ours)):
            fn()  # warm-up
            times = []
            for _ in range(args.runs):
                t0 = time.perf_counter()
                fn()
                times.append(time.perf_counter() - t0)
            results[name] = statistics.median(times)
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch {torch.__version__}")
    print(f"batch: {args.prompts} prompts x n={args.n}, {args.tokens} new tokens, median of {args.runs}")
    base = results["model.generate (baseline)"]
    for name, t in results.items():
        print(f"{name:28s} {t * 1000:8.1f} ms   x{t / base:.2f}")


if __name__ == "__main__":
    main()
