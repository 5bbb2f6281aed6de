"""``rollout.engine``: an engine with weights of its own is sent the trained weights after every
optimizer step, refused when it sampled with stale ones, and its log-probs are the old
log-probs of the importance ratio. Here the engine is a second transformers model (exact
pushes, no vLLM needed); the same runs against real vLLM: ``test_engine_vllm.py``."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.errors import ConfigError, InputError, StaleWeights  # noqa: E402
from swe_srl.policy import PolicyConfig, Sample, load_policy  # noqa: E402
from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl import engine as engine_mod  # noqa: E402
from swe_srl.rl import grpo  # noqa: E402
from swe_srl.rl.engine import full_named_parameters, sampler_logprobs  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.trainer import train  # noqa: E402
from tests.rl.test_trainer import (  # noqa: E402
    assert_same_weights,
    metric_rows,
    run,
    small_overrides,
    state_dict,
    write_dataset,
)

VLLM = {"rollout.engine": "vllm", "run.eval_every": 0}


def length_reward(texts, infos):
    """A reward that varies within a group even for the untrained tiny model (whose completions
    all score -1 on format under the SRL reward): every group has signal, so every step learns."""
    return [(len(t) % 7) / 7 for t in texts]


class CopyEngine:
    """A rollout engine with weights of its own: another transformers model that samples, with
    VLLMPolicy's push interface (``update_weights``, ``weights_version``)."""

    def __init__(self, model_dir: Path) -> None:
        self.model_dir = model_dir
        self.policy = load_policy(PolicyConfig(backend="hf", model=str(model_dir), dtype="float32", device="cpu"))
        self.tokenizer = self.policy.tokenizer
        self.weights_version = 0
        self.pushed: list[int | None] = []
        self.closed = False

    def generate(self, conversations, config):
        groups = self.policy.generate(conversations, config)
        return [[replace(s, weights_version=self.weights_version) for s in g] for g in groups]

    def update_weights(self, named_tensors, *, version=None, names=None, bucket_mb=None):
        params = dict(self.policy.model.named_parameters())
        streamed = []
        with torch.no_grad():
            for name, tensor in named_tensors:
                params[name].copy_(tensor)
                streamed.append(name)
        assert names is None or list(names) == streamed  # the names checked first are the ones pushed
        self.weights_version = self.weights_version + 1 if version is None else version
        self.pushed.append(version)

    def close(self) -> None:
        self.closed = True


@pytest.fixture()
def engines(monkeypatch) -> list[CopyEngine]:
    """Every engine the runs start, in order."""
    started: list[CopyEngine] = []

    def start(config, model_dir, *, device, seed):
        started.append(CopyEngine(model_dir))
        return started[-1]

    monkeypatch.setattr(engine_mod, "start_engine", start)
    return started


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


@pytest.fixture(autouse=True)
def varied_reward(monkeypatch):
    from swe_srl.config import RewardConfig

    monkeypatch.setattr(RewardConfig, "step_reward", lambda self, syntax="xml": length_reward)


