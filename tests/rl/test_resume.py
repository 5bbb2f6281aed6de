"""``kill -9`` a ``swe-srl train`` process after its first checkpoint, then ``--resume``: the run
continues from the last checkpoint with the same data order (and the same samples and
weights) as a run that was never interrupted."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.rl import checkpoint as ckpt  # noqa: E402
from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from tests.rl.test_trainer import assert_same_weights, run, small_overrides, state_dict, write_dataset  # noqa: E402

SETTINGS = {"run.max_steps": 4, "run.save_every": 1, "run.eval_every": 0, "generation.max_new_tokens": 8,
            "grpo.max_resample_rounds": 1, "grpo.dynamic_sampling_eps": -1.0}


def cli_args(data: Path, model: Path, out: Path) -> list[str]:
    args = [sys.executable, "-m", "swe_srl.cli", "train", "--method", "srl", "-o", str(out)]
    for item in small_overrides(data, model, out, **SETTINGS):
        args += ["--set", item]
    return args


def wait_for_checkpoint(run_dir: Path, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while ckpt.latest_checkpoint(run_dir) is None:
        if proc.poll() is not None:
            raise AssertionError(f"training exited ({proc.returncode}) before its first checkpoint: "
                                 f"{proc.stderr.read()[-2000:]}")
        if time.monotonic() > deadline:
            raise AssertionError("no checkpoint in time")
        time.sleep(0.05)


def test_kill_9_then_resume_matches_an_uninterrupted_run(tiny_model_dir, tmp_path):
    data = write_dataset(tmp_path / "data")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    killed = tmp_path / "killed"
    proc = subprocess.Popen(cli_args(data, tiny_model_dir, killed), env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)
    try:
        wait_for_checkpoint(killed, proc)
    finally:
        if proc.poll() is None:
            os.kill(proc.pid, signal.SIGKILL)
        proc.wait()
    at_kill = ckpt.latest_checkpoint(killed).step
    assert at_kill < SETTINGS["run.max_steps"], "killed before the end"

    resumed = subprocess.run(cli_args(data, tiny_model_dir, killed) + ["--resume"], env=env,
                             capture_output=True, text=True, timeout=600)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert ckpt.latest_checkpoint(killed).step == SETTINGS["run.max_steps"]

    reference = run(data, tiny_model_dir, tmp_path / "reference", "srl", **SETTINGS)

    def drawn(run_dir: Path) -> list[tuple]:
        return [(r["step"], r["ids"], r["data_position"], r["rewards"])
                for r in read_jsonl(run_dir / "rollouts.jsonl")]

    assert drawn(killed) == drawn(reference.run_dir)
    steps = [r["step"] for r in read_jsonl(killed / "metrics.jsonl")]
    assert steps == sorted(set(steps)) == [1, 2, 3, 4], "rows the killed run wrote past its checkpoint are gone"
    assert_same_weights(state_dict(ckpt.latest_checkpoint(killed).model_dir),
                        state_dict(reference.final_checkpoint / "model"), 1e-5)
