"""End-to-end training runs on a tiny model: run directory, SFT masking, exact-token log-probs,
gradient accumulation, dynamic sampling, the CLI and the report (resume after kill -9:
``test_train_resume.py``; two processes: ``test_ddp.py``).

The helpers at the top are shared with the other ``test_train_*`` / ``test_ddp`` modules."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.actions import make_action, render_xml  # noqa: E402
from swe_srl.config import TrainConfig  # noqa: E402
from swe_srl.config_loader import load_config  # noqa: E402
from swe_srl.errors import ConfigError, InputError  # noqa: E402
from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from swe_srl.rl.trainer import train  # noqa: E402
from swe_srl.schemas import ContextRound, StepTarget  # noqa: E402

FILES = ("parse.py", "cli.py", "util.py", "io.py", "core.py", "api.py")


def synthetic_targets(n: int, split: str = "train") -> list[StepTarget]:
    """Short step targets whose expert action depends on the issue (a file to read)."""
    out = []
    for i in range(n):
        name = FILES[i % len(FILES)]
        target = render_xml(make_action("bash", {"command": f"cat src/{name}"}))
        context = () if i % 2 == 0 else (ContextRound(action=render_xml(make_action("bash", {"command": "ls src"})),
                                                      observation=" ".join(FILES)),)
        out.append(StepTarget(
            id=f"{split}-{i}#0", trajectory_id=f"{split}-{i}", task_id=f"{split}-{i}", step_index=0,
            num_steps=1, problem_statement=f"The bug is in src/{name}: read it.", context=context,
            target=target, target_tool="bash", expert_thought=f"Look at {name} first.", split=split))
    return out


def write_targets(path: Path, targets: list[StepTarget]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(json.dumps(t.to_dict()) + "\n" for t in targets), encoding="utf-8")
    return path


def write_dataset(root: Path, n_train: int = 24, n_val: int = 6) -> Path:
    write_targets(root / "train.jsonl", synthetic_targets(n_train, "train"))
    write_targets(root / "val.jsonl", synthetic_targets(n_val, "val"))
    return root


def small_overrides(data: Path, model: Path, out: Path, **extra: Any) -> list[str]:
    """A run that takes seconds: short generations, small batches, no progress bar."""
    settings = {
        "data.train": str(data), "model.path": str(model), "run.out_dir": str(out),
        "run.progress": False, "run.max_steps": 3, "run.save_every": 2, "run.eval_every": 3,
        "optim.batch_size": 4, "optim.lr": 1e-3, "grpo.num_generations": 3, "generation.max_new_tokens": 12,
        "grpo.max_resample_rounds": 2, "data.val_limit": 4, "sft.max_length": 512,
    }
    settings.update(extra)
    return [f"{k}={json.dumps(v) if not isinstance(v, str) else repr(v)}" for k, v in settings.items()]


# --------------------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def tiny_model(tiny_model_dir) -> Path:
    return tiny_model_dir  # the session's shared tiny model (tests/conftest.py)


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


def run(data: Path, model: Path, out: Path, method: str = "sft", resume: bool = False, sampler: Any = None, **extra):
    cfg = load_config(TrainConfig, "tiny-cpu", [f"method={method}"] + small_overrides(data, model, out, **extra))
    return train(cfg, resume=resume, sampler=sampler)


def state_dict(path: Path) -> dict:
    from transformers import AutoModelForCausalLM

    return AutoModelForCausalLM.from_pretrained(path).state_dict()


def assert_same_weights(a: dict, b: dict, atol: float = 1e-6) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert torch.allclose(a[name], b[name], atol=atol), name


def assert_same_update(a: dict, b: dict, lr: float) -> None:
    """Two runs took the same step, up to float summation order. Adam's first step moves each
    weight by about lr * sign(grad), so a weight whose gradient is within rounding noise of 0
    may move the other way: allow a few such elements (never more than 2 lr), none elsewhere."""
    assert a.keys() == b.keys()
    total = flipped = 0
    for name in a:
        diff = (a[name] - b[name]).abs()
        assert float(diff.max()) <= 2 * lr + 1e-6, name
        flipped += int((diff > 1e-6).sum())
        total += diff.numel()
    assert flipped <= 1e-3 * total, f"{flipped} of {total} weights differ"


def metric_rows(run_dir: Path, key: str) -> list[float]:
    return [r[key] for r in read_jsonl(run_dir / "metrics.jsonl") if key in r]


# --------------------------------------------------------------------------- tests


def test_sft_run_writes_config_metrics_events_and_checkpoints(tiny_model, dataset, tmp_path):
    result = run(dataset, tiny_model, tmp_path / "run", "sft")
    run_dir = tmp_path / "run"
    assert result.steps == 3 and result.final_checkpoint == run_dir / "checkpoints" / "step-00000003"
    saved = load_config(TrainConfig, run_dir / "config.yaml")
    assert saved.method == "sft" and saved.run.out_dir == str(run_dir)
    rows = read_jsonl(run_dir / "metrics.jsonl")
    train_rows = [r for r in rows if "train/loss" in r]
    assert [r["step"] for r in train_rows] == [1, 2, 3]
    assert all(math.isfinite(r["train/loss"]) and r["train/loss"] > 0 for r in train_rows)
    val_rows = [r for r in rows if "val/reward" in r]
    assert [r["step"] for r in val_rows] == [0, 3] and all(-1 <= r["val/reward"] <= 1 for r in val_rows)
    assert list((run_dir / "tensorboard").glob("events.out.tfevents.*"))
    assert [c.step for c in ckpt.list_checkpoints(run_dir)] == [2, 3]
    assert (run_dir / "checkpoints" / "latest").read_text().strip() == "step-00000003"
    # data order: 4 targets per step, a permutation of the 24 train targets
    drawn = [i for r in read_jsonl(run_dir / "rollouts.jsonl") for i in r["ids"]]
    assert len(drawn) == 12 == len(set(drawn))


def test_sft_masks_the_prompt_and_ends_with_end_of_turn(tiny_model, dataset):
    from transformers import AutoTokenizer

    from swe_srl.config import SFTConfig
    from swe_srl.dataset import load_step_targets
    from swe_srl.rl.sft import encode_example, end_of_turn_id

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    target = load_step_targets(dataset / "train.jsonl")[1]
    prompt, label = encode_example(tokenizer, target, SFTConfig(target="action"))
    assert label[-1] == end_of_turn_id(tokenizer) == tokenizer.convert_tokens_to_ids("<|im_end|>")
    text = tokenizer.decode(label[:-1])
    assert text.startswith("<think>") and "</think>" in text and text.rstrip().endswith("</function>")
    assert "Look at" not in text and "The bug is in" not in text  # no thought, no prompt in the label
    with_thought = tokenizer.decode(encode_example(tokenizer, target, SFTConfig(target="thought_action"))[1])
    assert "Look at parse.py first." in with_thought or "Look at cli.py first." in with_thought

def test_sft_cuts_old_rounds_never_the_system_prompt_the_issue_or_the_label(tiny_model, dataset):
    """The SFT cut used to drop the start of the prompt (the system prompt and the issue: 12.8%
    of the bundled examples at max_length 1024); now it cuts as data.max_prompt_tokens does."""
    from transformers import AutoTokenizer

    from swe_srl.config import SFTConfig
    from swe_srl.dataset import load_step_targets
    from swe_srl.prompts import SYSTEM_PROMPT
    from swe_srl.rl.sft import encode_example

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    target = next(t for t in load_step_targets(dataset / "train.jsonl") if t.context)
    prompt, label = encode_example(tokenizer, target, SFTConfig())
    limit = len(prompt) + len(label) - 20  # too long by 20 tokens
    short_prompt, short_label = encode_example(tokenizer, target, SFTConfig(max_length=limit))
    assert short_label == label and len(short_prompt) + len(short_label) <= limit
    text = tokenizer.decode(short_prompt)
    assert SYSTEM_PROMPT.strip()[:60] in text  # the output contract stays
    assert target.problem_statement.strip()[:40] in text  # so does the head of the issue
    assert short_prompt != prompt[-len(short_prompt):]  # not a cut from the left
    assert encode_example(tokenizer, target, SFTConfig(max_length=len(label))) is None  # no room: left out


def test_trainer_logprobs_are_the_samplers_on_the_exact_token_ids(tiny_model, dataset):
    from swe_srl.dataset import load_step_targets
    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy
    from swe_srl.prompts import messages_for_target
    from swe_srl.rl.logprobs import TokenBatch, completion_logprobs

    policy = load_policy(PolicyConfig(backend="hf", model=str(tiny_model), dtype="float32", device="cpu"))
    targets = load_step_targets(dataset / "train.jsonl")[:3]
    groups = policy.generate([messages_for_target(t) for t in targets],
                             GenerationConfig(max_new_tokens=10, temperature=0.7, n=2, seed=1))
    samples = [s for g in groups for s in g]
    batch = TokenBatch.build([s.prompt_ids for s in samples], [s.completion_ids for s in samples],
                             policy.tokenizer.pad_token_id, torch.device("cpu"))
    assert batch.num_tokens == sum(len(s.completion_ids) for s in samples)
    with torch.no_grad():
        ours = completion_logprobs(policy.model, batch, temperature=0.7)
    for i, s in enumerate(samples):
        n = len(s.completion_ids)
        assert torch.allclose(ours[i, :n], torch.tensor(s.logprobs), atol=1e-4)
        assert torch.all(ours[i, n:] == 0) and torch.all(batch.completion_mask[i, n:] == 0)


def test_grad_accumulation_leaves_the_update_unchanged(tiny_model, dataset, tmp_path):
    one = run(dataset, tiny_model, tmp_path / "a", "sft", **{"run.max_steps": 1, "run.eval_every": 0})
    four = run(dataset, tiny_model, tmp_path / "b", "sft",
               **{"run.max_steps": 1, "run.eval_every": 0, "optim.grad_accumulation": 4})
    for key in ("train/loss", "train/grad_norm"):
        assert metric_rows(one.run_dir, key) == pytest.approx(metric_rows(four.run_dir, key), rel=1e-5)
    assert_same_update(state_dict(one.final_checkpoint / "model"), state_dict(four.final_checkpoint / "model"), 1e-3)


def _scripted(tokenizer):
    """Completions whose reward varies within a group (a right file, a wrong one, bad format)."""
    from swe_srl.policy.scripted import ScriptedPolicy

    def complete(conversation, index):
        issue = conversation[-1]["content"]
        name = next(f for f in FILES if f"src/{f}" in issue)
        if index == 0:
            return (f"<think>\nread it\n</think>\n<function=bash>\n"
                    f"<parameter=command>cat src/{name}</parameter>\n</function>")
        if index == 1 and "parse" not in name:  # groups of parse.py targets have no signal
            return "no think block, no action"
        return f"<think>\nguess\n</think>\n<function=bash>\n<parameter=command>cat src/{name}</parameter>\n</function>"

    return ScriptedPolicy(complete, tokenizer=tokenizer)


def _signal_then_none(tokenizer):
    """Groups with signal for the parse.py / cli.py targets (items 0-1 of an unshuffled
    order), none for the others (every completion right): with a batch of 2, step 1 learns
    and step 2 keeps no group."""
    from swe_srl.policy.scripted import ScriptedPolicy

    def complete(conversation, index):
        name = next(f for f in FILES if f"src/{f}" in conversation[-1]["content"])
        if index == 1 and name in ("parse.py", "cli.py"):
            return "no think block, no action"
        return (f"<think>\nread it\n</think>\n<function=bash>\n"
                f"<parameter=command>cat src/{name}</parameter>\n</function>")

    return ScriptedPolicy(complete, tokenizer=tokenizer)


def test_srl_run_dynamic_sampling_and_update(tiny_model, dataset, tmp_path):
    from transformers import AutoTokenizer

    sampler = _scripted(AutoTokenizer.from_pretrained(tiny_model))
    result = run(dataset, tiny_model, tmp_path / "srl", "srl", sampler=sampler,
                 **{"run.max_steps": 2, "run.eval_every": 0, "data.shuffle": False})
    rows = [r for r in read_jsonl(tmp_path / "srl" / "metrics.jsonl") if "reward/mean" in r]
    assert [r["step"] for r in rows] == [1, 2]
    for r in rows:
        assert r["groups/kept"] == 4 and r["filter_rate"] > 0  # parse.py groups were dropped, refilled
        assert r["sampling_rounds"] == 2 and r["train/grad_norm"] > 0 and math.isfinite(r["train/loss"])
        assert r["train/sequences"] == 12  # 4 groups x G=3
    rollouts = read_jsonl(tmp_path / "srl" / "rollouts.jsonl")
    first = rollouts[0]
    # unshuffled order: the first draw is targets 0-3; one of them (parse.py) had no signal
    assert first["ids"][:4] == [f"train-{i}#0" for i in range(4)]
    assert first["data_position"] == {"epoch": 0, "cursor": len(first["ids"])}
    assert [len(g) for g in first["rewards"]] == [3] * len(first["ids"])
    assert first["rewards"][0] == [1.0, 1.0, 1.0]
    assert result.final_checkpoint is not None


def test_cli_train_then_report(tiny_model, dataset, tmp_path):
    from swe_srl.cli import main

    out = tmp_path / "cli"
    args = ["train", "--method", "sft", "--data", str(dataset), "--model", str(tiny_model), "-o", str(out),
            "--set", "run.max_steps=2", "--set", "run.progress=false", "--set", "run.eval_every=2",
            "--set", "optim.batch_size=4", "--set", "data.val_limit=2", "--set", "generation.max_new_tokens=8"]
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:  # the run exists: continuing it needs --resume
        main(args)
    assert info.value.code == 2
    with pytest.raises(SystemExit) as info:  # already at max_steps: resuming has nothing to do
        main(args + ["--resume"])
    assert info.value.code == 0
    with pytest.raises(SystemExit) as info:
        main(["report", str(out)])
    assert info.value.code == 0
    report = out / "report"
    assert (report / "summary.md").read_text().startswith("# Training run")
    for name in ("reward.png", "loss.png"):
        assert (report / name).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_report_of_an_srl_run_has_every_plot(tiny_model, dataset, tmp_path):
    from transformers import AutoTokenizer

    from swe_srl.report import write_report

    run(dataset, tiny_model, tmp_path / "srl", "srl", sampler=_scripted(AutoTokenizer.from_pretrained(tiny_model)),
        **{"run.max_steps": 2, "run.eval_every": 2, "generation.max_new_tokens": 8})
    report = write_report(tmp_path / "srl")
    assert {p.name for p in report.plots} == {"reward.png", "loss.png", "filter_rate.png", "reward_hist.png",
                                              "length.png"}
    text = report.summary.read_text()
    assert "| reward/mean |" in text and "| filter_rate |" in text and "![reward_hist](reward_hist.png)" in text
    assert -1 <= report.headline["reward/mean/last"] <= 1


def test_bad_inputs_are_one_line_errors(tiny_model, dataset, tmp_path):
    with pytest.raises(InputError, match="no step targets at"):
        run(tmp_path / "missing", tiny_model, tmp_path / "x")
    with pytest.raises(InputError, match="neither a model directory nor a training run"):
        run(dataset, tmp_path, tmp_path / "y")
    with pytest.raises(InputError, match="is neither 'demo', a file, a folder"):
        run(dataset, tiny_model, tmp_path / "z", "rlvr", **{"episodes.tasks": "no/such/tasks.jsonl"})
    with pytest.raises(ConfigError, match="needs a nonzero"):
        run(dataset, tiny_model, tmp_path / "w", "hybrid", **{"episodes.weights.similarity": 0.0,
                                                              "episodes.weights.tests": 0.0})


def test_kl_to_a_frozen_reference_when_beta_is_positive(tiny_model, dataset, tmp_path):
    from transformers import AutoTokenizer

    run(dataset, tiny_model, tmp_path / "kl", "srl", sampler=_scripted(AutoTokenizer.from_pretrained(tiny_model)),
        **{"run.max_steps": 2, "run.eval_every": 0, "grpo.beta": 0.1})
    kl = metric_rows(tmp_path / "kl", "train/kl")
    assert kl[0] == pytest.approx(0.0, abs=1e-6)  # step 1: the policy is still the reference
    assert kl[1] > 0  # step 2: it has moved away from it


def test_kl_reference_after_a_resume_is_the_initial_model(tiny_model, dataset, tmp_path):
    from transformers import AutoTokenizer

    from swe_srl.rl.session import Session

    out = tmp_path / "kl"
    extra = {"run.eval_every": 0, "grpo.beta": 0.1, "run.save_every": 1}
    sampler = _scripted(AutoTokenizer.from_pretrained(tiny_model))
    run(dataset, tiny_model, out, "srl", sampler=sampler, **extra, **{"run.max_steps": 2})
    # The start model is kept in the run (run.keep_start_model): the KL reference is read there.
    assert ckpt.latest_checkpoint(out).state["start_model"] == str(out / ckpt.START_MODEL_DIR)
    cfg = load_config(TrainConfig, "tiny-cpu", ["method=srl"] + small_overrides(
        dataset, tiny_model, out, **extra, **{"run.max_steps": 3}))
    with Session(cfg, resume=True, sampler=sampler) as session:
        assert session.step == 2
        reference = session.reference_model()
        assert not any(p.requires_grad for p in reference.parameters())
        assert_same_weights(reference.state_dict(), state_dict(tiny_model), atol=0.0)
        moved = session.model.state_dict()
        assert any(not torch.equal(moved[k], v) for k, v in reference.state_dict().items())
    result = run(dataset, tiny_model, out, "srl", resume=True, sampler=sampler, **extra, **{"run.max_steps": 3})
    assert result.steps == 3 and metric_rows(out, "train/kl")[-1] > 0


def test_resume_of_a_folder_without_a_run_is_an_error(tiny_model, dataset, tmp_path):
    (tmp_path / "typo").mkdir()
    with pytest.raises(InputError, match="holds no run"):
        run(dataset, tiny_model, tmp_path / "typo", "sft", resume=True)
    with pytest.raises(InputError, match="holds no run"):
        run(dataset, tiny_model, tmp_path / "missing", "sft", resume=True)


def test_learning_rate_schedules():
    from swe_srl.config import OptimConfig
    from swe_srl.rl.optim import lr_at

    warm = OptimConfig(lr=1.0, warmup_steps=4, schedule="linear")
    assert [lr_at(warm, s, 12) for s in range(4)] == [0.25, 0.5, 0.75, 1.0]
    assert lr_at(warm, 8, 12) == pytest.approx(0.5) and lr_at(warm, 12, 12) == 0.0
    cosine = OptimConfig(lr=2.0, schedule="cosine")
    assert lr_at(cosine, 0, 10) == 2.0 and lr_at(cosine, 5, 10) == pytest.approx(1.0) and lr_at(cosine, 10, 10) < 1e-12
    assert lr_at(OptimConfig(lr=3.0), 7, 10) == 3.0


def test_data_order_is_a_resumable_permutation_per_epoch():
    from swe_srl.rl.data_order import DataOrder

    order = DataOrder(5, seed=3)
    first = order.take(7)  # crosses into epoch 1
    assert sorted(first[:5]) == list(range(5)) and order.state() == {"epoch": 1, "cursor": 2}
    rest = order.take(6)
    again = DataOrder.from_state(5, 3, True, {"epoch": 1, "cursor": 2})
    assert again.take(6) == rest
    assert DataOrder(5, seed=3, shuffle=False).take(6) == [0, 1, 2, 3, 4, 0]
    assert DataOrder(5, seed=4).take(5) != first[:5] or DataOrder(5, seed=5).take(5) != first[:5]


def test_fresh_start_drops_rows_of_a_run_killed_before_its_first_checkpoint(tiny_model, dataset, tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / "metrics.jsonl").write_text('{"step": 1, "train/loss": 99.0}\n{"step": 2, "train/lo')  # torn last line
    run(dataset, tiny_model, out, "sft", resume=True, **{"run.max_steps": 1, "run.eval_every": 0})
    assert metric_rows(out, "train/loss") != [99.0] and len(metric_rows(out, "train/loss")) == 1
