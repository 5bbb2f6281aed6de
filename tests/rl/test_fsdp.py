"""``run.parallel=fsdp`` on two CPU processes (torchrun, gloo), real runs on the tiny model:
the same steps as one ddp process (sft with activation checkpointing and token-budget
micro-batches; srl with every kept group on rank 0, so rank 1 runs only padding passes, a
sharded KL reference and chunked log-probs; LoRA with CPU offload), kill -9 then ``--resume``,
the export that ``--model`` and ``eval`` load, and the per-rank memory of weights, gradients
and AdamW states against ddp's."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl.export import export_checkpoint  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from tests.rl.test_distributed import free_port  # noqa: E402
from tests.rl.test_trainer import (  # noqa: E402
    FILES,
    _scripted,
    assert_same_update,
    assert_same_weights,
    metric_rows,
    run,
    small_overrides,
    state_dict,
    write_dataset,
)

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow

# One training run: METHOD DATA MODEL OUT SAMPLER '{"dotted.key": value, ...}'.
SCRIPT = textwrap.dedent("""
    import json, sys
    from transformers import AutoTokenizer
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.distributed import exit_process
    from swe_srl.rl.trainer import train
    from tests.rl.test_fsdp import make_sampler
    from tests.rl.test_trainer import small_overrides

    method, data, model, out, sampler, extra = sys.argv[1:7]
    cfg = load_config(TrainConfig, "tiny-cpu",
                      [f"method={method}"] + small_overrides(data, model, out, **json.loads(extra)))
    train(cfg, sampler=make_sampler(sampler, AutoTokenizer.from_pretrained(model)))
    exit_process(0)  # as the CLI ends: see swe_srl.rl.distributed.exit_process
""")

# Per-rank bytes of weights, gradients and AdamW states after one step, ddp then fsdp: OUT DATA MODEL.
MEMORY_SCRIPT = textwrap.dedent("""
    import json, sys
    from pathlib import Path
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.distributed import exit_process, shutdown_distributed
    from swe_srl.rl.logprobs import TokenBatch, completion_logprobs
    from swe_srl.rl.parallel import state_bytes
    from swe_srl.rl.session import Session
    from swe_srl.rl.sft import encode_example, sft_step
    from tests.rl.test_trainer import small_overrides

    out, data, model = sys.argv[1:4]
    for parallel in ("ddp", "fsdp"):
        cfg = load_config(TrainConfig, "tiny-cpu", ["method=sft"] + small_overrides(
            data, model, Path(out) / parallel, **{"run.parallel": parallel, "run.precision": "bf16",
                                                   "run.eval_every": 0, "run.max_steps": 1}))
        with Session(cfg) as s:
            sft_step(s, list(range(cfg.optim.batch_size)))  # AdamW states exist from here on
            prompt, label = encode_example(s.tokenizer, s.items[0], cfg.sft)  # gradients: one more backward
            batch = TokenBatch.build([prompt], [label], s.tokenizer.pad_token_id, s.dist.device)
            (-completion_logprobs(s.model, batch).sum()).backward()
            sizes = state_bytes(s.model, s.optimizer)
            sizes["param_dtypes"] = sorted({str(p.dtype) for p in s.model.parameters()})
            Path(out, f"{parallel}-{s.dist.rank}.json").write_text(json.dumps(sizes))
    shutdown_distributed()
    exit_process(0)  # as the CLI ends: see swe_srl.rl.distributed.exit_process
