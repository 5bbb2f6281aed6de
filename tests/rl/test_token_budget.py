"""Memory knobs that must not change what is learnt: micro-batches packed by a token budget
(``optim.max_tokens_per_microbatch``), log-probs projected to the vocabulary in chunks
(``optim.logprob_chunk_tokens``), and prompts over ``data.max_prompt_tokens`` shortened or
skipped (and counted)."""

from __future__ import annotations

from dataclasses import replace
from types import SimpleNamespace

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.config import TrainConfig
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.errors import ConfigError  # noqa: E402
from swe_srl.policy.base import Sample  # noqa: E402
from swe_srl.rl.distributed import Dist  # noqa: E402
from swe_srl.rl.engine import RolloutEngine  # noqa: E402
from swe_srl.rl.logprobs import TokenBatch, completion_logprobs, micro_batches  # noqa: E402
from swe_srl.rl.prompt_budget import PromptBudget, fit_prompt, prompt_tokens  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.sft import sft_step  # noqa: E402
from swe_srl.rl.update import policy_update  # noqa: E402
from swe_srl.schemas import ContextRound  # noqa: E402
from tests.rl.test_trainer import _scripted, run, synthetic_targets, write_dataset  # noqa: E402

VOCAB = 97


def tiny_qwen(seed: int = 0):
    from transformers import Qwen2Config, Qwen2ForCausalLM

    torch.manual_seed(seed)
    return Qwen2ForCausalLM(Qwen2Config(vocab_size=VOCAB, hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                                        num_attention_heads=2, num_key_value_heads=2, tie_word_embeddings=True))


def random_ids(lengths, seed: int) -> list[tuple[int, ...]]:
    g = torch.Generator().manual_seed(seed)
    return [tuple(torch.randint(1, VOCAB, (n,), generator=g).tolist()) for n in lengths]


PROMPTS = random_ids([5, 12, 3, 9, 7, 20], seed=1)
COMPLETIONS = random_ids([7, 2, 11, 0, 5, 9], seed=2)


# --------------------------------------------------------------------------- micro-batches


def test_micro_batches_pack_by_padded_tokens_and_cover_every_sequence_once():
    shapes = [(len(p), len(c)) for p, c in zip(PROMPTS, COMPLETIONS)]
    for budget in (1, 16, 30, 40, 64, 1000):
        parts = micro_batches(shapes, parts=1, max_tokens=budget)
        assert sorted(i for part in parts for i in part) == list(range(len(shapes)))
        for part in parts:
            batch = TokenBatch.build([PROMPTS[i] for i in part], [COMPLETIONS[i] for i in part], 0, torch.device("cpu"))
            # what the pass really holds is within the budget, unless it is one sequence too long alone
            assert batch.input_ids.numel() <= budget or len(part) == 1
    assert micro_batches(shapes, parts=1, max_tokens=1) == [[5], [1], [2], [0], [4], [3]]  # longest first
    assert micro_batches(shapes, parts=1, max_tokens=1000) == [[5, 1, 2, 0, 4, 3]]
    # no budget: today's split into nearly equal consecutive chunks
    assert micro_batches(shapes, parts=4, max_tokens=0) == [[0, 1], [2, 3], [4, 5]]


# --------------------------------------------------------------------------- chunked log-probs


