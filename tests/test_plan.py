"""`swe-srl plan`: the memory arithmetic against real tensors of a model built offline
(parameters, gradients and AdamW states exactly; activations against what autograd keeps),
the published Qwen2.5-Coder sizes, and the command (paper preset, JSON, bad input)."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from swe_srl.cli import main
from swe_srl.config import TrainConfig
from swe_srl.config_loader import load_config
from swe_srl.errors import ConfigError, InputError
from swe_srl.model_shape import KNOWN_SHAPES, ModelShape, resolve_shape, tiny_model_config
from swe_srl.plan import (
    DDP_BUCKET_ELEMENTS,
    STRATEGIES,
    PlanConfig,
    Strategy,
    Workload,
    activation_bytes,
    estimate,
    make_plan,
)

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

SMALL = dict(vocab_size=1000, hidden_size=128, intermediate_size=256, num_hidden_layers=2,
             num_attention_heads=4, num_key_value_heads=2)


def build(model_type: str = "qwen2", tied: bool = False, **extra):
    """A small random-init model of ``model_type`` and its shape as plan reads it."""
    cls = {"qwen2": (transformers.Qwen2Config, transformers.Qwen2ForCausalLM),
           "llama": (transformers.LlamaConfig, transformers.LlamaForCausalLM),
           "qwen3": (transformers.Qwen3Config, transformers.Qwen3ForCausalLM)}[model_type]
    config = cls[0](**SMALL, tie_word_embeddings=tied, **extra)
    torch.manual_seed(0)
    model = cls[1](config)
    return model, ModelShape.from_config(config.to_dict())


def ddp(shape: ModelShape, cfg: TrainConfig) -> object:
    plan = make_plan(cfg, PlanConfig(gpus=1), shape)
    return next(e for e in plan.estimates if e.strategy == Strategy("ddp"))


# ----------------------------------------------------------------------------- exact counts


@pytest.mark.parametrize("model_type,tied,extra", [
    ("qwen2", False, {}), ("qwen2", True, {}),
    ("llama", False, {"attention_bias": True, "mlp_bias": True}), ("llama", True, {}),
    ("qwen3", False, {"head_dim": 48}),
])
def test_parameter_count_tensors_and_linear_share_match_the_model(model_type, tied, extra):
    model, shape = build(model_type, tied, **extra)
    params = list(model.parameters())  # tied weights appear once
    assert shape.param_count == sum(p.numel() for p in params)
    assert shape.param_tensors == len(params)
    assert shape.largest_tensor == max(p.numel() for p in params)
    linear = {id(p): p for m in model.modules() if isinstance(m, torch.nn.Linear) for p in m.parameters()}
    assert shape.matmul_params == sum(p.numel() for p in linear.values())


# float32 weights only: the trainer refuses bf16 weights with plain AdamW (updates round away).
@pytest.mark.parametrize("dtype,width", [("float32", 4)])
def test_weight_gradient_and_adamw_bytes_are_exact(dtype, width):
    """What plan predicts for one GPU equals the bytes the trainer's tensors hold: weights,
    gradients after a backward, AdamW state (two moments + a step scalar per tensor) after a step."""
    from swe_srl.rl.optim import build_optimizer

    model, shape = build("qwen2")
    model = model.to(getattr(torch, dtype))
    cfg = load_config(TrainConfig, "tiny-cpu", [f"model.dtype={dtype}", "run.precision=fp32"])
    e = ddp(shape, cfg)

    assert e.weights == sum(p.nbytes for p in model.parameters()) == shape.param_count * width
    ids = torch.randint(0, SMALL["vocab_size"], (2, 12))
    model(input_ids=ids, labels=ids).loss.backward()
    assert e.grads == sum(p.grad.nbytes for p in model.parameters())
    optimizer = build_optimizer(model, cfg.optim)
    optimizer.step()
    state = [t for s in optimizer.state.values() for t in s.values() if torch.is_tensor(t)]
    assert e.optimizer == sum(t.nbytes for t in state)
    assert e.compute_params == 0  # no autocast copy: compute in the weights' dtype


def test_fsdp_shards_weights_gradients_and_states_over_the_gpus():
    _, shape = build("qwen2")
    cfg = load_config(TrainConfig, "tiny-cpu")
    one = make_plan(cfg, PlanConfig(gpus=1), shape).estimates
    four = make_plan(cfg, PlanConfig(gpus=4), shape).estimates
    pick = lambda es, s: next(e for e in es if e.strategy == s)  # noqa: E731
    for attr in ("weights", "grads"):
        assert getattr(pick(four, Strategy("fsdp")), attr) == getattr(pick(one, Strategy("ddp")), attr) // 4
        assert getattr(pick(four, Strategy("ddp")), attr) == getattr(pick(one, Strategy("ddp")), attr)
    assert pick(four, Strategy("fsdp", offload=True)).optimizer == 0
    assert pick(four, Strategy("fsdp", offload=True)).host_optimizer > 0


def test_bucket_size_is_the_trainers():
    from swe_srl.rl.distributed import BUCKET_ELEMENTS

    assert DDP_BUCKET_ELEMENTS == BUCKET_ELEMENTS


# ----------------------------------------------------------------------------- activations


def saved_activation_bytes(model, bf16: bool, checkpointing: bool):
    """Bytes autograd keeps for the trainer's log-prob pass (parameters left out), and the workload."""
    from swe_srl.rl.logprobs import TokenBatch, autocast, completion_logprobs

    model.train()
    if checkpointing:
        model.activation_checkpointing_enable(activation_checkpointing_kwargs={"use_reentrant": False})
    g = torch.Generator().manual_seed(1)
    prompts = [torch.randint(0, SMALL["vocab_size"], (40 - i % 3,), generator=g).tolist() for i in range(6)]
    completions = [torch.randint(0, SMALL["vocab_size"], (24 - i % 2,), generator=g).tolist() for i in range(6)]
    batch = TokenBatch.build(prompts, completions, pad_id=0, device=torch.device("cpu"))
    params = {p.untyped_storage().data_ptr() for p in model.parameters()}
    kept: dict[int, int] = {}

    def pack(t):
        storage = t.untyped_storage()
        if storage.data_ptr() not in params:
            kept[storage.data_ptr()] = storage.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t), autocast(torch.device("cpu"), bf16):
        completion_logprobs(model, batch, 1.0)
    C = batch.completion_ids.shape[1]
    w = Workload(method="srl", gpus=1, batch_size=6, samples_per_item=1, prompt_tokens=batch.input_ids.shape[1] - C,
                 completion_tokens=C, micro_sequences=6, weight_bytes=4, compute_bytes=2 if bf16 else 4)
    return sum(kept.values()), w


