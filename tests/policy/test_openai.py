"""The OpenAI-compatible backend against a real local HTTP server backed by the tiny model."""

from __future__ import annotations

import json
import os
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("HF_HUB_DISABLE_TELEMETRY", "1")

torch = pytest.importorskip("torch")
pytest.importorskip("transformers")

from swe_srl.errors import ConfigError, InfrastructureError  # noqa: E402
from swe_srl.policy import GenerationConfig, PolicyConfig, load_policy  # noqa: E402
from swe_srl.policy.openai import OpenAIPolicy  # noqa: E402

CONVERSATIONS = [
    [{"role": "user", "content": "Fix the failing test in src/pkg/parse.py"}],
    [{"role": "user", "content": "hi"}],
    [{"role": "user", "content": "run the tests"}],
]


class _Server:
    """An OpenAI-shaped /v1/completions served from an HFPolicy, vLLM-style token ids."""

    def __init__(self, policy, fail_first: int = 0, status: int = 503):
        self.policy, self.fail_first, self.status = policy, fail_first, status
        self.bodies: list[dict] = []
        self.headers: list[dict] = []
        self.lock = threading.Lock()
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output clean
                pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with owner.lock:
                    owner.bodies.append(body)
                    owner.headers.append(dict(self.headers))
                    failing = owner.fail_first > 0
                    owner.fail_first -= 1
                if failing:
                    return self._reply(owner.status, {"error": {"message": "busy, try later"}})
                if self.path != "/v1/completions":
                    return self._reply(404, {"error": {"message": f"no route {self.path}"}})
                self._reply(200, owner.complete(body))

            def _reply(self, code, payload):
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)

    def complete(self, body):
        tok = self.policy.tokenizer
        prompt_ids = tok(body["prompt"], add_special_tokens=False)["input_ids"]
        config = GenerationConfig(
            max_new_tokens=body["max_tokens"],
            temperature=body["temperature"],
            top_p=body["top_p"],
            n=body["n"],
            seed=body.get("seed"),
            stop=tuple(body.get("stop") or ()),
            include_stop=body.get("include_stop_str_in_output", False),
        )
        with self.lock:  # one generate at a time, like one engine
            (group,) = self.policy.generate_from_ids([prompt_ids], config)
        choices = []
        for i, s in enumerate(group):
            choice = {"index": i, "text": s.text, "finish_reason": s.finish_reason}
            if body.get("return_token_ids"):
                choice.update(token_ids=list(s.completion_ids), prompt_token_ids=prompt_ids)
            if body.get("logprobs") is not None:
                tokens = (
                    [f"token_id:{t}" for t in s.completion_ids]
                    if body.get("return_tokens_as_token_ids")
                    else [tok.decode([t]) for t in s.completion_ids]
                )
                choice["logprobs"] = {"tokens": tokens, "token_logprobs": list(s.logprobs)}
            choices.append(choice)
        return {"id": "cmpl-1", "object": "text_completion", "model": body["model"], "choices": choices}

    def __enter__(self):
        self.thread.start()
        return self

    def __exit__(self, *exc):
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def tiny_dir(tiny_model_dir):
    return tiny_model_dir  # the session's shared tiny model (tests/conftest.py)


@pytest.fixture(scope="module")
def hf(tiny_dir):
    return load_policy(PolicyConfig(backend="hf", model=str(tiny_dir), device="cpu"))


def _client(url, tiny_dir, **kw):
    config = PolicyConfig(backend="openai", model=str(tiny_dir), base_url=url, api_key="sk-test", **kw)
    return load_policy(config)


def test_samples_carry_the_servers_ids_and_logprobs(hf, tiny_dir):
    config = GenerationConfig(max_new_tokens=12, n=3, seed=7, temperature=0.9)
    with _Server(hf) as server:
        client = _client(server.url, tiny_dir)
        assert isinstance(client, OpenAIPolicy)
        groups = client.generate(CONVERSATIONS, config)
    assert [len(g) for g in groups] == [3, 3, 3]
    direct = hf.generate(CONVERSATIONS[:1], config)[0]
    assert groups[0] == direct  # same prompt rendering, same ids, same log-probs
    body = server.bodies[0]
    assert body["model"] == str(tiny_dir) and body["n"] == 3 and body["logprobs"] == 1
    assert body["prompt"].endswith("<|im_start|>assistant\n")
    assert body["return_token_ids"] is True
    # Every sampling setting is sent, so the server never fills one from the checkpoint's
    # generation_config (vLLM does for any field a request leaves out).
    assert (body["temperature"], body["top_p"], body["top_k"], body["min_p"]) == (0.9, 1.0, 0, 0.0)
    assert (body["repetition_penalty"], body["presence_penalty"], body["frequency_penalty"]) == (1.0, 0.0, 0.0)
    assert server.headers[0]["Authorization"] == "Bearer sk-test"
    for group in groups:
        for s in group:
            assert len(s.logprobs) == len(s.completion_ids) > 0


