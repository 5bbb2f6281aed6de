"""Two CPU processes (torchrun, gloo) take the same step as one process on the same global
batch: data sharded by rank, gradients all-reduced, rank 0 logging and checkpointing."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")
if not torch.distributed.is_available():  # pragma: no cover - depends on the torch build
    pytest.skip("torch.distributed is not available", allow_module_level=True)

from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from tests.rl.test_trainer import assert_same_update, assert_same_weights, metric_rows, state_dict, write_dataset  # noqa: E402

REPO = Path(__file__).resolve().parents[2]

# Run by one plain process and by torchrun with 2; the scripted sampler makes SRL rollouts
# identical however the batch is split, so the updates must agree.
SCRIPT = textwrap.dedent("""
    import sys
    from transformers import AutoTokenizer
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl.distributed import exit_process
    from swe_srl.rl.trainer import train
    from tests.rl.test_trainer import _scripted, _signal_then_none, small_overrides

    method, data, model, out = sys.argv[1:5]
    extra = {"run.max_steps": 2, "run.eval_every": 2, "run.save_every": 2, "data.val_limit": 3}
    tokenizer = AutoTokenizer.from_pretrained(model)
    sampler = _scripted(tokenizer) if method == "srl" else None
    if method == "srl-empty":  # step 1 learns, step 2 keeps no group (an empty batch)
        method, sampler = "srl", _signal_then_none(tokenizer)
        extra.update({"optim.batch_size": 2, "grpo.max_resample_rounds": 1, "data.shuffle": False,
                      "run.save_every": 1, "optim.weight_decay": 0.1})
    cfg = load_config(TrainConfig, "tiny-cpu", [f"method={method}"] + small_overrides(data, model, out, **extra))
    train(cfg, sampler=sampler)
    exit_process(0)  # as the CLI ends: see swe_srl.rl.distributed.exit_process