@pytest.mark.parametrize("bf16,checkpointing", [(False, False), (True, False), (False, True)])
def test_activation_estimate_is_within_15_percent_of_what_autograd_keeps(bf16, checkpointing):
    model, shape = build("qwen2")
    measured, w = saved_activation_bytes(model, bf16, checkpointing)
    act = activation_bytes(shape, w, "ddp", checkpointing)
    # forward-saved part: layers (or checkpointed inputs), the float32 logits, autocast's weight copies
    predicted = act.saved + w.logit_tokens * shape.vocab_size * 4 + (shape.matmul_params * 2 if bf16 else 0)
    assert predicted == pytest.approx(measured, rel=0.15)
    if checkpointing:
        assert act.recompute > 0


# ----------------------------------------------------------------------------- shapes


PUBLISHED = {"0.5B": 494_032_768, "1.5B": 1_543_714_304, "3B": 3_085_938_688, "7B": 7_615_616_512,
             "14B": 14_770_033_664, "32B": 32_763_876_352}


@pytest.mark.parametrize("size", sorted(PUBLISHED))
def test_built_in_qwen_coder_shapes_give_the_published_sizes(size):
    shape = resolve_shape(f"Qwen2.5-Coder-{size}-Instruct")
    assert shape.param_count == PUBLISHED[size]
    assert shape.source == "built-in table"


@pytest.mark.parametrize("name", ["Qwen/Qwen2.5-Coder-0.5B-Instruct", "Qwen/Qwen2.5-Coder-7B-Instruct"])
def test_built_in_shapes_match_transformers_on_the_meta_device(name):
    with torch.device("meta"):
        model = transformers.Qwen2ForCausalLM(transformers.Qwen2Config(**KNOWN_SHAPES[name]))
    assert sum(p.numel() for p in model.parameters()) == resolve_shape(name).param_count


