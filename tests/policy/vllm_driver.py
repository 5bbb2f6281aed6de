"""Drive swe-srl's in-process vLLM backend; run with the vLLM environment's python:

    PYTHONPATH=<repo> .venv-vllm/bin/python tests/policy/vllm_driver.py MODEL_DIR OUT.json

Writes what test_vllm.py asserts on: samples before and after pushing new weights into the
engine, and the log-probs transformers computes for the same tokens under the same weights.
"""

from __future__ import annotations

import json
import math
import sys
import time

CONVERSATIONS = [
    [{"role": "user", "content": "Fix the failing test in src/pkg/parse.py"}],
    [{"role": "user", "content": "run the tests"}],
]


def _hf_logprobs(model, sample, temperature):
    import torch

    ids = torch.tensor([list(sample.prompt_ids) + list(sample.completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logp[len(sample.prompt_ids) - 1 :].tolist()


def _max_diff(model, groups, temperature):
    return max(
        abs(a - b)
        for group in groups
        for s in group
        for a, b in zip(s.logprobs, _hf_logprobs(model, s, temperature))
    )


def _dump(groups):
    return [[{"text": s.text, "ids": list(s.completion_ids), "logprobs": list(s.logprobs),
              "prompt_ids": list(s.prompt_ids), "finish": s.finish_reason} for s in g] for g in groups]


def main(model_dir: str, out_path: str) -> None:
    import torch
    from transformers import AutoModelForCausalLM

    from swe_srl.errors import InputError
    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy

    t0 = time.perf_counter()
    policy = load_policy(
        PolicyConfig(backend="vllm", model=model_dir, dtype="float32", max_model_len=1024, seed=0,
                     gpu_memory_utilization=0.1, enforce_eager=True)
    )
    engine_start = time.perf_counter() - t0
    hf = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    greedy = GenerationConfig(max_new_tokens=12, temperature=0.0)
    sampled = GenerationConfig(max_new_tokens=12, temperature=0.8, n=3, seed=1)
    result: dict = {"vocab_size": hf.config.vocab_size, "seconds": {"engine_start": engine_start}}
    t0 = time.perf_counter()

    result["before_greedy"] = _dump(policy.generate(CONVERSATIONS, greedy))
    result["seconds"]["first_generate"] = time.perf_counter() - t0
    before = policy.generate(CONVERSATIONS, sampled)
    result["before_sampled"] = _dump(before)
    result["before_sampled_again"] = _dump(policy.generate(CONVERSATIONS, sampled))
    result["before_max_logprob_diff"] = _max_diff(hf, before, 0.8)

    # GRPO steps' worth of change: perturb every weight, push, compare with transformers;
    # twice, since a trainer pushes after every step.
    gen = torch.Generator().manual_seed(0)
    result["pushes"] = []
    for _ in range(2):
        with torch.no_grad():
            for p in hf.parameters():
                p.add_(torch.randn(p.shape, generator=gen) * 0.5 * p.std().clamp(min=1e-3))
        t0 = time.perf_counter()
        # In buckets of ~16 KB (a layer or two each): exact however the model is cut.
        stats = policy.update_weights(hf.named_parameters(), bucket_mb=16 / 1024)
        result["seconds"].setdefault("update_weights", []).append(time.perf_counter() - t0)
        perturbed = policy.generate(CONVERSATIONS, sampled)
        greedy_one = policy.generate(CONVERSATIONS[:1], greedy)[0][0]
        with torch.no_grad():
            hf_greedy = hf.generate(
                torch.tensor([greedy_one.prompt_ids]), max_new_tokens=12, do_sample=False, top_k=None
            )[0, len(greedy_one.prompt_ids):].tolist()
        result["pushes"].append({
            "sampled": _dump(perturbed),
            "max_logprob_diff": _max_diff(hf, perturbed, 0.8),
            "greedy_ids": list(greedy_one.completion_ids),
            "hf_greedy_ids": hf_greedy,
            "buckets": stats.buckets,
        })  # fmt: skip

    # A partial push: tensors not named keep the values of the last push.
    partial = ["model.norm.weight", "model.layers.1.mlp.down_proj.weight"]
    with torch.no_grad():
        params = dict(hf.named_parameters())
        for name in partial:
            params[name].mul_(1.5)
    policy.update_weights([(name, params[name]) for name in partial])
    result["partial_max_logprob_diff"] = _max_diff(hf, policy.generate(CONVERSATIONS, sampled), 0.8)

    # A partial push: zero only the output embedding (the input embedding too when tied), so
    # every logit is 0 and every token has log-prob -log(V).
    head = hf.get_output_embeddings().weight
    head_name = next(n for n, p in hf.named_parameters() if p is head)
    policy.update_weights([(head_name, torch.zeros_like(head))])
    result["zeroed_sampled"] = _dump(policy.generate(CONVERSATIONS, GenerationConfig(max_new_tokens=6, n=2, seed=2)))
    result["uniform_logprob"] = -math.log(hf.config.vocab_size)
    result["tied"] = bool(hf.config.tie_word_embeddings)

    # Pushes the engine cannot load exactly are refused before anything is loaded.
    result["refused"] = {}
    q = "model.layers.0.self_attn.q_proj.weight"
    for label, names in (("partial_qkv", [q]), ("unknown", ["model.no_such.weight"])):
        try:
            policy.update_weights([(n, torch.zeros(1)) for n in names])
            result["refused"][label] = None
        except InputError as exc:
            result["refused"][label] = str(exc)
    result["after_refused_sampled"] = _dump(policy.generate(CONVERSATIONS,
                                                            GenerationConfig(max_new_tokens=6, n=2, seed=2)))

    with open(out_path, "w", encoding="utf-8") as f:
        json.dump(result, f)


if __name__ == "__main__":  # vLLM spawns processes: the engine must start under this guard
    main(sys.argv[1], sys.argv[2])
