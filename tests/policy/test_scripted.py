"""ScriptedPolicy, the registry and the shared configs."""

from __future__ import annotations

import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")

from swe_srl.errors import ConfigError, InputError
from swe_srl.policy import (
    BACKENDS,
    GenerationConfig,
    LoraOptions,
    Policy,
    PolicyConfig,
    Sample,
    load_policy,
)
from swe_srl.policy.scripted import ScriptedPolicy

CALL = "<think>look</think>\n<function=bash>\n<parameter=command>ls</parameter>\n</function>"
CONV = [{"role": "user", "content": "fix it"}]


def test_replays_in_order_across_groups_and_calls():
    policy = ScriptedPolicy(["a", "b", "c", "d"])
    assert isinstance(policy, Policy)
    first = policy.generate([CONV, CONV], GenerationConfig(n=1))
    second = policy.generate([CONV], GenerationConfig(n=2))
    assert [[s.text for s in g] for g in first] == [["a"], ["b"]]
    assert [s.text for s in second[0]] == ["c", "d"]
    assert policy.remaining == 0
    assert policy.calls == [[CONV, CONV], [CONV]]
    with pytest.raises(InputError, match="ran out of completions after 4"):
        policy.generate([CONV], GenerationConfig())


def test_cycle_and_function_sources():
    cycling = ScriptedPolicy(["x", "y"], cycle=True)
    (group,) = cycling.generate([CONV], GenerationConfig(n=5))
    assert [s.text for s in group] == ["x", "y", "x", "y", "x"]
    echo = ScriptedPolicy(lambda conv, i: f"{conv[-1]['content']}#{i}")
    assert [s.text for s in echo.generate([CONV], GenerationConfig(n=2))[0]] == ["fix it#0", "fix it#1"]


def test_stop_strings_like_a_model():
    policy = ScriptedPolicy([CALL + "\nextra", CALL + "\nextra"])
    stop = GenerationConfig(n=1, stop=("</function>",))
    assert policy.generate([CONV], stop)[0][0].text == CALL[: -len("</function>")]
    keep = GenerationConfig(n=1, stop=("</function>",), include_stop=True)
    sample = policy.generate([CONV], keep)[0][0]
    assert sample == Sample(CALL, (), (), None, "stop")


def test_tokenises_with_a_tokenizer(tiny_model_dir):  # the fixture skips without transformers
    policy = load_policy(PolicyConfig(backend="scripted", model=str(tiny_model_dir), completions=(CALL,)))
    (sample,) = policy.generate([CONV], GenerationConfig())[0]
    tok = policy.tokenizer
    assert tok.decode(sample.completion_ids) == CALL
    assert tok.decode(sample.prompt_ids).endswith("<|im_start|>assistant\n")
    assert sample.logprobs is None and sample.logprob_sum is None


def test_registry_names_every_backend():
    assert set(BACKENDS) == {"hf", "openai", "vllm", "scripted"}
    policy = load_policy(PolicyConfig(backend="scripted", completions=("a",)))
    assert isinstance(policy, ScriptedPolicy)


def test_config_validation_messages():
    with pytest.raises(ConfigError, match="at least one completion"):
        load_policy(PolicyConfig(backend="scripted"))
    with pytest.raises(ConfigError, match="unknown policy option.*colour"):
        PolicyConfig.from_dict({"backend": "scripted", "colour": "red"})
    cfg = PolicyConfig.from_dict({"backend": "hf", "model": "m", "lora": {"r": 8, "target_modules": ["q_proj"]}})
    assert cfg.lora == LoraOptions(r=8, target_modules=("q_proj",))
    with pytest.raises(ConfigError, match="LoRA dropout"):
        LoraOptions(dropout=1.5)
    with pytest.raises(ConfigError, match="top_p"):
        GenerationConfig(top_p=0)
    with pytest.raises(ConfigError, match="n must be"):
        GenerationConfig(n=0)
    assert GenerationConfig(stop="</function>").stop == ("</function>",)
    with pytest.raises(ValueError, match="logprobs"):
        Sample("t", (1,), (2, 3), (0.0,), "stop")
