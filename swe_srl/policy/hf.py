"""Sampling with a transformers causal LM (CPU or GPU), optionally wrapped in LoRA.

``HFPolicy.model`` is the very module the trainer optimises, so samples always come from the
current weights. Log-probs are recomputed from the raw logits of each step as
``log_softmax(logits / temperature)`` at the sampled id: the distribution the token was drawn
from before top-p truncation, which is also what the trainer recomputes for its ratios.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import GenerationConfig as HFGenerationConfig
from transformers import LogitsProcessor, LogitsProcessorList

from ..errors import ConfigError, InputError
from .base import (
    Conversation,
    GenerationConfig,
    LoraOptions,
    PolicyConfig,
    Sample,
    cut_at_stop,
    render_conversation,
)

_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}


@contextmanager
def _bare_generation_config(model: Any) -> Iterator[None]:
    """While sampling, the model's generation_config holds only its special token ids, so no
    sampling setting of the checkpoint's generation_config.json (Qwen2.5-Coder-Instruct: top_k
    20, repetition_penalty 1.05) reaches the sampler. The saved checkpoint keeps its file."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model  # peft wraps it
    saved = inner.generation_config
    inner.generation_config = HFGenerationConfig(
        bos_token_id=saved.bos_token_id, eos_token_id=saved.eos_token_id, pad_token_id=saved.pad_token_id,
        decoder_start_token_id=saved.decoder_start_token_id)
    try:
        yield
    finally:
        inner.generation_config = saved


def resolve_device(device: str) -> torch.device:
    """"auto" -> the first CUDA device when there is one, else CPU."""
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(device)


def resolve_dtype(dtype: str, device: torch.device) -> torch.dtype:
    """"auto" -> bfloat16 on a GPU (the paper trains in bf16), float32 on CPU."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else torch.float32
    return _DTYPES[dtype]


def apply_lora(model: Any, options: LoraOptions) -> Any:
    """Wrap ``model`` in trainable LoRA adapters (fresh, or loaded from ``adapter_path``)."""
    try:
        import peft
    except ImportError as exc:
        raise ConfigError("LoRA needs the 'peft' package: pip install 'swe-srl[train]'") from exc
    if options.adapter_path:
        if not Path(options.adapter_path).is_dir():
            raise InputError(f"LoRA adapter directory not found: {options.adapter_path}")
        return peft.PeftModel.from_pretrained(model, options.adapter_path, is_trainable=True)
    config = peft.LoraConfig(
        r=options.r,
        lora_alpha=options.alpha,
        lora_dropout=options.dropout,
        target_modules=list(options.target_modules),
        task_type="CAUSAL_LM",
    )
    return peft.get_peft_model(model, config)


@dataclass
class _Row:
    """One sequence of a generate batch, before it becomes a Sample."""

    prompt_ids: list[int]
    ids: list[int]
    logprobs: list[float]


class _SampledLogprobs(LogitsProcessor):
    """Records ``log_softmax(logits / T)`` at each sampled token while generate runs, holding one
    step's distribution at a time (what ``output_logits`` would keep for every step).

    Passed to ``generate`` as a custom processor, it runs before the temperature and top-p
    warpers generate appends after custom ones, on logits that nothing before it changed (the
    bare generation config enables no other processor): the raw next-token logits. At step t it
    reads the token sampled at step t - 1 (the last column of ``input_ids``); :meth:`finish`
    reads the last step's from the returned sequences."""

    def __init__(self, temperature: float) -> None:
        self.temperature = temperature
        self.previous: torch.Tensor | None = None
        self.steps: list[torch.Tensor] = []

    def __call__(self, input_ids: torch.Tensor, scores: torch.Tensor) -> torch.Tensor:
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, input_ids[:, -1:]).squeeze(-1))
        self.previous = torch.log_softmax(scores.float() / self.temperature, dim=-1)
        return scores

    def finish(self, sequences: torch.Tensor) -> torch.Tensor:
        """``[batch, generated steps]`` log-probs of the sampled tokens."""
        if self.previous is not None:
            self.steps.append(self.previous.gather(-1, sequences[:, -1:]).squeeze(-1))
            self.previous = None
        if not self.steps:
            return torch.zeros((sequences.shape[0], 0))
        return torch.stack(self.steps, dim=1)