""")


def _rank0_signal(tokenizer: Any) -> Any:
    """Signal (one malformed completion per group) only for even-numbered targets: with an
    unshuffled order and two processes every kept group is rank 0's, and rank 1 has nothing to
    learn from (zero micro-batches of its own)."""
    from swe_srl.policy.scripted import ScriptedPolicy

    def complete(conversation: list[dict], index: int) -> str:
        name = next(f for f in FILES if f"src/{f}" in conversation[-1]["content"])
        if index == 1 and FILES.index(name) % 2 == 0:
            return "no think block, no action"
        return (f"<think>\nread it\n</think>\n<function=bash>\n"
                f"<parameter=command>cat src/{name}</parameter>\n</function>")

    return ScriptedPolicy(complete, tokenizer=tokenizer)


def make_sampler(name: str, tokenizer: Any) -> Any:
    """None: the trained policy samples itself; scripted: tests.rl.test_trainer's; rank0: see
    :func:`_rank0_signal`."""
    return {"none": lambda t: None, "scripted": _scripted, "rank0": _rank0_signal}[name](tokenizer)


def launch(script: str, args: list[str], procs: int, tmp: Path, *, timeout: float = 300) -> None:
    """Run ``script`` under torchrun with ``procs`` processes; fails on a non-zero exit or a hang."""
    path = tmp / f"script-{abs(hash(script))}.py"
    path.write_text(script)
    proc = subprocess.Popen(_launcher(procs) + [str(path)] + args, env=_env(), stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=REPO, start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:  # a deadlock: every worker torchrun started goes with it
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]


def _env() -> dict[str, str]:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    return env


def _launcher(procs: int) -> list[str]:
    return [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
            "--master_addr", "127.0.0.1", "--master_port", str(free_port())]


def train_fsdp(tmp: Path, method: str, data: Path, model: Path, out: Path, sampler: str = "none", **extra: Any) -> Path:
    launch(SCRIPT, [method, str(data), str(model), str(out), sampler, json.dumps({"run.parallel": "fsdp", **extra})],
           2, tmp)
    return out


def exported(run_dir: Path, tmp: Path) -> dict:
    """The weights of a run's latest checkpoint, through ``swe-srl export``."""
    return state_dict(export_checkpoint(run_dir, tmp / f"export-{run_dir.name}"))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return write_dataset(tmp_path_factory.mktemp("data"))


SFT = {"run.max_steps": 2, "run.eval_every": 2, "run.save_every": 2, "data.val_limit": 3}


def test_fsdp_sft_with_activation_checkpointing_takes_one_process_steps(tiny_model_dir, data, tmp_path):
    one = run(data, tiny_model_dir, tmp_path / "one", "sft", **SFT).run_dir
    two = train_fsdp(tmp_path, "sft", data, tiny_model_dir, tmp_path / "two", **SFT,
                     **{"run.activation_checkpointing": True, "optim.max_tokens_per_microbatch": 200})
    for key in ("train/loss", "train/grad_norm", "val/reward"):
        assert metric_rows(two, key) == pytest.approx(metric_rows(one, key), rel=1e-4, abs=1e-6), key
    found = ckpt.latest_checkpoint(two)
    assert found.sharded and found.state["parallel"] == "fsdp" and len(found.rng_states()) == 2
    assert sorted(p.name for p in (found.path / ckpt.SHARDED_DIR).iterdir()) == [".metadata", "__0_0.distcp",
                                                                                "__1_0.distcp"]
    assert_same_update(state_dict(ckpt.latest_checkpoint(one).model_dir), exported(two, tmp_path), lr=1e-3 * 2)


def test_fsdp_srl_with_every_group_on_one_rank_takes_one_process_steps(tiny_model_dir, data, tmp_path):
    # Rank 1 keeps no group: its two micro-batches of the update are padding passes, through
    # the policy and the sharded KL reference alike. A deadlock fails at launch()'s timeout.
    extra = {"run.max_steps": 2, "run.eval_every": 2, "run.save_every": 2, "data.val_limit": 3,
             "data.shuffle": False, "optim.grad_accumulation": 2, "grpo.beta": 0.1, "optim.logprob_chunk_tokens": 4}
    one = run(data, tiny_model_dir, tmp_path / "one", "srl", sampler=make_sampler("rank0", _tokenizer(tiny_model_dir)),
              **extra).run_dir
    two = train_fsdp(tmp_path, "srl", data, tiny_model_dir, tmp_path / "two", "rank0", **extra)
    assert metric_rows(two, "groups/kept") == [4, 4] and metric_rows(two, "sampling_rounds") == [2, 2]
    for row in read_jsonl(two / "rollouts.jsonl"):  # draws alternate ranks: rank 0 holds the even targets
        for item, rewards in zip(row["ids"], row["rewards"]):
            assert (len(set(rewards)) > 1) == (int(item.split("-")[1].split("#")[0]) % 2 == 0), item
    for key in ("train/loss", "train/grad_norm", "train/kl", "reward/mean", "val/reward"):
        assert metric_rows(two, key) == pytest.approx(metric_rows(one, key), rel=1e-4, abs=1e-6), key
    assert metric_rows(two, "train/kl")[1] > 0
    assert_same_update(state_dict(ckpt.latest_checkpoint(one).model_dir), exported(two, tmp_path), lr=1e-3 * 2)