""")


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def launch(script: Path, method: str, data: Path, model: Path, out: Path, procs: int) -> None:
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    for key in ("WORLD_SIZE", "RANK", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", str(procs),
                 "--master_addr", "127.0.0.1", "--master_port", str(free_port())] if procs > 1 else [sys.executable])
    # A session of its own, so a hang is cleaned up with every worker torchrun started.
    proc = subprocess.Popen(launcher + [str(script), method, str(data), str(model), str(out)], env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO,
                            start_new_session=True)
    try:
        _, stderr = proc.communicate(timeout=300)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    assert proc.returncode == 0, stderr[-3000:]


@pytest.mark.slow
@pytest.mark.parametrize("method", ["sft", "srl"])
def test_two_processes_take_the_same_step_as_one(method, tiny_model_dir, tmp_path):
    data = write_dataset(tmp_path / "data")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    launch(script, method, data, tiny_model_dir, tmp_path / "one", 1)
    launch(script, method, data, tiny_model_dir, tmp_path / "two", 2)
    one, two = tmp_path / "one", tmp_path / "two"

    for key in ("train/loss", "train/grad_norm", "val/reward", "val/distinct_answers"):
        assert metric_rows(two, key) == pytest.approx(metric_rows(one, key), rel=1e-4, abs=1e-6), key
    if method == "srl":
        for key in ("groups/kept", "groups/drawn", "reward/mean", "filter_rate"):
            assert metric_rows(two, key) == metric_rows(one, key), key
    # the same step targets in the same order, whichever rank processed them
    strip = [{k: r[k] for k in ("step", "ids", "data_position")} for r in read_jsonl(one / "rollouts.jsonl")]
    assert strip == [{k: r[k] for k in ("step", "ids", "data_position")} for r in read_jsonl(two / "rollouts.jsonl")]
    a, b = ckpt.latest_checkpoint(one), ckpt.latest_checkpoint(two)
    assert a.step == b.step == 2 and b.state["world_size"] == 2
    assert len(b.rng_states()) == 2, "every rank's RNG state is saved"
    assert_same_update(state_dict(a.model_dir), state_dict(b.model_dir), lr=1e-3 * 2)


@pytest.mark.slow
def test_an_empty_batch_takes_no_optimizer_step_on_one_or_two_processes(tiny_model_dir, tmp_path):
    # Step 2 keeps no group: AdamW must not move the weights on momentum and weight decay alone,
    # and one process and two agree on it.
    data = write_dataset(tmp_path / "data")
    script = tmp_path / "run.py"
    script.write_text(SCRIPT)
    for name, procs in (("one", 1), ("two", 2)):
        launch(script, "srl-empty", data, tiny_model_dir, tmp_path / name, procs)
        run_dir = tmp_path / name
        assert metric_rows(run_dir, "groups/kept") == [2, 0]
        assert metric_rows(run_dir, "train/skipped_update") == [0.0, 1.0]
        first, second = ckpt.list_checkpoints(run_dir)  # keep_checkpoints 2: steps 1 and 2
        assert (first.step, second.step) == (1, 2)
        assert_same_weights(state_dict(first.model_dir), state_dict(second.model_dir), atol=0.0)
    one, two = ckpt.latest_checkpoint(tmp_path / "one"), ckpt.latest_checkpoint(tmp_path / "two")
    assert_same_update(state_dict(one.model_dir), state_dict(two.model_dir), lr=1e-3 * 2)


def test_the_run_timeout_reaches_init_process_group(monkeypatch):
    """A real one-process group (gloo on CPU), started by init_distributed as under torchrun: its
    timeout is the one asked for (WORLD_SIZE says 2 so the group is started; the rendezvous is
    made a group of one)."""
    import datetime

    from swe_srl.rl import distributed

    real = distributed.dist.init_process_group
    seen = []

    def group_of_one(backend, timeout=None):
        seen.append(timeout)
        real(backend, timeout=timeout, init_method=f"tcp://127.0.0.1:{free_port()}", world_size=1, rank=0)

    monkeypatch.setattr(distributed.dist, "init_process_group", group_of_one)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "0")
    try:
        d = distributed.init_distributed(3 * 3600)
        group = distributed.dist.group.WORLD._get_backend(d.device)
        assert seen == [datetime.timedelta(hours=3)] and group.options._timeout == datetime.timedelta(hours=3)
    finally:
        distributed.shutdown_distributed()
    distributed.init_distributed(None)  # no timeout asked: torch's default (None passed on)
    distributed.shutdown_distributed()
    assert seen[1] is None


@pytest.mark.parametrize("method, setting, expected", [
    ("srl", 0, None), ("sft", 0, None), ("rlvr", 0, 3 * 3600.0), ("hybrid", 0, 3 * 3600.0), ("srl", 900, 900.0)])
def test_train_starts_the_process_group_with_the_methods_timeout(method, setting, expected, monkeypatch):
    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.rl import trainer

    class Started(Exception):
        pass

    def record(timeout_s=None):
        raise Started(timeout_s)

    monkeypatch.setattr(trainer, "init_distributed", record)
    cfg = load_config(TrainConfig, None, {"method": method, "run.dist_timeout_s": setting})
    with pytest.raises(Started) as info:
        trainer.train(cfg)
    assert info.value.args[0] == expected


EXIT_SCRIPT = textwrap.dedent("""
    import sys
    import torch
    from torch.distributed.fsdp import fully_shard
    from swe_srl.rl import distributed, parallel

    d = distributed.init_distributed()
    distributed.exit_process(5)  # no group started yet: returns
    print("returned")
    model = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Linear(4, 4))
    parallel.ensure_process_group(d)  # fsdp in one process: a group of one
    fully_shard(model)
    model(torch.ones(2, 4)).sum().backward()
    distributed.shutdown_distributed()
    print("buffered, not yet flushed")  # stdout is a pipe: block-buffered
    if sys.argv[1] == "cli":
        from swe_srl import cli
        sys.argv = ["swe-srl", *sys.argv[2:]]
        cli.entry()
    distributed.exit_process(3)
    print("never printed")
""")


@pytest.mark.parametrize("how, args, code, out", [
    ("direct", [], 3, ""),
    ("cli", ["--version"], 0, "."),  # the version line
    ("cli", ["train", "--config", "no-such-preset"], 2, ""),
])
def test_a_process_that_started_a_group_exits_with_its_code_and_its_output(how, args, code, out, tmp_path):
    """exit_process (the CLI's end after a run that started a group): a no-op before any group;
    after one, the code is the exit status, buffered output is flushed and nothing after runs."""
    done = subprocess.run([sys.executable, "-c", EXIT_SCRIPT, how, *args], capture_output=True, text=True,
                          timeout=300, cwd=tmp_path,
                          env={**os.environ, "PYTHONPATH": str(REPO), "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"})
    assert done.returncode == code, done.stderr[-2000:]
    lines = done.stdout.splitlines()
    assert lines[:2] == ["returned", "buffered, not yet flushed"] and "never printed" not in done.stdout
    assert out in "".join(lines[2:])
    if code == 2:
        assert "error:" in done.stderr and "Traceback" not in done.stderr