def _logprobs_and_grads(model, batch, temperature, chunk_tokens):
    model.zero_grad(set_to_none=True)
    logprobs = completion_logprobs(model, batch, temperature, chunk_tokens)
    weights = torch.linspace(-1.0, 2.0, logprobs.numel()).view_as(logprobs)  # every position its own weight
    (logprobs * weights).sum().backward()
    return logprobs.detach(), {n: p.grad.clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_chunked_logprobs_and_gradients_equal_the_whole_projection(temperature):
    model = tiny_qwen()
    batch = TokenBatch.build(PROMPTS, COMPLETIONS, 0, torch.device("cpu"))
    whole, whole_grads = _logprobs_and_grads(model, batch, temperature, 0)
    for chunk in (1, 3, 4, 10):
        chunked, grads = _logprobs_and_grads(model, batch, temperature, chunk)
        assert torch.allclose(chunked, whole, atol=1e-5), chunk
        assert torch.all(chunked[batch.completion_mask == 0] == 0)
        for name, grad in whole_grads.items():
            assert torch.allclose(grads[name], grad, rtol=1e-4, atol=1e-6), (chunk, name)
    with torch.no_grad():  # the KL reference's path: no graph, same values
        assert torch.allclose(completion_logprobs(model, batch, temperature, 4), whole, atol=1e-5)


def test_chunked_logprobs_refuse_a_model_whose_logits_are_not_the_plain_head():
    model = tiny_qwen()
    model.config.final_logit_softcapping = 30.0
    batch = TokenBatch.build(PROMPTS[:2], COMPLETIONS[:2], 0, torch.device("cpu"))
    with pytest.raises(ConfigError, match="final_logit_softcapping; set optim.logprob_chunk_tokens=0"):
        completion_logprobs(model, batch, 1.0, 4)


# --------------------------------------------------------------------------- the update is split-invariant


def _session(model, overrides, items=(), tokenizer=None):
    cfg = load_config(TrainConfig, None, {"optim.lr": 1.0, "optim.max_grad_norm": 0.0,
                                          "generation.max_new_tokens": 16, **overrides})
    # Plain SGD with lr 1 and no clipping: the change of each weight is its gradient.
    return SimpleNamespace(config=cfg, dist=Dist(), tokenizer=tokenizer or SimpleNamespace(pad_token_id=0), model=model,
                           optimizer=torch.optim.SGD(model.parameters(), lr=1.0), step=0, bf16=False, items=list(items),
                           engine=RolloutEngine("hf", None))


def _step_delta(make_step, overrides, make_model=tiny_qwen) -> dict:
    model = make_model()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    metrics = make_step(model, overrides)
    return {n: p.detach() - before[n] for n, p in model.named_parameters()}, metrics


def _assert_same_gradient(a: dict, b: dict) -> None:
    """Equal up to float summation order: within 1e-4 of each tensor's largest entry."""
    for name in a:
        scale = float(a[name].abs().max())
        assert float((a[name] - b[name]).abs().max()) <= 1e-4 * scale + 1e-9, name
    assert any(float(d.abs().max()) > 0 for d in a.values())


@pytest.mark.parametrize("aggregation", ["seq-mean-token-mean", "token-mean", "seq-mean-token-sum-norm"])
def test_grpo_update_with_a_tiny_token_budget_and_chunks_is_the_one_without(aggregation):
    samples = [Sample("", p, c, None, "stop") for p, c in zip(PROMPTS, COMPLETIONS)]
    advantages = torch.tensor([1.0, -0.5, 0.25, 2.0, -1.0, 0.5])
    valid = torch.tensor([True, True, True, True, False, True])  # a left-out sample stays left out
    ref_model = tiny_qwen(seed=1)

    def step(model, overrides):
        session = _session(model, {"grpo.loss_aggregation": aggregation, "grpo.beta": 0.1,
                                   "generation.temperature": 0.8, **overrides})
        return policy_update(session, samples, advantages, valid, ref_model,
                             max_tokens=session.config.generation.max_new_tokens)

    whole, metrics = _step_delta(step, {})
    for overrides in ({"optim.max_tokens_per_microbatch": 1}, {"optim.max_tokens_per_microbatch": 40},
                      {"optim.max_tokens_per_microbatch": 40, "optim.logprob_chunk_tokens": 3}):
        split, split_metrics = _step_delta(step, overrides)
        _assert_same_gradient(whole, split)
        for key in ("train/loss", "train/grad_norm", "train/kl", "train/sequences"):
            assert split_metrics[key] == pytest.approx(metrics[key], rel=1e-4, abs=1e-7), key


def test_sft_step_with_a_tiny_token_budget_and_chunks_is_the_one_without(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    targets = synthetic_targets(5)

    def model():
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_pretrained(tiny_model_dir)

    def step(model, overrides):
        session = _session(model, {"sft.max_length": 4096, **overrides}, items=targets, tokenizer=tokenizer)
        return sft_step(session, list(range(len(targets))))

    whole, metrics = _step_delta(step, {}, model)
    for overrides in ({"optim.max_tokens_per_microbatch": 1}, {"optim.max_tokens_per_microbatch": 600,
                                                              "optim.logprob_chunk_tokens": 4}):
        split, split_metrics = _step_delta(step, overrides, model)
        _assert_same_gradient(whole, split)
        assert split_metrics["train/loss"] == pytest.approx(metrics["train/loss"], rel=1e-5)
        assert split_metrics["train/tokens"] == metrics["train/tokens"]


# --------------------------------------------------------------------------- data.max_prompt_tokens


def _long_target(tokenizer):
    """A step target with three context rounds and a long issue."""
    target = synthetic_targets(1)[0]
    rounds = tuple(ContextRound(action=target.target,
                                observation=f"round {i} " + "output line\n" * 20) for i in range(3))
    return replace(target, context=rounds, problem_statement=target.problem_statement + " details" * 80)


def test_a_long_prompt_loses_its_oldest_rounds_first_then_the_middle_of_its_issue(tiny_model_dir):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    target = _long_target(tokenizer)
    full = prompt_tokens(tokenizer, target)
    assert fit_prompt(tokenizer, target, full) is target
    one_round = prompt_tokens(tokenizer, replace(target, context=target.context[2:]))
    fitted = fit_prompt(tokenizer, target, one_round)
    assert fitted.context == target.context[2:] and fitted.problem_statement == target.problem_statement
    no_rounds = prompt_tokens(tokenizer, replace(target, context=()))
    cut = fit_prompt(tokenizer, target, no_rounds - 40)
    assert cut.context == () and prompt_tokens(tokenizer, cut) <= no_rounds - 40
    issue = cut.problem_statement
    assert "characters omitted ...]" in issue  # the cut is marked
    assert issue.startswith(target.problem_statement[:20]) and issue.endswith(target.problem_statement[-10:])
    assert fit_prompt(tokenizer, target, 5) is None  # not even the system prompt fits
    system_only = prompt_tokens(tokenizer, replace(target, context=(), problem_statement=""))
    assert fit_prompt(tokenizer, target, system_only + 2) is None  # no room for any of the issue

    budget = PromptBudget(tokenizer, load_config(TrainConfig, None, {"data.max_prompt_tokens": one_round}).data)
    assert budget.fit(target) == fitted and budget.fit(fitted) is fitted
    dropping = PromptBudget(tokenizer, load_config(TrainConfig, None, {"data.max_prompt_tokens": one_round,
                                                                       "data.long_prompts": "drop"}).data)
    assert dropping.fit(target) is None and dropping.fit(fitted) is fitted
    assert budget.metrics(Dist()) == {"data/truncated_prompts": 1, "data/dropped_prompts": 0}
    assert dropping.metrics(Dist()) == {"data/truncated_prompts": 0, "data/dropped_prompts": 1}
    assert budget.metrics(Dist()) == {"data/truncated_prompts": 0, "data/dropped_prompts": 0}  # reset per step


def _limit_between_plain_and_context_prompts(tokenizer) -> int:
    """A limit that every synthetic target fits without its context round and none with one does."""
    targets = synthetic_targets(24)
    plain = max(prompt_tokens(tokenizer, replace(t, context=())) for t in targets)
    with_round = min(prompt_tokens(tokenizer, t) for t in targets if t.context)
    assert plain < with_round
    return plain


@pytest.mark.parametrize("long_prompts", ["drop", "truncate"])
def test_srl_and_sft_runs_count_truncated_and_dropped_prompts(long_prompts, tiny_model_dir, tmp_path):
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    data = write_dataset(tmp_path / "data")
    limit = _limit_between_plain_and_context_prompts(tokenizer)
    extra = {"run.max_steps": 1, "run.eval_every": 0, "data.shuffle": False, "data.max_prompt_tokens": limit,
             "data.long_prompts": long_prompts}
    # unshuffled: the first draw is targets 0-3, the odd ones with a context round (too long)
    run(data, tiny_model_dir, tmp_path / "srl", "srl", sampler=_scripted(tokenizer), **extra)
    row = next(r for r in read_jsonl(tmp_path / "srl" / "metrics.jsonl") if "reward/mean" in r)
    counted = row["data/dropped_prompts"] if long_prompts == "drop" else row["data/truncated_prompts"]
    assert counted >= 2 and row["data/truncated_prompts" if long_prompts == "drop" else "data/dropped_prompts"] == 0
    rollout = read_jsonl(tmp_path / "srl" / "rollouts.jsonl")[0]
    assert len(rollout["rewards"]) == len(rollout["ids"])  # the draw log stays aligned
    if long_prompts == "drop":  # a skipped target logs an empty group
        assert rollout["rewards"][1] == [] and rollout["rewards"][3] == [] and len(rollout["rewards"][0]) == 3
    run(data, tiny_model_dir, tmp_path / "sft", "sft", **extra)
    row = next(r for r in read_jsonl(tmp_path / "sft" / "metrics.jsonl") if "train/loss" in r)
    counted = row["data/dropped_prompts"] if long_prompts == "drop" else row["data/truncated_prompts"]
    assert counted == 2  # targets 1 and 3 of the batch of 4
