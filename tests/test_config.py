"""Typed configs: presets, YAML files, dotted overrides, and the errors a user sees."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

import pytest

from swe_srl.config import GRPOConfig, RewardConfig, TrainConfig
from swe_srl.config_loader import apply_overrides, load_config, parse_override, presets, save_config
from swe_srl.errors import ConfigError
from swe_srl.evaluate import EvalConfig


def test_process_group_timeout_is_long_for_episode_methods_unless_set():
    assert load_config(TrainConfig, None, ["method=srl"]).dist_timeout_s is None  # torch's default
    assert load_config(TrainConfig, None, ["method=sft"]).dist_timeout_s is None
    assert load_config(TrainConfig, None, ["method=rlvr"]).dist_timeout_s == 3 * 3600
    assert load_config(TrainConfig, None, ["method=hybrid", "run.dist_timeout_s=600"]).dist_timeout_s == 600


def test_presets_ship_paper_and_tiny_cpu():
    assert {"paper", "tiny-cpu"} <= set(presets())


def test_paper_preset_matches_the_published_hyperparameters():
    cfg = load_config(TrainConfig, "paper")
    assert cfg.method == "srl"
    assert cfg.grpo.num_generations == 8 and cfg.generation.temperature == 1.0 and cfg.grpo.beta == 0.0
    assert cfg.optim.lr == 5e-7 and cfg.optim.batch_size == 512 and cfg.optim.max_grad_norm == 1.0
    assert cfg.run.precision == "bf16"


def test_overrides_are_typed_by_yaml_and_nested():
    cfg = load_config(TrainConfig, "tiny-cpu", ["grpo.num_generations=6", "optim.betas=[0.9, 0.95]",
                                                 "run.tensorboard=false", "optim.lr=3e-4"])
    assert cfg.grpo.num_generations == 6
    assert cfg.optim.betas == (0.9, 0.95)
    assert cfg.run.tensorboard is False
    assert cfg.optim.lr == pytest.approx(3e-4)
    # the rest of the preset is untouched
    assert cfg.generation.max_new_tokens == load_config(TrainConfig, "tiny-cpu").generation.max_new_tokens


def test_mapping_overrides_and_int_to_float():
    cfg = load_config(TrainConfig, None, {"optim.lr": 1, "run.seed": 7})
    assert cfg.optim.lr == 1.0 and isinstance(cfg.optim.lr, float)
    assert cfg.run.seed == 7


def test_yaml_file_round_trip(tmp_path):
    cfg = load_config(TrainConfig, "paper", ["grpo.clip_eps_high=0.28", "data.train=some/dir"])
    path = tmp_path / "config.yaml"
    save_config(cfg, path)
    assert load_config(TrainConfig, path) == cfg


@pytest.mark.parametrize("override, message", [
    (["grpo.num_generation=4"], "did you mean grpo.num_generations"),
    (["grpo.num_generations=1"], "num_generations must be >= 2"),
    (["grpo.loss_aggregation=mean"], "is not one of"),
    (["optim.lr=fast"], "expected a number"),
    (["optim.batch_size=2.5"], "expected an integer"),
    (["run.wandb=maybe"], "expected true or false"),
    (["method=hybrid", "episodes.weights.similarity=0", "episodes.weights.tests=0"], "needs a nonzero"),
    (["episodes.workers=0"], "episodes.workers and episodes.update_chunk_turns must be >= 1"),
    (["episodes.test_reward=passed"], "'resolved' | 'f2p_fraction'"),
    (["episodes.weights.tests=-1"], "must be >= 0"),
    (["episodes.harness.grading.harness_timeout=0"], "must be > 0"),
    (["episodes.harness.agent.max_steps=0"], "agent.max_steps must be >= 1"),
    (["generation.n=4"], "generation.n must be 1"),
    (["generation.temperature=-1"], "temperature must be >= 0"),
    (["optim.lr=nan"], "expected a finite number"),
    (["grpo=3"], "expected a mapping"),
    (["grpo.beta.x=1"], "is a value, not a section"),
    (["nonsense"], "must look like section.key=value"),
    (["optim.schedule=exponential"], "'constant' | 'cosine' | 'linear'"),
    (["reward.compare=foo"], "reward.compare: 'foo' is not one of 'content' | 'call'"),
    (["reward.similarity=levenshtein"], "reward.similarity: 'levenshtein' is not one of"),
    (["reward.similarity=args", "reward.compare=call"], "reward.compare applies to the text modes only"),
    (["grpo.similarity=lcs"], "config key grpo.similarity moved to reward.similarity"),
    (["model.dtype=bfloat16"], "plain AdamW, which rounds most updates away; use model.dtype float32 with "
                               "run.precision bf16"),
    (["optim.max_tokens_per_microbatch=-1"], "optim.max_tokens_per_microbatch and optim.logprob_chunk_tokens must be "
                                             ">= 0"),
    (["data.max_prompt_tokens=-5"], "data.max_prompt_tokens must be >= 0"),
    (["data.long_prompts=cut"], "'truncate' | 'drop'"),
    (["run.dist_timeout_s=-1"], "run.dist_timeout_s must be >= 0"),
])
def test_bad_values_give_one_actionable_line(override, message):
    with pytest.raises(ConfigError, match=message.replace(".", r"\.").replace("|", r"\|")) as info:
        load_config(TrainConfig, "tiny-cpu", override)
    assert "\n" not in str(info.value)


def test_unknown_preset_and_missing_or_broken_file(tmp_path):
    with pytest.raises(ConfigError, match="unknown config preset 'nope'"):
        load_config(TrainConfig, "nope")
    with pytest.raises(ConfigError, match="config file not found"):
        load_config(TrainConfig, tmp_path / "missing.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("grpo: [unclosed\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_config(TrainConfig, bad)
    listed = tmp_path / "list.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(ConfigError, match="top level must be a mapping"):
        load_config(TrainConfig, listed)


def test_parse_override_reads_values_as_yaml():
    assert parse_override("a.b=4") == (["a", "b"], 4)
    assert parse_override("a=") == (["a"], "")
    assert parse_override("a=x=y") == (["a"], "x=y")
    assert apply_overrides({"a": {"b": 1}}, ["a.c=2", "d.e=true"]) == {"a": {"b": 1, "c": 2}, "d": {"e": True}}


@dataclass(frozen=True)
class _Inner:
    mode: Literal["a", "b"] = "a"
    sizes: tuple[int, ...] = ()


@dataclass(frozen=True)
class _Outer:
    """Another command's config: load_config is generic."""

    name: str = "x"
    limit: int | None = None
    inner: _Inner = field(default_factory=_Inner)