def _tokenizer(model: Path) -> Any:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(model)


def test_fsdp_lora_with_cpu_offload_takes_one_process_steps_resumes_and_exports_merged(tiny_model_dir, data,
                                                                                        tmp_path):
    lora = {**SFT, "model.lora": {"r": 4, "alpha": 8, "dropout": 0.0, "target_modules": ["q_proj", "v_proj"]},
            "run.eval_every": 0, "run.save_every": 1}
    one = run(data, tiny_model_dir, tmp_path / "one", "sft", **lora).run_dir
    two = train_fsdp(tmp_path, "sft", data, tiny_model_dir, tmp_path / "two", **lora, **{"run.cpu_offload": True})
    assert metric_rows(two, "train/loss") == pytest.approx(metric_rows(one, "train/loss"), rel=1e-4)
    # ddp keeps the adapter (merged into the start model on export); fsdp the whole sharded model
    assert (ckpt.latest_checkpoint(one).model_dir / "adapter_config.json").is_file()
    merged_one, merged_two = exported(one, tmp_path), exported(two, tmp_path)
    assert not any("lora" in k for k in merged_two)
    assert_same_update(merged_one, merged_two, lr=1e-3 * 2)
    base = state_dict(tiny_model_dir)
    moved = [k for k in base if not torch.equal(base[k], merged_two[k])]
    assert moved and all("q_proj" in k or "v_proj" in k for k in moved), "LoRA moves only its targets"
    # Both resume to step 3 (adapter + optimizer.pt; the sharded state) and end where a run
    # that never stopped ends.
    three = {**lora, "run.max_steps": 3}
    run(data, tiny_model_dir, one, "sft", resume=True, **three)
    launch(SCRIPT.replace("train(cfg, ", "train(cfg, resume=True, "),
           ["sft", str(data), str(tiny_model_dir), str(two), "none",
            json.dumps({"run.parallel": "fsdp", "run.cpu_offload": True, **three})], 2, tmp_path)
    straight = run(data, tiny_model_dir, tmp_path / "straight", "sft", **three).run_dir
    assert metric_rows(two, "train/loss") == pytest.approx(metric_rows(straight, "train/loss"), rel=1e-4)
    reference = exported(straight, tmp_path)
    assert_same_weights(exported(one, tmp_path / "again"), reference, 1e-6)
    assert_same_update(exported(two, tmp_path / "again"), reference, lr=1e-3 * 2)


def test_activation_checkpointing_leaves_a_ddp_step_unchanged(tiny_model_dir, data, tmp_path):
    plain = run(data, tiny_model_dir, tmp_path / "plain", "sft", **{"run.max_steps": 1, "run.eval_every": 0})
    ac = run(data, tiny_model_dir, tmp_path / "ac", "sft",
             **{"run.max_steps": 1, "run.eval_every": 0, "run.activation_checkpointing": True})
    assert metric_rows(ac.run_dir, "train/grad_norm") == pytest.approx(metric_rows(plain.run_dir, "train/grad_norm"),
                                                                       rel=1e-5)
    assert_same_weights(state_dict(plain.final_checkpoint / "model"), state_dict(ac.final_checkpoint / "model"), 1e-6)


def test_cpu_offload_needs_fsdp():
    from swe_srl.config import RunConfig
    from swe_srl.errors import ConfigError

    with pytest.raises(ConfigError, match="run.cpu_offload needs run.parallel=fsdp"):
        RunConfig(cpu_offload=True)