@pytest.fixture()
def old_logprobs_seen(monkeypatch) -> list[Any]:
    """The sampler's log-probs each grpo_loss call got: ``engine_logprobs`` (truncated importance
    sampling, the default with vllm) or else ``old_logprobs`` (bypass; None = the trained model
    sampled)."""
    seen: list[Any] = []
    real = grpo.grpo_loss

    def spy(logprobs, old_logprobs, *args, **kwargs):
        given = kwargs.get("engine_logprobs") if kwargs.get("engine_logprobs") is not None else old_logprobs
        seen.append(None if given is None else given.clone())
        return real(logprobs, old_logprobs, *args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_loss", spy)
    return seen


def test_engine_gets_the_weights_after_every_step(tiny_model_dir, dataset, tmp_path, engines, old_logprobs_seen):
    result = run(dataset, tiny_model_dir, tmp_path / "run", "srl", **VLLM)
    (engine,) = engines
    # The start model, as the run keeps it for its resumes (run.keep_start_model: hard links).
    assert engine.model_dir == result.run_dir / ckpt.START_MODEL_DIR
    assert_same_weights(state_dict(engine.model_dir), state_dict(tiny_model_dir), atol=0.0)
    assert engine.pushed == [0, 1, 2, 3]  # at the start, then after each step
    assert metric_rows(result.run_dir, "rollout/weights_version") == [1.0, 2.0, 3.0]
    final = state_dict(result.final_checkpoint / "model")
    for name, tensor in engine.policy.model.state_dict().items():
        assert torch.equal(tensor, final[name]), name
    # Same weights, same implementation: the engine's log-probs are the trainer's.
    assert all(gap < 1e-5 for gap in metric_rows(result.run_dir, "train/logprob_gap"))
    assert old_logprobs_seen and all(old is not None for old in old_logprobs_seen)
    assert engine.closed


def test_the_engines_logprobs_are_the_old_logprobs_of_the_ratio(monkeypatch):
    samples = [Sample("a", (1,), (5, 6, 7), (-0.5, -1.0, -2.0), "stop", 3),
               Sample("b", (1,), (8,), (-0.25,), "stop", 3)]
    trainer = torch.full((2, 3), -9.0)
    old = sampler_logprobs(samples, trainer)
    assert torch.equal(old, torch.tensor([[-0.5, -1.0, -2.0], [-0.25, 0.0, 0.0]]))
    engine = engine_mod.RolloutEngine("vllm", object())
    assert torch.equal(engine.old_logprobs(samples, trainer), old)
    assert engine_mod.RolloutEngine("hf", object()).old_logprobs(samples, trainer) is None  # ratio 1, as before
    with pytest.raises(InputError, match="no sampler log-probs"):
        sampler_logprobs([replace(samples[0], logprobs=None)], trainer)


def test_hf_engine_keeps_the_exact_on_policy_ratio(tiny_model_dir, dataset, tmp_path, engines, old_logprobs_seen):
    result = run(dataset, tiny_model_dir, tmp_path / "hf", "srl", **{"run.max_steps": 1, "run.eval_every": 0})
    assert not engines and old_logprobs_seen == [None]  # the trained model sampled: old = its own
    assert metric_rows(result.run_dir, "train/ratio_mean") == [1.0]
    assert metric_rows(result.run_dir, "rollout/weights_version") == []


def test_a_missed_push_is_refused_not_trained_on(tiny_model_dir, dataset, tmp_path, engines, monkeypatch):
    real = CopyEngine.update_weights

    def miss_second(self, named_tensors, *, version=None, **push):
        if version == 1:  # the push after step 1 never reaches the engine
            return
        real(self, named_tensors, version=version, **push)

    monkeypatch.setattr(CopyEngine, "update_weights", miss_second)
    with pytest.raises(StaleWeights, match=r"with other weights than the trained model's \(version 1\): "
                                           r"\d+ with version 0"):
        run(dataset, tiny_model_dir, tmp_path / "stale", "srl", **VLLM)
    # Step 1 was logged with the version the engine reports, which shows the missed push at once.
    assert metric_rows(tmp_path / "stale", "rollout/weights_version") == [0.0]
    assert engines[0].closed


def test_resume_pushes_the_restored_weights(tiny_model_dir, dataset, tmp_path, engines):
    out = tmp_path / "resumed"
    run(dataset, tiny_model_dir, out, "srl", **VLLM, **{"run.max_steps": 2, "run.save_every": 2})
    result = run(dataset, tiny_model_dir, out, "srl", resume=True, **VLLM, **{"run.max_steps": 3})
    first, second = engines
    assert second.model_dir == out / ckpt.START_MODEL_DIR  # the start model, then the restored weights pushed
    assert second.pushed == [2, 3]  # the restored weights are version 2
    assert metric_rows(out, "rollout/weights_version") == [1.0, 2.0, 3.0]
    final = state_dict(result.final_checkpoint / "model")
    assert all(torch.equal(t, final[n]) for n, t in second.policy.model.state_dict().items())


def test_lora_adapters_are_folded_into_the_pushed_weights(tiny_model_dir, dataset, tmp_path, engines):
    from tests.rl.test_fsdp import exported

    lora = {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]}
    result = run(dataset, tiny_model_dir, tmp_path / "lora", "srl", **VLLM,
                 **{"model.lora": lora, "run.max_steps": 2, "run.save_every": 2})
    (engine,) = engines
    assert engine.pushed == [0, 1, 2]
    merged = exported(result.run_dir, tmp_path)  # the start model with the adapter merged in
    moved = [k for k, t in state_dict(tiny_model_dir).items() if not torch.equal(t, merged[k])]
    assert moved and all("q_proj" in k or "v_proj" in k for k in moved)
    weights = engine.policy.model.state_dict()
    assert weights.keys() == merged.keys()
    assert all(torch.allclose(weights[k], merged[k], atol=1e-6) for k in merged)