def test_load_config_is_generic_over_dataclasses():
    cfg = load_config(_Outer, {"inner": {"mode": "b"}}, ["inner.sizes=[1, 2]", "limit=null", "name=7"])
    assert cfg == _Outer(name="7", limit=None, inner=_Inner(mode="b", sizes=(1, 2)))
    assert load_config(_Outer, None, ["limit=3"]).limit == 3
    with pytest.raises(ConfigError, match="inner.mode"):
        load_config(_Outer, None, ["inner.mode=c"])


def test_reward_section_defaults_and_what_it_builds():
    cfg = load_config(TrainConfig, "paper", ["reward.similarity=lcs", "reward.tool_mismatch=zero"])
    assert load_config(TrainConfig, "paper").reward == RewardConfig(similarity="cydifflib", compare="content")
    fn = cfg.reward.step_reward()
    assert fn.settings == RewardConfig("lcs", "content", "zero") and fn.syntax == "xml"
    scorer = load_config(TrainConfig, None, ["reward.similarity=args"]).reward.scorer()
    assert (scorer.settings.similarity, scorer.settings.compare) == ("args", "content")
    with pytest.raises(ConfigError, match="reward.compare"):
        RewardConfig(similarity="args", compare="call")


def test_grpo_config_validates_directly():
    with pytest.raises(ConfigError, match="max_resample_rounds"):
        GRPOConfig(max_resample_rounds=0)


def test_one_preset_holds_the_train_and_eval_sections():
    """train ignores the eval: section; eval reads only it, with --set and flags on top."""
    train = load_config(TrainConfig, "tiny-cpu")
    assert train.episodes.harness.agent.max_steps == 5
    cfg = load_config(EvalConfig, "tiny-cpu", ["workers=3", "harness.agent.max_steps=9"], section="eval",
                      flags={"harness.agent.max_steps": 7})
    assert cfg.workers == 3 and cfg.generation.temperature == 0.0 and cfg.generation.max_new_tokens == 64
    assert cfg.harness.agent.max_steps == 7  # a flag wins over --set
    assert load_config(EvalConfig, "paper", section="eval") == EvalConfig()  # no eval: section = defaults
    with pytest.raises(ConfigError, match="unknown config key grpo"):
        load_config(EvalConfig, None, ["grpo.beta=1"], section="eval")


def test_setting_one_generation_key_keeps_the_sections_other_defaults():
    """`eval --max-new-tokens N` used to switch greedy step eval to sampling at temperature 1.0
    (the override rebuilt GenerationConfig from its class defaults)."""
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.evaluate import EvalConfig

    ev = load_config(EvalConfig, None, ["generation.max_new_tokens=100"], section="eval")
    assert (ev.generation.temperature, ev.generation.max_new_tokens) == (0.0, 100)
    ev = load_config(EvalConfig, None, [], section="eval", flags={"generation.max_new_tokens": 7})
    assert ev.generation.temperature == 0.0
    tr = load_config(TrainConfig, None, ["generation.temperature=0.5"])
    assert (tr.generation.temperature, tr.generation.max_new_tokens) == (0.5, 512)
