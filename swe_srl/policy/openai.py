"""Sampling from any OpenAI-compatible server (``vllm serve``, SGLang, TGI, a hosted API).

The prompt is rendered HERE with our chat template and sent to ``/v1/completions`` as text, so
the server's own chat template never changes what the policy sees. With vLLM the response also
carries the exact sampled token ids and their log-probs (start the server with
``--logprobs-mode processed_logprobs`` to get them with temperature applied, as the hf backend
reports them). Standard library HTTP only; transient failures are retried with backoff.
"""

from __future__ import annotations

import json
import os
import time
import urllib.error
import urllib.request
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from ..errors import ConfigError, InfrastructureError, InputError
from .base import Conversation, GenerationConfig, PolicyConfig, Sample, finish_text, render_conversation

_RETRY_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class OpenAIPolicy:
    """A policy served behind an OpenAI-compatible ``/v1/completions`` endpoint."""

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        tokenizer: Any = None,
        api_key: str | None = None,
        timeout: float = 300.0,
        max_retries: int = 4,
        max_concurrency: int = 8,
        retry_backoff: float = 0.5,
        vllm_extensions: bool = True,
    ) -> None:
        if not base_url.startswith(("http://", "https://")):
            raise ConfigError(f"base_url must start with http:// or https://, got {base_url!r}")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.tokenizer = tokenizer
        self.api_key = api_key if api_key is not None else os.environ.get("OPENAI_API_KEY")
        self.timeout = timeout
        self.max_retries = max_retries
        self.max_concurrency = max_concurrency
        self.retry_backoff = retry_backoff
        self.vllm_extensions = vllm_extensions

    @classmethod
    def from_config(cls, config: PolicyConfig) -> OpenAIPolicy:
        """Build from a PolicyConfig; the tokenizer (for the chat template and prompt ids) is
        loaded from ``config.tokenizer or config.model`` when that is a local directory."""
        tokenizer = None
        source = config.tokenizer or (config.model if os.path.isdir(config.model) else None)
        if source:
            from transformers import AutoTokenizer

            try:
                tokenizer = AutoTokenizer.from_pretrained(source)
            except OSError as exc:
                raise InputError(f"cannot load tokenizer {source!r}: {str(exc).splitlines()[0]}") from exc
        name = config.served_model_name or config.model
        if not name:
            raise ConfigError("the openai policy needs served_model_name or model")
        return cls(
            config.base_url,
            name,
            tokenizer=tokenizer,
            api_key=config.api_key,
            timeout=config.request_timeout,
            max_retries=config.max_retries,
            max_concurrency=config.max_concurrency,
            vllm_extensions=config.vllm_extensions,
        )

    def generate(
        self, conversations: Sequence[Conversation], config: GenerationConfig
    ) -> list[list[Sample]]:
        """One request per conversation (n samples each), ``max_concurrency`` in flight."""
        if not conversations:
            return []
        with ThreadPoolExecutor(max_workers=min(self.max_concurrency, len(conversations))) as pool:
            return list(pool.map(lambda c: self._generate_one(c, config), conversations))

    def request_body(self, prompt: str, config: GenerationConfig) -> dict[str, Any]:
        """The JSON sent to ``/completions`` for one prompt."""
        body: dict[str, Any] = {
            "model": self.model,
            "prompt": prompt,
            "max_tokens": config.max_new_tokens,
            "temperature": config.temperature,
            "top_p": config.top_p,
            # Explicit, so a server never fills them from the checkpoint's generation_config
            # (vLLM does, for every field a request leaves out).
            "presence_penalty": 0.0,
            "frequency_penalty": 0.0,
            "n": config.n,
            "logprobs": 1,
        }
        if config.seed is not None:
            body["seed"] = config.seed
        if config.stop:
            body["stop"] = list(config.stop)
        if self.vllm_extensions:
            body.update(
                top_k=0,  # 0: no top-k; vLLM's sampling extensions, sent as neutral values
                min_p=0.0,
                repetition_penalty=1.0,
                return_token_ids=True,
                return_tokens_as_token_ids=True,
                include_stop_str_in_output=config.include_stop,
                skip_special_tokens=True,
            )
        return body

    def _generate_one(self, conversation: Conversation, config: GenerationConfig) -> list[Sample]:
        prompt = render_conversation(self.tokenizer, conversation)
        response = self._post("/completions", self.request_body(prompt, config))
        choices = sorted(response.get("choices") or [], key=lambda c: c.get("index", 0))
        if len(choices) != config.n:
            raise InfrastructureError(
                f"server at {self.base_url} returned {len(choices)} choices, asked for {config.n}"
            )
        local_prompt_ids: tuple[int, ...] | None = None
        samples = []
        for choice in choices:
            prompt_ids = choice.get("prompt_token_ids")
            if prompt_ids is None:
                if local_prompt_ids is None:
                    local_prompt_ids = self._encode(prompt)
                prompt_ids = local_prompt_ids
            samples.append(self._to_sample(choice, tuple(prompt_ids), config))
        return samples

    def _to_sample(
        self, choice: Mapping[str, Any], prompt_ids: tuple[int, ...], config: GenerationConfig
    ) -> Sample:
        text = choice.get("text") or ""
        if config.include_stop and isinstance(choice.get("stop_reason"), str):
            if not text.endswith(choice["stop_reason"]):  # a server that drops it regardless
                text += choice["stop_reason"]
        elif not config.include_stop:
            text, _ = finish_text(text, config.stop, False)  # servers without stop support
        lp = choice.get("logprobs") or {}
        ids = choice.get("token_ids") or _ids_from_logprob_tokens(lp.get("tokens"))
        if ids is None:  # nothing exact from the server: the best we can do is re-tokenise
            ids = self._encode(text)
            logprobs = None
        else:
            logprobs = lp.get("token_logprobs")
            if logprobs is None or len(logprobs) != len(ids) or None in logprobs:
                logprobs = None
        return Sample(
            text=text,
            prompt_ids=prompt_ids,
            completion_ids=tuple(int(i) for i in ids),
            logprobs=None if logprobs is None else tuple(float(x) for x in logprobs),
            finish_reason="length" if choice.get("finish_reason") == "length" else "stop",
        )

    def _encode(self, text: str) -> tuple[int, ...]:
        if self.tokenizer is None:
            return ()
        return tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def _post(self, path: str, body: Mapping[str, Any]) -> dict[str, Any]:
        url = self.base_url + path
        data = json.dumps(body).encode("utf-8")
        headers = {"Content-Type": "application/json"}
        if self.api_key:
            headers["Authorization"] = f"Bearer {self.api_key}"
        last = ""
        for attempt in range(self.max_retries + 1):
            if attempt:
                time.sleep(min(self.retry_backoff * 2 ** (attempt - 1), 30.0))
            request = urllib.request.Request(url, data=data, headers=headers, method="POST")
            try:
                with urllib.request.urlopen(request, timeout=self.timeout) as reply:
                    return json.loads(reply.read().decode("utf-8"))
            except urllib.error.HTTPError as exc:
                detail = _error_detail(exc)
                if exc.code not in _RETRY_STATUS:
                    raise ConfigError(f"server at {url} refused the request ({exc.code}): {detail}") from exc
                last = f"HTTP {exc.code}: {detail}"
            except (urllib.error.URLError, TimeoutError, ConnectionError) as exc:
                last = str(getattr(exc, "reason", exc))
            except json.JSONDecodeError as exc:
                last = f"reply is not JSON ({exc})"
        raise InfrastructureError(
            f"OpenAI-compatible server at {url} failed after {self.max_retries + 1} attempt(s): {last}"
        )


def _ids_from_logprob_tokens(tokens: Sequence[str] | None) -> list[int] | None:
    """Token ids from vLLM's ``return_tokens_as_token_ids`` form "token_id:123"."""
    if not tokens or not all(isinstance(t, str) and t.startswith("token_id:") for t in tokens):
        return None
    return [int(t.split(":", 1)[1]) for t in tokens]


def _error_detail(exc: urllib.error.HTTPError) -> str:
    try:
        payload = json.loads(exc.read().decode("utf-8", "replace"))
        message = payload.get("error", payload)
        if isinstance(message, dict):
            message = message.get("message", message)
        text = str(message)
    except (ValueError, OSError):
        text = exc.reason if isinstance(exc.reason, str) else str(exc)
    return " ".join(text.split())[:300]