def test_rollout_config_is_checked(tiny_model_dir, dataset, tmp_path):
    def cfg(**extra):
        return load_config(TrainConfig, "tiny-cpu", ["method=srl"] + small_overrides(
            dataset, tiny_model_dir, tmp_path / "c", **extra))

    assert cfg().rollout.engine == "hf"
    with pytest.raises(ConfigError, match="rollout.engine"):
        cfg(**{"rollout.engine": "sglang"})
    with pytest.raises(ConfigError, match="needs generation.top_p=1"):
        cfg(**{"rollout.engine": "vllm", "generation.top_p": 0.9})
    with pytest.raises(ConfigError, match="gpu_memory_utilization"):
        cfg(**{"rollout.gpu_memory_utilization": 0.0})
    with pytest.raises(ConfigError, match="a given sampler needs rollout.engine=hf"):
        run(dataset, tiny_model_dir, tmp_path / "s", "srl", sampler=object(), **VLLM)


def _tiny(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.ReLU(), torch.nn.Linear(6, 3))


def test_wrapped_models_push_their_checkpoint_names():
    model = _tiny()
    expected = {n: p.detach().clone() for n, p in model.named_parameters()}
    wrapped = torch.nn.DataParallel(torch.compile(model))  # CPU: DataParallel runs the module as is
    assert {n for n, _ in wrapped.named_parameters()} != set(expected)  # "module._orig_mod.0.weight"
    pushed = dict(full_named_parameters(wrapped))
    assert pushed.keys() == expected.keys()
    assert all(torch.equal(pushed[n], expected[n]) for n in expected)


def test_sharded_parameters_are_gathered_whole(tmp_path):
    """FSDP2-style DTensor parameters (here a one-process mesh, gloo): full tensors, by name."""
    import torch.distributed as dist
    from torch.distributed.device_mesh import init_device_mesh
    from torch.distributed.tensor import DTensor, Shard, distribute_tensor

    if dist.is_initialized():
        pytest.skip("a process group is already set up in this process")
    store = dist.FileStore(str(tmp_path / "store"), 1)
    dist.init_process_group("gloo", store=store, rank=0, world_size=1)
    try:
        mesh = init_device_mesh("cpu", (1,))
        model = _tiny(1)
        expected = {n: p.detach().clone() for n, p in model.named_parameters()}
        for module in model.modules():
            for name, param in list(module.named_parameters(recurse=False)):
                setattr(module, name, torch.nn.Parameter(distribute_tensor(param.detach(), mesh, [Shard(0)])))
        assert all(isinstance(p, DTensor) for p in model.parameters())
        pushed = dict(full_named_parameters(model))
        assert pushed.keys() == expected.keys()
        for name, tensor in pushed.items():
            assert not isinstance(tensor, DTensor) and torch.equal(tensor, expected[name]), name
    finally:
        dist.destroy_process_group()


@pytest.fixture()
def demo_ready(docker_client, base_image) -> None:
    from swe_srl.experts import DEFAULT_OUTPUT

    if not DEFAULT_OUTPUT.is_file():
        pytest.skip("no recorded demo expert trajectories")


