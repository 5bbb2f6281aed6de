"""Drive bucketed weight pushes into a bf16 vLLM engine; run with the vLLM environment's python:

    PYTHONPATH=<repo> .venv-vllm/bin/python tests/policy/vllm_push_driver.py MODEL_DIR OUT.json

Writes what test_push_vllm.py asserts on: the engine's samples after a push cut into many small
bf16 buckets, and after the same weights pushed the old way (the whole model in one fp32 call,
the engine casting), plus the transformers bf16 log-probs and what bad pushes leave behind.
"""

from __future__ import annotations

import functools
import json
import sys
from pathlib import Path

CONVERSATIONS = [
    [{"role": "user", "content": "Fix the failing test in src/pkg/parse.py"}],
    [{"role": "user", "content": "run the tests"}],
]


def _dump(groups):
    return [[{"ids": list(s.completion_ids), "logprobs": list(s.logprobs)} for s in g] for g in groups]


def _hf_gap(model, groups, temperature):
    """Mean |engine - transformers| log-prob per token."""
    import torch

    gaps = []
    for group in groups:
        for s in group:
            ids = torch.tensor([list(s.prompt_ids) + list(s.completion_ids)])
            with torch.no_grad():
                logits = model(ids).logits[0, :-1].float() / temperature
            logp = torch.log_softmax(logits, -1).gather(-1, ids[0, 1:, None]).squeeze(-1)[len(s.prompt_ids) - 1:]
            gaps += [abs(a - b) for a, b in zip(s.logprobs, logp.tolist())]
    return sum(gaps) / len(gaps)


def old_push(policy, named_tensors) -> None:
    """The push before issue 19: every tensor copied to the CPU in float32 into one list, sent in
    one RPC; the engine's weight loaders cast to its dtype."""
    from swe_srl.policy.weight_push import check_push, finish_push_in_worker, reload_in_worker

    weights = [(name, t.detach().to("cpu").contiguous()) for name, t in named_tensors]
    check_push([n for n, _ in weights], policy.layout())
    policy.llm.collective_rpc(functools.partial(reload_in_worker, weights))
    policy.llm.collective_rpc(finish_push_in_worker)
    policy.llm.reset_prefix_cache()


def main(model_dir: str, out_path: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from swe_srl.errors import InputError
    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy

    policy = load_policy(PolicyConfig(backend="vllm", model=model_dir, dtype="bfloat16", max_model_len=1024, seed=0,
                                      gpu_memory_utilization=0.1, enforce_eager=True))
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    sampled = GenerationConfig(max_new_tokens=12, temperature=0.8, n=3, seed=1)
    result: dict = {"layout_dtype": policy.layout().dtype}

    def perturb(seed):
        gen = torch.Generator().manual_seed(seed)
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5 * p.std().clamp(min=1e-3))

    # Trained weights (fp32 master copy), pushed in buckets of ~16 KB: one layer or two each.
    perturb(0)
    trained = {n: p.detach().clone() for n, p in hf.named_parameters()}
    stats = policy.update_weights(hf.named_parameters(), version=1, bucket_mb=16 / 1024)
    result["bucketed"] = {"stats": stats.__dict__, "version": policy.weights_version,
                          "sampled": _dump(policy.generate(CONVERSATIONS, sampled))}
    result["tensors"] = len(trained)
    result["model_bf16_bytes"] = sum(t.numel() * 2 for t in trained.values())

    # Move the engine elsewhere, then push the same trained weights the old way.
    perturb(1)
    policy.update_weights(hf.named_parameters(), version=2)
    result["moved_sampled"] = _dump(policy.generate(CONVERSATIONS, sampled))
    with torch.no_grad():
        for n, p in hf.named_parameters():
            p.copy_(trained[n])
    old_push(policy, hf.named_parameters())
    result["old_push_sampled"] = _dump(policy.generate(CONVERSATIONS, sampled))
    # The same bucketed push pickled through the RPC (no shared memory) loads the same.
    perturb(2)
    policy.update_weights(hf.named_parameters(), version=3)
    with torch.no_grad():
        for n, p in hf.named_parameters():
            p.copy_(trained[n])
    pickled = policy.update_weights(hf.named_parameters(), version=4, bucket_mb=16 / 1024, shared_memory=False)
    result["pickled"] = {"stats": pickled.__dict__, "sampled": _dump(policy.generate(CONVERSATIONS, sampled))}
    result["shm_leftovers"] = sorted(p.name for p in Path("/dev/shm").glob("swe-srl-push-*"))

    # The trainer in bf16 computes about what the engine does.
    result["hf_bf16_gap"] = _hf_gap(hf.to(torch.bfloat16), policy.generate(CONVERSATIONS, sampled), 0.8)

    hf.to(torch.float32)

    # A bad name with the names given first: refused before any bucket; the engine is unchanged.
    bad = [*hf.named_parameters(), ("model.no_such.weight", torch.zeros(3))]
    try:
        policy.update_weights(iter([(n, torch.zeros_like(t)) for n, t in bad]), names=[n for n, _ in bad],
                              bucket_mb=16 / 1024)
        result["refused_up_front"] = None
    except InputError as exc:
        result["refused_up_front"] = str(exc)
    result["after_refused_sampled"] = _dump(policy.generate(CONVERSATIONS, sampled))
    result["after_refused_version"] = policy.weights_version
    # The same from a stream with no names: buckets before it loaded, the engine marked mixed.
    try:
        policy.update_weights(iter([(n, torch.zeros_like(t)) for n, t in bad]), bucket_mb=16 / 1024)
        result["refused_mid_way"] = None
    except InputError as exc:
        result["refused_mid_way"] = str(exc)
    result["mixed_version"] = policy.weights_version
    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)
    policy.close()


if __name__ == "__main__":  # vLLM spawns processes: the engine must start under this guard
    main(sys.argv[1], sys.argv[2])
