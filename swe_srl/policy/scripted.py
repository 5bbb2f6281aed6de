"""A policy that replays given completions: for tests, and for replaying expert solutions
through the same agent loop as a model."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from ..errors import ConfigError, InputError
from .base import Conversation, GenerationConfig, PolicyConfig, Sample, finish_text, render_conversation

# fn(conversation, sample_index) -> completion text
CompletionFn = Callable[[Conversation, int], str]


class ScriptedPolicy:
    """Replays completions in order (one per sample), or asks ``fn`` for each one.

    With a tokenizer, prompts and completions are tokenised so ids look like a model's
    (log-probs stay None: nothing was sampled). Stop strings are honoured like a model's."""

    def __init__(
        self,
        completions: Iterable[str] | CompletionFn,
        *,
        tokenizer: Any = None,
        cycle: bool = False,
    ) -> None:
        if callable(completions):
            self._fn: CompletionFn | None = completions
            self._script: list[str] = []
        else:
            self._fn = None
            self._script = list(completions)
            if not self._script:
                raise ConfigError("a scripted policy needs at least one completion")
        self.tokenizer = tokenizer
        self.cycle = cycle
        self.calls: list[list[Conversation]] = []
        """Every batch of conversations passed to generate, for assertions in tests."""
        self._next = 0
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: PolicyConfig) -> ScriptedPolicy:
        """Replay ``config.completions``; tokenise with ``config.tokenizer or config.model`` if set."""
        tokenizer = None
        source = config.tokenizer or config.model
        if source:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
            except OSError as exc:
                raise InputError(f"cannot load tokenizer {source!r}: {str(exc).splitlines()[0]}") from exc
        return cls(config.completions, tokenizer=tokenizer)

    @property
    def remaining(self) -> int | None:
        """Completions left in a non-cycling script (None for a function or a cycle)."""
        if self._fn is not None or self.cycle:
            return None
        return len(self._script) - self._next

    def _take(self, conversation: Conversation, index: int) -> str:
        if self._fn is not None:
            return self._fn(conversation, index)
        with self._lock:
            if self._next >= len(self._script):
                if not self.cycle:
                    raise InputError(
                        f"scripted policy ran out of completions after {len(self._script)}"
                    )
                self._next = 0
            text = self._script[self._next]
            self._next += 1
        return text

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[list[Sample]]:
        """Return ``config.n`` scripted samples per conversation."""
        self.calls.append([list(c) for c in conversations])
        out = []
        for conversation in conversations:
            prompt_ids = self._encode(render_conversation(self.tokenizer, conversation))
            group = []
            for i in range(config.n):
                raw = self._take(conversation, i)
                text, _ = finish_text(raw, config.stop, config.include_stop)
                group.append(
                    Sample(
                        text=text,
                        prompt_ids=prompt_ids,
                        completion_ids=self._encode(text),
                        logprobs=None,
                        finish_reason="stop",
                    )
                )
            out.append(group)
        return out

    def generate_from_ids(
        self, prompts: Sequence[Sequence[int]], config: GenerationConfig
    ) -> list[list[Sample]]:
        """Like :meth:`generate` for token-id prompts: the script (or ``fn``) sees each prompt
        decoded as one user message; the samples keep the given ids."""
        if self.tokenizer is None:
            raise ConfigError("a scripted policy needs a tokenizer to answer token-id prompts")
        decoded = [[{"role": "user", "content": self.tokenizer.decode(list(p), skip_special_tokens=False)}]
                   for p in prompts]
        groups = self.generate(decoded, config)
        return [[replace(s, prompt_ids=tuple(p)) for s in group] for p, group in zip(prompts, groups)]

    def _encode(self, text: str) -> tuple[int, ...]:
        if self.tokenizer is None:
            return ()
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])