def test_tiny_model_shape_is_the_one_init_model_builds():
    from swe_srl.tiny_model import _model_config

    made = _model_config(2048, {"<|endoftext|>": 0, "<|im_end|>": 1}).to_dict()
    for key, value in tiny_model_config().items():
        if key != "torch_dtype":
            assert made[key] == value, key


def test_a_local_model_folder_is_read_from_its_config_json(tmp_path):
    model, shape = build("llama")
    model.config.save_pretrained(tmp_path / "m")
    assert resolve_shape(str(tmp_path / "m")).param_count == shape.param_count
    assert resolve_shape(str(tmp_path / "m" / "config.json")).param_count == shape.param_count


def test_unknown_or_unsupported_models_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="unknown model shape"):
        resolve_shape("Qwen/Not-A-Model-7B")
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no config.json"):
        resolve_shape(str(tmp_path / "empty"))
    (tmp_path / "moe.json").write_text(json.dumps({"model_type": "mixtral", "hidden_size": 8}))
    with pytest.raises(ConfigError, match="mixtral"):
        resolve_shape(str(tmp_path / "moe.json"))


# ----------------------------------------------------------------------------- workload


def test_paper_workload_tokens_and_micro_batch():
    cfg = load_config(TrainConfig, "paper")  # the plan: section does not disturb the train config
    shape = resolve_shape("Qwen/Qwen2.5-Coder-7B-Instruct")
    plan = make_plan(cfg, PlanConfig(gpus=8, prompt_tokens=4096), shape)
    w = plan.workload
    assert w.tokens_per_step == 512 * 8 * (4096 + 1024)
    assert w.micro_sequences == 512 * 8 // 8 // 64 and w.logit_tokens == 8 * 1025
    assert w.autocast  # float32 master weights, bf16 compute
    fits = {e.strategy.label for e in plan.fitting}
    assert "fsdp +ckpt" in fits and "ddp" not in fits
    assert plan.recommended.strategy == Strategy("fsdp", checkpointing=True)


def with_token_budget(cfg: TrainConfig, budget: int) -> TrainConfig:
    """``cfg`` with ``optim.max_tokens_per_microbatch = budget``."""
    return replace(cfg, optim=replace(cfg.optim, max_tokens_per_microbatch=budget))


def test_token_budget_caps_the_micro_batch_when_the_config_has_one():
    cfg = load_config(TrainConfig, "paper")
    shape = resolve_shape("Qwen/Qwen2.5-Coder-7B-Instruct")
    assert make_plan(with_token_budget(cfg, 2 * 5120), PlanConfig(gpus=8), shape).workload.micro_sequences == 2
    assert make_plan(with_token_budget(cfg, 0), PlanConfig(gpus=8), shape).workload.micro_sequences == 8
    one_gpu = make_plan(with_token_budget(cfg, 16 * 5120), PlanConfig(gpus=1), shape)
    assert one_gpu.workload.micro_sequences == 16
    assert not one_gpu.fitting and one_gpu.smaller
    advice = one_gpu.smaller[0]
    assert advice.setting == f"optim.max_tokens_per_microbatch={advice.micro_sequences * 5120}"


def test_advice_when_nothing_fits_as_configured():
    cfg = load_config(TrainConfig, "paper")
    shape = resolve_shape("Qwen/Qwen2.5-Coder-7B-Instruct")
    plan = make_plan(cfg, PlanConfig(gpus=8, gpu_memory_gb=24), shape)
    assert not plan.fitting and plan.smaller
    advice = plan.smaller[0]
    assert advice.setting == f"optim.grad_accumulation={advice.grad_accumulation}"
    fixed = replace(cfg, optim=replace(cfg.optim, grad_accumulation=advice.grad_accumulation))
    after = make_plan(fixed, PlanConfig(gpus=8, gpu_memory_gb=24), shape)
    assert after.workload.micro_sequences == advice.micro_sequences
    assert after.recommended.strategy == advice.strategy
    assert not make_plan(cfg, PlanConfig(gpus=1, gpu_memory_gb=1), shape).smaller  # nothing at all