def test_kill_9_then_resume_under_fsdp_matches_an_uninterrupted_run(tiny_model_dir, data, tmp_path):
    # The policy samples itself (per-rank seeds and RNG streams, uneven generation lengths
    # inside the gathered weights); checkpoints every step.
    settings = {"run.max_steps": 4, "run.save_every": 1, "run.eval_every": 0, "generation.max_new_tokens": 8,
                "grpo.max_resample_rounds": 1, "grpo.dynamic_sampling_eps": -1.0, "run.parallel": "fsdp"}

    def cli(out: Path) -> list[str]:
        args = _launcher(2) + ["-m", "swe_srl.cli", "train", "--method", "srl", "-o", str(out)]
        for item in small_overrides(data, tiny_model_dir, out, **settings):
            args += ["--set", item]
        return args

    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli(killed), env=_env(), cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 240
        while ckpt.latest_checkpoint(killed) is None:
            assert proc.poll() is None, f"training exited ({proc.returncode}): {proc.stderr.read()[-2000:]}"
            assert time.monotonic() < deadline, "no checkpoint in time"
            time.sleep(0.05)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)  # torchrun and both workers, no clean-up
        proc.wait()
    at_kill = ckpt.latest_checkpoint(killed).step
    assert at_kill < settings["run.max_steps"], "killed before the end"

    for out, extra in ((killed, ["--resume"]), (tmp_path / "reference", [])):
        done = subprocess.run(cli(out) + extra, env=_env(), cwd=REPO, capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]

    def drawn(run_dir: Path) -> list[tuple]:
        return [(r["step"], r["ids"], r["data_position"], r["rewards"]) for r in read_jsonl(run_dir / "rollouts.jsonl")]

    assert drawn(killed) == drawn(tmp_path / "reference")
    assert [r["step"] for r in read_jsonl(killed / "metrics.jsonl")] == [1, 2, 3, 4]
    assert_same_weights(exported(killed, tmp_path), exported(tmp_path / "reference", tmp_path), 1e-6)


def test_export_of_a_sharded_run_is_what_model_and_eval_load(tiny_model_dir, data, tmp_path):
    from swe_srl.cli import main
    from swe_srl.errors import InputError

    two = train_fsdp(tmp_path, "sft", data, tiny_model_dir, tmp_path / "two",
                     **{"run.max_steps": 2, "run.save_every": 1, "run.eval_every": 0, "run.keep_checkpoints": 2})
    with pytest.raises(InputError, match=r"sharded \(run.parallel=fsdp\).*swe-srl export"):
        ckpt.resolve_model_dir(two)
    with pytest.raises(InputError, match="written with run.parallel=fsdp, this run has ddp"):
        run(data, tiny_model_dir, two, "sft", resume=True, **{"run.max_steps": 3, "run.eval_every": 0})
    with pytest.raises(SystemExit) as info:
        main(["export", str(two), "--step", "1", "-o", str(tmp_path / "step1")])
    assert info.value.code == 0
    step1, step2 = state_dict(tmp_path / "step1"), exported(two, tmp_path)
    assert any(not torch.equal(step1[k], step2[k]) for k in step1), "--step picks the older checkpoint"
    with pytest.raises(SystemExit) as info:  # the folder exists: never overwritten
        main(["export", str(two), "-o", str(tmp_path / "step1")])
    assert info.value.code == 2
    model = tmp_path / "export-two"
    # eval --mode steps and train --model take the folder as any model
    with pytest.raises(SystemExit) as info:
        main(["eval", "--mode", "steps", "--model", str(model), "--data", str(data / "val.jsonl"), "--limit", "2",
              "--max-new-tokens", "8", "-o", str(tmp_path / "eval")])
    assert info.value.code == 0
    result = run(data, model, tmp_path / "next", "sft", **{"run.max_steps": 1, "run.eval_every": 0})
    assert ckpt.latest_checkpoint(result.run_dir).state["start_model"] == str(model)
    # A damaged shard is caught by the manifest: --resume falls back to the step before
    shard = two / "checkpoints" / "step-00000002" / ckpt.SHARDED_DIR / "__1_0.distcp"
    shard.write_bytes(shard.read_bytes()[:-10])
    found = ckpt.find_resumable(two)
    assert found.checkpoint.step == 1 and found.skipped[0][0] == "step-00000002"
    assert "sharded/__1_0.distcp" in found.skipped[0][1]


def test_fsdp_holds_about_half_of_ddps_bytes_per_rank_with_two(tiny_model_dir, data, tmp_path):
    launch(MEMORY_SCRIPT, [str(tmp_path), str(data), str(tiny_model_dir)], 2, tmp_path)
    sizes = {(p, r): json.loads((tmp_path / f"{p}-{r}.json").read_text()) for p in ("ddp", "fsdp") for r in (0, 1)}
    for rank in (0, 1):
        ddp, fsdp = sizes["ddp", rank], sizes["fsdp", rank]
        assert ddp["param_dtypes"] == fsdp["param_dtypes"] == ["torch.float32"], "bf16 compute, float32 masters"
        for key in ("params", "grads", "optimizer"):
            assert ddp[key] > 0 and 0.4 < fsdp[key] / ddp[key] < 0.6, (key, rank, fsdp[key], ddp[key])
