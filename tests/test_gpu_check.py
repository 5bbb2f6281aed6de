"""benchmarks/gpu/srl_steps.py, the GPU check of paper-scale training, on CPU with the tiny
shape: the script itself runs the production loop (fsdp, a weight push per step with vLLM)
and reports what the GPU run will report."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.policy.test_vllm import REPO, VLLM_PYTHON, _env, needs_vllm

SCRIPT = REPO / "benchmarks" / "gpu" / "srl_steps.py"
SMALL = ["--shape", "tiny", "--steps", "2", "--batch", "2", "--group", "3", "--max-new-tokens", "12",
         "--max-prompt-tokens", "1024"]


def run_script(python, args, out) -> tuple[subprocess.CompletedProcess, list[dict]]:
    proc = subprocess.run([str(python), str(SCRIPT), *args, "--out", str(out)], env=_env(), capture_output=True,
                          text=True, timeout=900)
    results = json.loads((out / "result.json").read_text()) if (out / "result.json").is_file() else []
    return proc, results


def check_result(result: dict, engine: str) -> None:
    assert result["shape"] == "tiny" and result["engine"] == engine and result["device"] == "cpu"
    assert result["steps"] == 2 and result["timed_steps"] == 1
    assert result["linear_params"] > 0 and result["update_s"] > 0 and result["rollout_s"] > 0
    # every timed step trained on the group's sequences and sampled tokens
    assert result["update_tokens_per_s"] > 0 and result["rollout_tokens_per_s"] > 0
    assert result["mfu_update"] is None  # no GPU, no peak to divide by


@pytest.mark.slow
def test_cpu_smoke_run_with_hf_rollouts(tmp_path):
    proc, results = run_script(sys.executable, [*SMALL, "--engine", "hf", "--variants", "base", "lora"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert [r["variant"] for r in results] == ["base", "lora"]
    for result in results:
        check_result(result, "hf")
        assert result["weights_version"] is None  # hf samples with the trained model itself
        assert result["is_weight_max"] >= 1.0 and result["load_rss_gib"] > 0
    table = (tmp_path / "result.md").read_text()
    assert table.count("\n") == 4 and "| tiny | base | cpu | hf |" in table and "| tiny | lora | cpu | hf |" in table


@needs_vllm
def test_cpu_smoke_run_with_fsdp_and_vllm(tmp_path):
    proc, results = run_script(VLLM_PYTHON, [*SMALL, "--engine", "vllm", "--vllm-memory", "0.05"], tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    check_result(results[0], "vllm")
    assert results[0]["weights_version"] == 2.0  # a push after each of the 2 steps
    assert results[0]["push_s"] > 0
    assert results[0]["logprob_gap"] < 1e-5  # float32 on both sides on CPU


def test_vllm_engine_without_vllm_is_a_one_line_error(tmp_path):
    pytest.importorskip("torch")
    try:
        import vllm  # noqa: F401
        pytest.skip("vllm is installed in this environment")
    except ImportError:
        pass
    proc, results = run_script(sys.executable, ["--shape", "tiny", "--engine", "vllm"], tmp_path)
    assert proc.returncode == 2 and not results
    assert proc.stderr.strip().splitlines() == ["error: --engine vllm needs the vllm package (or run with --engine hf)"]