def test_faster_strategies_with_a_smaller_micro_batch_are_offered():
    cfg = load_config(TrainConfig, "paper")
    shape = resolve_shape("Qwen/Qwen2.5-Coder-7B-Instruct")
    plan = make_plan(cfg, PlanConfig(gpus=4), shape)
    assert plan.recommended.strategy == Strategy("fsdp", True, True)
    offered = {a.strategy: a for a in plan.smaller}
    assert Strategy("fsdp", checkpointing=True) in offered
    assert all(STRATEGIES.index(s) < STRATEGIES.index(plan.recommended.strategy) for s in offered)
    assert all(a.micro_sequences < plan.workload.micro_sequences for a in plan.smaller)


def test_strategies_are_listed_fastest_first():
    assert STRATEGIES[0] == Strategy("ddp") and STRATEGIES[-1] == Strategy("fsdp", True, True)
    assert len(set(STRATEGIES)) == 8


def test_peak_takes_the_larger_of_the_pass_and_the_optimizer_step():
    cfg = load_config(TrainConfig, "paper")
    shape = resolve_shape("Qwen/Qwen2.5-Coder-7B-Instruct")
    w = make_plan(cfg, PlanConfig(gpus=8), shape).workload
    e = estimate(shape, w, Strategy("fsdp", checkpointing=True), PlanConfig(gpus=8))
    assert e.peak == e.static + max(e.compute_params + e.activations + max(e.logits, e.recompute), e.step_transient)


# ----------------------------------------------------------------------------- the command


def run_cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["plan", *map(str, args)])
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


def assert_one_line_error(code, err, needle):
    assert code not in (0, None)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error: ") and needle in lines[0], err


def test_cli_paper_on_8x80_shows_a_fitting_configuration(capsys):
    code, out, _ = run_cli(["-c", "paper", "--gpus", "8", "--gpu-memory-gb", "80"], capsys)
    assert code == 0
    assert "Qwen/Qwen2.5-Coder-7B-Instruct" in out and "7.62B parameters" in out
    assert "20,971,520 tokens per optimizer step" in out
    row = next(line for line in out.splitlines() if line.startswith("fsdp +ckpt "))
    assert row.endswith("fits")
    assert "fastest that fits: fsdp +ckpt" in out


def test_cli_json_is_machine_readable(capsys):
    code, out, _ = run_cli(["-c", "paper", "--json", "--set", "optim.grad_accumulation=128",
                            "--set", "plan.headroom=0.2"], capsys)
    assert code == 0
    data = json.loads(out)
    assert data["model"]["parameters"] == 7_615_616_512
    assert data["workload"]["micro_sequences"] == 4 and data["workload"]["logits_chunked"] is False
    assert data["hardware"] == {"gpus": 8, "gpu_memory_gib": 80.0, "headroom": 0.2, "reserve_gib": 0.0,
                                "usable_bytes": int(80 * 1024**3 * 0.8)}
    assert {s["strategy"] for s in data["strategies"] if s["fits"]} >= {"fsdp +ckpt"}
    assert data["recommended"] == "fsdp +ckpt"


def test_cli_reads_a_local_model_config(tmp_path, capsys):
    model, shape = build("qwen2", tied=True)
    model.config.save_pretrained(tmp_path / "m")
    code, out, _ = run_cli(["--model-config", tmp_path / "m", "--json"], capsys)
    assert code == 0 and json.loads(out)["model"]["parameters"] == shape.param_count


def test_cli_says_what_to_change_when_nothing_fits(capsys):
    code, out, _ = run_cli(["-c", "paper", "--gpus", "1"], capsys)
    assert code == 0
    assert "nothing fits as configured (64 sequences per micro-batch)" in out
    assert "--set optim.grad_accumulation=" in out
    code, out, _ = run_cli(["-c", "paper", "--gpus", "1", "--gpu-memory-gb", "1"], capsys)
    assert code == 0 and "not even 1 sequence" in out


@pytest.mark.parametrize("args,needle", [
    (["-c", "no/such/config.yaml"], "config.yaml"),
    (["-c", "no-such-preset"], "no-such-preset"),
    (["-c", "paper", "--model-config", "Qwen/Not-A-Model-7B"], "unknown model shape"),
    (["-c", "paper", "--gpus", "0"], "--gpus must be >= 1"),
    (["-c", "paper", "--gpu-memory-gb", "-5"], "--gpu-memory-gb"),
    (["-c", "paper", "--set", "plan.nonsense=1"], "plan.nonsense"),
])
def test_cli_bad_input_is_one_line(args, needle, capsys):
    code, _, err = run_cli(args, capsys)
    assert_one_line_error(code, err, needle)