class HFPolicy:
    """A transformers model + tokenizer that samples completions (see module docstring)."""

    def __init__(self, model: Any, tokenizer: Any, *, max_batch_size: int = 64) -> None:
        if tokenizer.pad_token_id is None:
            raise ConfigError("the tokenizer has no pad token; set one before sampling")
        self.model = model
        self.tokenizer = tokenizer
        self.max_batch_size = max_batch_size
        # Sample under bf16 autocast (float32 weights): set by a run that trains with
        # run.precision bf16, so its rollouts, validation and update see the same numerics.
        self.autocast_bf16 = False
        eos = getattr(model.generation_config, "eos_token_id", None) or tokenizer.eos_token_id
        eos_ids = set(eos if isinstance(eos, (list, tuple)) else [eos])
        eos_ids.add(tokenizer.eos_token_id)
        eos_ids.discard(None)
        self.eos_ids = frozenset(int(i) for i in eos_ids)

    @classmethod
    def from_config(cls, config: PolicyConfig) -> HFPolicy:
        """Load model and tokenizer from ``config.model`` (and LoRA when configured)."""
        from transformers import AutoModelForCausalLM, AutoTokenizer

        path = config.model
        if not path:
            raise ConfigError("the hf policy needs a model path")
        if Path(path).exists() and not (Path(path) / "config.json").is_file():
            raise InputError(f"{path} is not a model directory (no config.json)")
        device = resolve_device(config.device)
        try:
            tokenizer = AutoTokenizer.from_pretrained(
                config.tokenizer or path, trust_remote_code=config.trust_remote_code
            )
            model = AutoModelForCausalLM.from_pretrained(
                path,
                dtype=resolve_dtype(config.dtype, device),
                trust_remote_code=config.trust_remote_code,
            )
        except OSError as exc:  # missing files / hub id while offline
            raise InputError(f"cannot load model {path!r}: {str(exc).splitlines()[0]}") from exc
        model.to(device)
        if config.lora is not None:
            model = apply_lora(model, config.lora)
        policy = cls(model, tokenizer, max_batch_size=config.max_batch_size)
        policy.autocast_bf16 = config.autocast_bf16
        return policy

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def save(self, out_dir: str | Path) -> Path:
        """Save the weights (only the adapter for a LoRA model) and the tokenizer."""
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        self.model.save_pretrained(out)
        self.tokenizer.save_pretrained(out)
        return out

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[list[Sample]]:
        """Sample ``config.n`` completions per conversation (see :class:`~.base.Policy`)."""
        prompts = [
            self.tokenizer(render_conversation(self.tokenizer, c), add_special_tokens=False)[
                "input_ids"
            ]
            for c in conversations
        ]
        return self.generate_from_ids(prompts, config)

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[list[Sample]]:
        """Like :meth:`generate`, for prompts already tokenised."""
        per_call = max(1, self.max_batch_size // config.n)
        out: list[list[Sample]] = []
        with torch.random.fork_rng(devices=self._rng_devices(), enabled=config.seed is not None):
            if config.seed is not None:
                torch.manual_seed(config.seed)
            for start in range(0, len(prompts), per_call):
                rows = self._sample_batch(prompts[start : start + per_call], config)
                samples = [self._to_sample(row, config) for row in rows]
                out += [samples[i : i + config.n] for i in range(0, len(samples), config.n)]
        return out

    def _rng_devices(self) -> list[Any]:
        return [self.device] if self.device.type == "cuda" else []

    def _hf_generation_config(self, config: GenerationConfig) -> Any:
        """Every setting that shapes the next-token distribution, explicitly: softmax(logits / T)
        (argmax when greedy), no top-k, no repetition penalty, top-p only when asked. transformers
        fills a field left None from the checkpoint's generation_config.json and then from its
        own defaults (top_k 50), so nothing is left None; :func:`_bare_generation_config` also
        hides the checkpoint's file while sampling (min_p, bad words, suppressed tokens...)."""
        greedy = config.temperature == 0
        # Sampling warpers exist only when sampling; greedy leaves them unset (transformers warns
        # about set ones), and its bare generation_config below has nothing to fill them from.
        sampling = {} if greedy else dict(temperature=config.temperature, top_p=config.top_p, top_k=0, min_p=0.0,
                                          typical_p=1.0, epsilon_cutoff=0.0, eta_cutoff=0.0)
        return HFGenerationConfig(
            max_new_tokens=config.max_new_tokens,
            min_new_tokens=0,
            do_sample=not greedy,
            **sampling,
            repetition_penalty=1.0,
            no_repeat_ngram_size=0,
            num_beams=1,
            eos_token_id=sorted(self.eos_ids),
            pad_token_id=self.tokenizer.pad_token_id,
            stop_strings=list(config.stop) or None,
            return_dict_in_generate=True,
            # No output_logits: B x steps x vocab float32 (~20 GB for 8 x 4k tokens x 152k);
            # _SampledLogprobs keeps one step of log-probs at a time instead.
            output_logits=False,
            output_scores=False,
        )

    @torch.no_grad()
    def _sample_batch(self, prompts: Sequence[Sequence[int]], config: GenerationConfig) -> list[_Row]:
        if any(len(p) == 0 for p in prompts):
            raise InputError("cannot sample from an empty prompt")
        # Each prompt repeated n times, not num_return_sequences: that one refuses greedy n > 1.
        rows = [list(p) for p in prompts for _ in range(config.n)]
        width = max(len(p) for p in rows)
        pad = self.tokenizer.pad_token_id
        # Left padding keeps every prompt's last token at the same position for generate.
        input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in rows])
        mask = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in rows])
        was_training = self.model.training
        self.model.eval()  # dropout off while sampling (LoRA dropout included)
        temperature = config.temperature or 1.0
        recorder = _SampledLogprobs(temperature)
        try:
            with _bare_generation_config(self.model), torch.autocast(
                    device_type=self.device.type, dtype=torch.bfloat16, enabled=self.autocast_bf16):
                result = self.model.generate(
                    input_ids=input_ids.to(self.device),
                    attention_mask=mask.to(self.device),
                    generation_config=self._hf_generation_config(config),
                    tokenizer=self.tokenizer,
                    logits_processor=LogitsProcessorList([recorder]),
                )
        finally:
            self.model.train(was_training)
        new_ids = result.sequences[:, width:]
        logprobs = recorder.finish(result.sequences).cpu()
        if logprobs.shape != new_ids.shape:  # one record per generated step, or a bug here
            raise RuntimeError(f"recorded log-probs for {tuple(logprobs.shape)} tokens, generated "
                               f"{tuple(new_ids.shape)}")
        new_ids = new_ids.cpu()
        return [
            _Row(rows[i], new_ids[i].tolist(), logprobs[i].tolist()) for i in range(len(rows))
        ]

    def _to_sample(self, row: _Row, config: GenerationConfig) -> Sample:
        ids, lps = row.ids, row.logprobs
        end = next((k for k, t in enumerate(ids) if t in self.eos_ids), None)
        finish = "length"
        if end is not None:  # keep the eos: the trainer teaches the model to stop
            ids, lps, finish = ids[: end + 1], lps[: end + 1], "stop"
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        if config.stop:
            cut, matched = cut_at_stop(text, config.stop)
            if matched is not None:
                keep = self._tokens_covering(ids, len(cut) + len(matched))
                ids, lps, finish = ids[:keep], lps[:keep], "stop"
                text = cut + matched if config.include_stop else cut
        return Sample(
            text=text,
            prompt_ids=tuple(row.prompt_ids),
            completion_ids=tuple(ids),
            logprobs=tuple(lps),
            finish_reason=finish,
        )

    def _tokens_covering(self, ids: list[int], n_chars: int) -> int:
        """Fewest leading tokens whose text holds the first ``n_chars`` characters."""
        for k in range(1, len(ids) + 1):
            if len(self.tokenizer.decode(ids[:k], skip_special_tokens=True)) >= n_chars:
                return k
        return len(ids)
