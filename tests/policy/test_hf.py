"""The transformers backend: exact sampled ids, their log-probs, stops, seeds, LoRA."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.errors import ConfigError, InputError  # noqa: E402
from swe_srl.policy import GenerationConfig, Policy, PolicyConfig, load_policy  # noqa: E402
from swe_srl.policy.hf import HFPolicy  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "Fix the failing test in src/pkg/parse.py"}],
    [
        {"role": "system", "content": "You are a careful software engineer."},
        {"role": "user", "content": "hi"},
    ],
]


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir  # the session's shared tiny model (tests/conftest.py)


@pytest.fixture(scope="module")
def policy(tiny_dir):
    return load_policy(PolicyConfig(backend="hf", model=str(tiny_dir), device="cpu"))


def _recomputed_logprobs(policy, sample, temperature):
    ids = torch.tensor([list(sample.prompt_ids) + list(sample.completion_ids)])
    with torch.no_grad():
        logits = policy.model(ids).logits[0, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logp[len(sample.prompt_ids) - 1 :]


def test_is_a_policy_with_model_and_tokenizer(policy):
    assert isinstance(policy, Policy)
    assert isinstance(policy, HFPolicy)
    assert policy.model is not None and policy.tokenizer is not None


@pytest.mark.parametrize("temperature", [1.0, 0.7])
def test_n_samples_with_logprobs_of_a_forward_pass(policy, temperature):
    config = GenerationConfig(max_new_tokens=24, temperature=temperature, n=3, seed=11)
    groups = policy.generate(CONVERSATIONS, config)
    assert [len(g) for g in groups] == [3, 3]
    for conversation, group in zip(CONVERSATIONS, groups):
        prompt = policy.tokenizer.apply_chat_template(
            conversation, add_generation_prompt=True, tokenize=False
        )
        for sample in group:
            assert sample.prompt_ids == tuple(policy.tokenizer(prompt)["input_ids"])
            assert 1 <= len(sample.completion_ids) <= 24
            assert sample.finish_reason in ("stop", "length")
            expected = _recomputed_logprobs(policy, sample, temperature)
            assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-4)
            assert sample.text == policy.tokenizer.decode(
                sample.completion_ids, skip_special_tokens=True
            )
    # Samples of one group differ (random weights spread probability over 2k tokens).
    assert len({s.completion_ids for s in groups[0]}) > 1


def test_same_seed_same_samples_and_rng_left_alone(policy):
    config = GenerationConfig(max_new_tokens=16, n=2, seed=5)
    torch.manual_seed(123)
    first = policy.generate(CONVERSATIONS, config)
    after_first = torch.rand(1)
    torch.manual_seed(123)
    second = policy.generate(CONVERSATIONS, config)
    assert first == second
    assert torch.equal(torch.rand(1), after_first)  # the caller's RNG stream is untouched
    other = policy.generate(CONVERSATIONS, GenerationConfig(max_new_tokens=16, n=2, seed=6))
    assert other != first


def test_greedy_is_deterministic_and_picks_the_argmax(policy):
    config = GenerationConfig(max_new_tokens=8, temperature=0.0, n=2)
    (group,) = policy.generate(CONVERSATIONS[:1], config)
    assert group[0].completion_ids == group[1].completion_ids
    ids = torch.tensor([list(group[0].prompt_ids)])
    with torch.no_grad():
        first = int(policy.model(ids).logits[0, -1].argmax())
    assert group[0].completion_ids[0] == first


def test_stop_string_cuts_text_and_ids(policy):
    # Find text the model does produce, then stop on a piece of it.
    base = GenerationConfig(max_new_tokens=24, n=1, seed=3)
    (free,) = policy.generate(CONVERSATIONS[:1], base)[0]
    stop = free.text[len(free.text) // 2 :][:2]
    assert stop.strip(), f"pick a visible stop from {free.text!r}"
    cut = free.text[: free.text.find(stop)]
    (stopped,) = policy.generate(CONVERSATIONS[:1], GenerationConfig(max_new_tokens=24, seed=3, stop=(stop,)))[0]
    assert stopped.finish_reason == "stop"
    assert stopped.text == cut
    # The ids end with the token that completed the stop string, a prefix of the free run.
    assert stopped.completion_ids == free.completion_ids[: len(stopped.completion_ids)]
    decoded = policy.tokenizer.decode(stopped.completion_ids)
    assert stop in decoded and stop not in policy.tokenizer.decode(stopped.completion_ids[:-1])
    (kept,) = policy.generate(
        CONVERSATIONS[:1], GenerationConfig(max_new_tokens=24, seed=3, stop=(stop,), include_stop=True)
    )[0]
    assert kept.text == cut + stop


def test_eos_ends_a_sample_and_is_kept(policy):
    # A hook makes <|im_end|> (id 2) by far the likeliest token: every sample stops at once.
    def favour_eos(module, inputs, output):
        output[..., 2] += 100.0
        return output

    handle = policy.model.lm_head.register_forward_hook(favour_eos)
    try:
        groups = policy.generate(CONVERSATIONS, GenerationConfig(max_new_tokens=10, n=2, seed=0))
    finally:
        handle.remove()
    for group in groups:
        for sample in group:
            assert sample.completion_ids == (2,)
            assert sample.finish_reason == "stop"
            assert sample.text == ""
            assert sample.logprobs[0] > -1e-3


def test_length_finish(policy):
    (group,) = policy.generate(CONVERSATIONS[:1], GenerationConfig(max_new_tokens=3, n=4, seed=1))
    for sample in group:
        assert sample.finish_reason == "length" or sample.completion_ids[-1] in policy.eos_ids
        assert len(sample.completion_ids) <= 3


def test_batches_split_by_max_batch_size(tiny_dir):
    small = load_policy(PolicyConfig(backend="hf", model=str(tiny_dir), device="cpu", max_batch_size=2))
    groups = small.generate(CONVERSATIONS * 2, GenerationConfig(max_new_tokens=4, n=2, seed=0))
    assert [len(g) for g in groups] == [2, 2, 2, 2]


def test_lora_wraps_generates_and_saves_adapter(tiny_dir, tmp_path):
    pytest.importorskip("peft")
    config = PolicyConfig(backend="hf", model=str(tiny_dir), device="cpu", lora={"r": 4, "alpha": 8})
    policy = load_policy(config)
    trainable = [n for n, p in policy.model.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in n for n in trainable)
    groups = policy.generate(CONVERSATIONS, GenerationConfig(max_new_tokens=8, n=2, seed=0))
    sample = groups[0][0]
    expected = _recomputed_logprobs(policy, sample, 1.0)
    assert torch.allclose(torch.tensor(sample.logprobs), expected, atol=1e-4)
    out = policy.save(tmp_path / "adapter")
    assert (out / "adapter_config.json").is_file()
    resumed = load_policy(
        PolicyConfig(backend="hf", model=str(tiny_dir), device="cpu", lora={"adapter_path": str(out)})
    )
    assert resumed.generate(CONVERSATIONS, GenerationConfig(max_new_tokens=8, n=2, seed=0)) == groups


def test_clear_errors(tmp_path):
    with pytest.raises(ConfigError, match="needs a model path"):
        PolicyConfig(backend="hf")
    with pytest.raises(ConfigError, match="unknown policy backend"):
        PolicyConfig(backend="tgi")  # type: ignore[arg-type]
    with pytest.raises(InputError, match="not a model directory"):
        load_policy(PolicyConfig(backend="hf", model=str(tmp_path)))
    with pytest.raises(ConfigError, match="temperature"):
        GenerationConfig(temperature=-1)


@pytest.fixture(scope="module")
def hinted_policy(tiny_dir, tmp_path_factory):
    """The tiny model saved with the sampling hints of a Qwen2.5-Coder-Instruct checkpoint's
    generation_config.json (top_k 20, top_p 0.8, temperature 0.7), with a stronger repetition
    penalty and a no-repeat rule so that their effect on greedy decoding cannot hide."""
    import shutil

    from transformers import GenerationConfig as HFGenerationConfig

    path = tmp_path_factory.mktemp("hinted") / "model"
    shutil.copytree(tiny_dir, path)
    hints = HFGenerationConfig.from_pretrained(path) if (path / "generation_config.json").exists() \
        else HFGenerationConfig()
    hints.update(do_sample=True, temperature=0.7, top_k=20, top_p=0.8, repetition_penalty=2.0, no_repeat_ngram_size=1,
                 min_p=0.05)
    hints.save_pretrained(path)
    policy = load_policy(PolicyConfig(backend="hf", model=str(path), device="cpu"))
    assert policy.model.generation_config.top_k == 20  # the hints are loaded with the model
    return policy


def test_sampling_ignores_the_checkpoints_generation_config(hinted_policy):
    # Sampled at temperature 1.0 from a near-uniform random model: without top-k 20 / top-p 0.8 /
    # min-p, most sampled tokens rank far below 20; the log-probs are those the trainer recomputes.
    config = GenerationConfig(max_new_tokens=32, temperature=1.0, n=4, seed=3)
    ranks = []
    for group in hinted_policy.generate(CONVERSATIONS, config):
        for sample in group:
            assert list(sample.logprobs) == pytest.approx(
                _recomputed_logprobs(hinted_policy, sample, 1.0).tolist(), abs=1e-4)
            ids = torch.tensor([list(sample.prompt_ids) + list(sample.completion_ids)])
            with torch.no_grad():
                logits = hinted_policy.model(ids).logits[0, len(sample.prompt_ids) - 1 : -1]
            chosen = logits.gather(-1, torch.tensor(sample.completion_ids)[:, None])
            ranks += (logits > chosen).sum(-1).tolist()
    assert sum(r >= 20 for r in ranks) > len(ranks) // 2, sorted(ranks)
    assert hinted_policy.model.generation_config.top_k == 20  # the checkpoint's file is left as it was


def test_greedy_ignores_the_repetition_penalty_of_the_checkpoint(hinted_policy):
    # Greedy = the argmax of the raw logits at every step, fed back one token at a time.
    config = GenerationConfig(max_new_tokens=24, temperature=0.0)
    sample = hinted_policy.generate(CONVERSATIONS[:1], config)[0][0]
    ids = list(sample.prompt_ids)
    with torch.no_grad():
        for token in sample.completion_ids:
            assert int(hinted_policy.model(torch.tensor([ids])).logits[0, -1].argmax()) == token
            ids.append(token)


@pytest.mark.parametrize("top_p", [1.0, 0.8])
def test_sampled_logprobs_are_recorded_step_by_step_not_from_kept_logits(policy, top_p, monkeypatch):
    """generate no longer keeps every step's logits (B x steps x vocab); the recorded log-probs
    are the same as those logits gave: log_softmax(raw logits / T) at the sampled ids, before
    top-p truncation."""
    kept = []
    real_generate = type(policy.model).generate

    def generate(self, *args, **kwargs):
        kwargs["generation_config"].output_logits = True  # the old way, to compare against
        out = real_generate(self, *args, **kwargs)
        kept.append(out.logits)
        return out

    config = GenerationConfig(max_new_tokens=12, temperature=0.7, top_p=top_p, n=3, seed=5)
    assert policy._hf_generation_config(config).output_logits is False
    assert policy._hf_generation_config(config).output_scores is False
    monkeypatch.setattr(type(policy.model), "generate", generate)
    samples = policy.generate([[{"role": "user", "content": "Say something."}]], config)[0]
    assert kept and isinstance(kept[0], tuple)
    for i, s in enumerate(samples):
        expected = [float(torch.log_softmax(kept[0][t][i].float() / 0.7,
                                            -1)[tok]) for t, tok in enumerate(s.completion_ids)]
        assert s.logprobs == pytest.approx(expected, abs=1e-6)