@pytest.mark.docker
def test_episodes_sample_every_turn_through_the_engine(demo_ready, tiny_model_dir, tmp_path, engines, monkeypatch):
    """rlvr: the agent's turns come from the engine, checked and pushed like SRL completions."""
    from tests.rl.test_trainer_episodes import episode_config

    calls = []
    real = CopyEngine.generate
    monkeypatch.setattr(CopyEngine, "generate", lambda self, c, g: calls.append(len(c)) or real(self, c, g))
    result = train(episode_config(tiny_model_dir, tmp_path / "rlvr", "rlvr", **{"rollout.engine": "vllm"}))
    (engine,) = engines
    assert result.steps == 2 and engine.pushed == [0, 1, 2] and len(calls) >= 4  # >= 1 turn x 2 episodes x 2 steps
    rows = [r for r in read_jsonl(tmp_path / "rlvr" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["rollout/weights_version"] for r in rows] == [1.0, 2.0]
    assert all(r["train/logprob_gap"] < 1e-5 and r["episodes/infra_failures"] == 0 for r in rows)


# One fsdp run on two processes with a copy engine per rank: DATA MODEL OUT '{"dotted.key": value}'.
FSDP_SCRIPT = """
import json, os, sys
import torch
from swe_srl.config import RewardConfig, TrainConfig
from swe_srl.config_loader import load_config
from swe_srl.rl import engine
from swe_srl.rl.distributed import exit_process
from swe_srl.rl.trainer import train
from tests.rl.test_engine import CopyEngine, length_reward
from tests.rl.test_trainer import small_overrides

data, model, out, extra = sys.argv[1:5]
RewardConfig.step_reward = lambda self, syntax="xml": length_reward
engines = []
engine.start_engine = lambda config, model_dir, **kw: engines.append(CopyEngine(model_dir)) or engines[-1]
cfg = load_config(TrainConfig, "tiny-cpu", ["method=srl"] + small_overrides(data, model, out, **json.loads(extra)))
train(cfg)
torch.save({"weights": engines[0].policy.model.state_dict(), "pushed": engines[0].pushed},
           f"{out}/engine-{os.environ['RANK']}.pt")  # train() has ended the group it started
exit_process(0)  # as the CLI ends: see swe_srl.rl.distributed.exit_process
"""


@pytest.mark.slow
@pytest.mark.parametrize("variant", ["fsdp", "fsdp-lora-offload"])
def test_sharded_training_pushes_whole_merged_weights(variant, tiny_model_dir, dataset, tmp_path):
    """run.parallel=fsdp (and LoRA with CPU offload): every rank gathers the sharded weights
    (LoRA folded in) and its engine ends with the weights the run exports."""
    from tests.rl.test_fsdp import exported, launch

    extra = {**VLLM, "run.parallel": "fsdp", "run.max_steps": 2, "run.save_every": 2}
    if variant == "fsdp-lora-offload":
        extra.update({"model.lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
                      "run.cpu_offload": True})
    out = tmp_path / "run"
    launch(FSDP_SCRIPT, [str(dataset), str(tiny_model_dir), str(out), json.dumps(extra)], 2, tmp_path)
    assert metric_rows(out, "rollout/weights_version") == [1.0, 2.0]
    assert all(gap < 1e-5 for gap in metric_rows(out, "train/logprob_gap"))
    final = exported(out, tmp_path)
    base = state_dict(tiny_model_dir)
    assert any(not torch.equal(final[k], base[k]) for k in final)  # the run moved the weights
    for rank in (0, 1):
        engine = torch.load(out / f"engine-{rank}.pt")
        assert engine["pushed"] == [0, 1, 2]
        assert engine["weights"].keys() == final.keys()
        for name, tensor in engine["weights"].items():
            assert torch.allclose(tensor, final[name], atol=1e-6), (rank, name)


@pytest.mark.parametrize("visible, index, expect", [
    (None, 3, "3"),          # every GPU visible: the rank's own index
    ("4,5,6,7", 1, "5"),     # a narrowed machine: the physical id behind the rank's index
    ("GPU-a, GPU-b", 1, "GPU-b"),
])  # fmt: skip
def test_each_ranks_engine_starts_on_the_ranks_gpu(visible, index, expect):
    from swe_srl.rl.engine import engine_device_env

    environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
    with engine_device_env(torch.device("cuda", index), 8, environ):
        assert environ["CUDA_VISIBLE_DEVICES"] == expect  # what the spawned engine core inherits
    assert environ == ({} if visible is None else {"CUDA_VISIBLE_DEVICES": visible})


def test_one_gpu_or_cpu_leaves_the_environment_alone():
    from swe_srl.rl.engine import engine_device_env

    for device, gpus in ((torch.device("cpu"), 0), (torch.device("cuda", 0), 1)):
        environ = {"CUDA_VISIBLE_DEVICES": "2"}
        with engine_device_env(device, gpus, environ):
            assert environ == {"CUDA_VISIBLE_DEVICES": "2"}


def test_an_in_process_engine_core_on_many_gpus_is_refused():
    from swe_srl.rl.engine import engine_device_env

    with pytest.raises(ConfigError, match="VLLM_ENABLE_V1_MULTIPROCESSING"):
        with engine_device_env(torch.device("cuda", 1), 2, {"VLLM_ENABLE_V1_MULTIPROCESSING": "0"}):
            pass


@pytest.mark.parametrize("dtype, device", [("bfloat16", "cpu"), ("auto", "cuda"), ("float16", "cpu")])
def test_lora_with_a_low_precision_vllm_engine_is_refused_in_one_line(dtype, device):
    """Issue 19: LoRA merged into bf16 engine weights mostly rounds away (the engine keeps
    sampling the base model); refused before any engine starts."""
    import torch

    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.errors import ConfigError
    from swe_srl.rl.engine import RolloutEngine

    cfg = load_config(TrainConfig, "tiny-cpu", ["rollout.engine=vllm", f"rollout.dtype={dtype}",
                                                "model.lora={r: 4, alpha: 8}"])
    with pytest.raises(ConfigError, match="round away") as info:
        RolloutEngine.start(cfg, policy=None, model_dir=Path("unused"), device=torch.device(device), seed=0)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("correction, as_engine", [("auto", True), ("tis", True), ("bypass", False)])
def test_engine_logprobs_reach_the_loss_as_tis_weights_or_as_old_logprobs(tiny_model_dir, dataset, tmp_path, engines,
                                                                          grpo_loss_calls, correction, as_engine):
    """With vllm the engine's log-probs weigh each token (TIS, the default) or, bypassed, are
    the ratio's old log-probs; never both."""
    calls = grpo_loss_calls
    result = run(dataset, tiny_model_dir, tmp_path / "run", "srl", **VLLM, **{"grpo.rollout_correction": correction})
    assert calls and set(calls) == {(not as_engine, as_engine)}
    assert all(r >= 1.0 for r in metric_rows(result.run_dir, "train/is_weight_max"))


def test_a_tensor_parallel_engine_starts_on_the_trainers_gpu_and_the_next_ones():
    from swe_srl.rl.engine import engine_device_env

    for visible, expect in ((None, "3,4"), ("4,5,6,7,8", "7,8")):
        environ = {} if visible is None else {"CUDA_VISIBLE_DEVICES": visible}
        with engine_device_env(torch.device("cuda", 3), 8, environ, tensor_parallel=2):
            assert environ["CUDA_VISIBLE_DEVICES"] == expect


@pytest.mark.parametrize("settings, device, gpus, world, message", [
    ({"sleep_level": 1}, "cpu", 0, 1, r"rollout.sleep_level=1 needs a CUDA GPU \(vLLM's sleep mode\)"),
    ({"sleep_level": 2}, "cpu", 0, 2, "set rollout.sleep_level=0 on cpu"),
    ({"tensor_parallel_size": 2}, "cpu", 0, 1, "tensor_parallel_size=2 needs CUDA GPUs"),
    ({"tensor_parallel_size": 2}, "cuda:0", 8, 2, "with 2 trainer processes: each rank starts its own engine"),
    ({"tensor_parallel_size": 4}, "cuda:6", 8, 1, r"needs GPUs 6..9; 8 visible"),
])  # fmt: skip
def test_engine_placements_that_cannot_work_are_refused_in_one_line(settings, device, gpus, world, message):
    from swe_srl.config import RolloutConfig
    from swe_srl.rl.engine import check_engine_placement

    with pytest.raises(ConfigError, match=message) as info:
        check_engine_placement(RolloutConfig(engine="vllm", **settings), torch.device(device), gpus, world)
    assert "\n" not in str(info.value)


def test_engine_placements_that_work_pass():
    from swe_srl.config import RolloutConfig
    from swe_srl.rl.engine import check_engine_placement

    check_engine_placement(RolloutConfig(engine="vllm"), torch.device("cpu"), 0, 2)
    check_engine_placement(RolloutConfig(engine="vllm", sleep_level=2), torch.device("cuda", 1), 8, 8)
    check_engine_placement(RolloutConfig(engine="vllm", tensor_parallel_size=4, sleep_level=1),
                           torch.device("cuda", 4), 8, 1)


def test_sleep_level_on_cpu_is_refused_before_an_engine_starts(tiny_model_dir, engines):
    from swe_srl.rl.engine import RolloutEngine

    cfg = load_config(TrainConfig, "tiny-cpu", ["rollout.engine=vllm", "rollout.sleep_level=1"])
    with pytest.raises(ConfigError, match="needs a CUDA GPU"):
        RolloutEngine.start(cfg, None, tiny_model_dir, device=torch.device("cpu"), seed=0)
    assert engines == []


@pytest.mark.parametrize("setting, message", [
    ("rollout.sleep_level=3", "sleep_level must be 0"), ("rollout.tensor_parallel_size=0", "must be >= 1"),
    ("rollout.push_bucket_mb=0", "push_bucket_mb must be >= 1"),
])  # fmt: skip
def test_engine_settings_out_of_range_are_refused(setting, message):
    with pytest.raises(ConfigError, match=message):
        load_config(TrainConfig, "tiny-cpu", [setting])


def test_the_push_names_come_without_gathering_and_match_the_stream(tiny_model_dir):
    import peft
    import transformers

    from swe_srl.rl.engine import pushed_names

    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_model_dir, dtype=torch.float32)
    lora = peft.get_peft_model(model, peft.LoraConfig(r=2, target_modules=["q_proj", "v_proj"]))
    for m in (model, lora):
        assert pushed_names(m) == [n for n, _ in full_named_parameters(m)]
    assert not any("lora" in n or "base_layer" in n for n in pushed_names(lora))