def test_without_server_extensions_text_is_retokenised(hf, tiny_dir):
    config = GenerationConfig(max_new_tokens=8, n=2, seed=1)
    with _Server(hf) as server:
        client = _client(server.url, tiny_dir)
        client.vllm_extensions = False
        plain = client.generate(CONVERSATIONS[:1], config)[0]
    assert "return_token_ids" not in server.bodies[0]
    # Without token ids the text is re-tokenised locally and log-probs are unknown.
    for s in plain:
        assert s.logprobs is None
        assert hf.tokenizer.decode(s.completion_ids) == s.text
        assert s.prompt_ids == direct_prompt_ids(hf)


def direct_prompt_ids(hf):
    text = hf.tokenizer.apply_chat_template(CONVERSATIONS[0], add_generation_prompt=True, tokenize=False)
    return tuple(hf.tokenizer(text, add_special_tokens=False)["input_ids"])


def test_ids_from_token_id_strings_when_no_token_ids_field(tiny_dir):
    client = OpenAIPolicy("http://127.0.0.1:1/v1", "m")
    choice = {
        "index": 0,
        "text": "ab",
        "finish_reason": "length",
        "logprobs": {"tokens": ["token_id:5", "token_id:9"], "token_logprobs": [-0.5, -1.25]},
    }
    sample = client._to_sample(choice, (1, 2), GenerationConfig(max_new_tokens=2))
    assert sample.completion_ids == (5, 9)
    assert sample.logprobs == (-0.5, -1.25)
    assert sample.finish_reason == "length" and sample.prompt_ids == (1, 2)


def test_stop_strings_are_sent_and_honoured(hf, tiny_dir):
    with _Server(hf) as server:
        client = _client(server.url, tiny_dir)
        free = client.generate(CONVERSATIONS[:1], GenerationConfig(max_new_tokens=24, seed=3))[0][0]
        stop = free.text[len(free.text) // 2 :][:2]
        config = GenerationConfig(max_new_tokens=24, seed=3, stop=(stop,), include_stop=True)
        (stopped,) = client.generate(CONVERSATIONS[:1], config)[0]
    assert server.bodies[-1]["stop"] == [stop]
    assert server.bodies[-1]["include_stop_str_in_output"] is True
    assert stopped.finish_reason == "stop"
    assert stopped.text == free.text[: free.text.find(stop)] + stop


def test_transient_errors_are_retried(hf, tiny_dir):
    with _Server(hf, fail_first=2, status=503) as server:
        client = _client(server.url, tiny_dir)
        client.retry_backoff = 0.01
        groups = client.generate(CONVERSATIONS[:1], GenerationConfig(max_new_tokens=4, seed=0))
    assert len(server.bodies) == 3
    assert len(groups[0]) == 1


def test_a_refused_request_is_a_config_error(hf, tiny_dir):
    with _Server(hf, fail_first=1, status=400) as server:
        client = _client(server.url, tiny_dir)
        with pytest.raises(ConfigError, match=r"refused the request \(400\): busy, try later"):
            client.generate(CONVERSATIONS[:1], GenerationConfig(max_new_tokens=4))
    assert len(server.bodies) == 1


def test_unreachable_server_is_an_infrastructure_error(tiny_dir):
    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = _client(f"http://127.0.0.1:{port}/v1", tiny_dir, max_retries=1)
    client.retry_backoff = 0.01
    with pytest.raises(InfrastructureError, match="failed after 2 attempt"):
        client.generate(CONVERSATIONS[:1], GenerationConfig(max_new_tokens=4))


def test_bad_base_url_is_a_config_error(tiny_dir):
    with pytest.raises(ConfigError, match="base_url"):
        _client("localhost:8000", tiny_dir)
