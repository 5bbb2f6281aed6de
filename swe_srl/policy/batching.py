"""One in-process model shared by many episode threads: their turns are batched.

Episodes call ``policy.generate([messages], config)`` once per turn, from one thread each. An
in-process engine (transformers, ``vllm.LLM``) is not thread-safe, and taking turns behind a
lock (:class:`~.base.SerialPolicy`) leaves the model working on one conversation at a time.
:class:`BatchingPolicy` instead queues the callers' requests; one worker thread takes the
requests that wait together and share a :class:`~.base.GenerationConfig`, runs ONE ``generate``
on the wrapped policy and hands each caller its own samples: the exact token ids and log-probs
the wrapped policy sampled for its conversations (greedy: the same ones as a call on its own).

A server behind :class:`~.openai.OpenAIPolicy` batches concurrent requests itself: that policy
is thread-safe and needs no wrapper.
"""

from __future__ import annotations

import sys
import threading
import time
from collections import deque
from collections.abc import Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

from ..errors import ConfigError, InfrastructureError
from .base import Conversation, GenerationConfig, Policy, Sample, SerialPolicy


class PolicyClosed(InfrastructureError):
    """A request reached a :class:`BatchingPolicy` that was closed (or closed while it waited).
    Never the model's fault: an episode that meets it is an infrastructure failure."""


@dataclass
class _Request:
    conversations: list[Conversation]
    config: GenerationConfig
    arrived: float
    future: Future = field(default_factory=Future)
    ids: bool = False  # the "conversations" are token-id prompts (generate_from_ids)

    @property
    def key(self) -> tuple[GenerationConfig, bool]:
        """Requests batched together share it."""
        return self.config, self.ids


def _solo(config: GenerationConfig) -> bool:
    """A seeded sampling call is reproducible only for the same batch, so it is never batched
    with other callers' conversations (greedy ignores the seed)."""
    return config.seed is not None and config.temperature > 0


class BatchingPolicy:
    """Batches concurrent ``generate`` calls to a policy that is not thread-safe.

    The worker starts a batch when ``max_batch`` conversations with the same config wait, or
    when the window has passed since it became free with a request waiting. The window is
    counted from when the worker is free, not from the oldest request's arrival, so requests
    that piled up during the last batch still give the others a moment to join. It is
    ``max_wait_ms``, or ``wait_fraction`` of the last batch's generate time when that is
    longer: callers whose tool call takes less than that rejoin the next batch, instead of the
    episodes splitting into a group that runs alone and the rest; it costs at most that share
    of latency when nobody comes. With ``max_batch`` = the number of caller threads, a batch
    starts as soon as every caller waits. A seeded sampling call runs alone, so it stays
    reproducible.

    An exception of the wrapped policy reaches every caller of that batch; later batches run
    as usual. :meth:`close` (or leaving the ``with`` block) fails the requests still queued with
    :class:`PolicyClosed`, lets a running batch deliver its results, and stops the worker. The
    worker also exits by itself after ``idle_s`` without requests (and restarts on the next),
    so a wrapper that is dropped without ``close`` leaves no thread behind.
    """

    def __init__(self, policy: Policy, *, max_batch: int = 64, max_wait_ms: float = 10.0,
                 wait_fraction: float = 0.0, idle_s: float = 1.0) -> None:
        if max_batch < 1:
            raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
        if max_wait_ms < 0 or not 0 <= wait_fraction <= 1 or idle_s <= 0:
            raise ConfigError(f"need max_wait_ms >= 0, 0 <= wait_fraction <= 1, idle_s > 0; got "
                              f"{max_wait_ms}, {wait_fraction}, {idle_s}")
        self.policy = policy
        self.max_batch = max_batch
        self.max_wait = max_wait_ms / 1000.0
        self.wait_fraction = wait_fraction
        self.idle_s = idle_s
        self.calls = 0
        """``generate`` calls made on the wrapped policy."""
        self.conversations = 0
        """Conversations they carried (``conversations / calls`` = the mean batch)."""
        self._cond = threading.Condition()
        self._queue: deque[_Request] = deque()
        self._worker: threading.Thread | None = None
        self._closed = False
        self._free_since = time.monotonic()
        self._last_run = 0.0  # seconds the last batch's generate took

    def generate(self, conversations: Sequence[Conversation], config: GenerationConfig) -> list[list[Sample]]:
        """Queue the conversations, wait for their batch, return their samples (in order)."""
        return self._submit(_Request(list(conversations), config, time.monotonic()))

    def generate_from_ids(self, prompts: Sequence[Sequence[int]], config: GenerationConfig) -> list[list[Sample]]:
        """Like :meth:`generate` for prompts already tokenised (batched with other such calls)."""
        return self._submit(_Request([tuple(p) for p in prompts], config, time.monotonic(), ids=True))

    def _submit(self, request: _Request) -> list[list[Sample]]:
        if not request.conversations:
            return []
        with self._cond:
            if self._closed:
                raise PolicyClosed("generate on a closed BatchingPolicy")
            self._queue.append(request)
            if self._worker is None:
                worker = threading.Thread(target=self._run, name="batching-policy", daemon=True)
                try:
                    worker.start()
                except RuntimeError:  # no thread to be had: the request must not wait forever
                    self._queue.remove(request)
                    raise
                self._worker = worker
            self._cond.notify_all()
        return request.future.result()

    def close(self, timeout: float | None = None) -> None:
        """Fail the queued requests with :class:`PolicyClosed`, let a running batch finish, stop
        the worker (waiting up to ``timeout`` seconds for it). Idempotent."""
        with self._cond:
            pending, worker = list(self._queue), self._worker
            self._queue.clear()
            self._closed = True
            self._cond.notify_all()
        for request in pending:
            request.future.set_exception(PolicyClosed("the BatchingPolicy was closed before this request ran"))
        if worker is not None and worker is not threading.current_thread():
            worker.join(timeout)

    def __enter__(self) -> BatchingPolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _run(self) -> None:
        while (batch := self._next_batch()) is not None:
            self._serve(batch)

    def _next_batch(self) -> list[_Request] | None:
        """Wait for the next batch (None: closed, or idle long enough to stop)."""
        with self._cond:
            while True:
                now = time.monotonic()
                if self._closed:
                    return None
                if not self._queue:
                    if now - self._free_since >= self.idle_s:
                        self._worker = None  # under the lock: the next generate starts a new one
                        return None
                    self._cond.wait(self._free_since + self.idle_s - now)
                    continue
                first = self._queue[0]
                if _solo(first.config):
                    return [self._queue.popleft()]
                waiting = sum(len(r.conversations) for r in self._queue if r.key == first.key)
                window = max(self.max_wait, self.wait_fraction * self._last_run)
                deadline = max(first.arrived, self._free_since) + window
                if waiting >= self.max_batch or now >= deadline:
                    return self._take(first.key)
                self._cond.wait(deadline - now)

    def _take(self, key: tuple[GenerationConfig, bool]) -> list[_Request]:
        """Remove and return the oldest requests with ``key`` (config, token-id prompts or
        not; the first always, the rest while they fit in ``max_batch``); the others keep
        their places."""
        batch: list[_Request] = []
        size = 0
        for request in list(self._queue):
            if request.key != key:
                continue
            if batch and size + len(request.conversations) > self.max_batch:
                break
            batch.append(request)
            size += len(request.conversations)
            self._queue.remove(request)
        return batch

    def _serve(self, batch: list[_Request]) -> None:
        conversations = [c for r in batch for c in r.conversations]
        started = time.monotonic()
        try:
            generate = self.policy.generate_from_ids if batch[0].ids else self.policy.generate
            groups = generate(conversations, batch[0].config)
            if len(groups) != len(conversations):
                raise InfrastructureError(
                    f"{type(self.policy).__name__}.generate returned {len(groups)} groups "
                    f"for {len(conversations)} conversations")
        except BaseException as exc:  # every caller of the batch gets it; the worker goes on
            for request in batch:
                request.future.set_exception(exc)
        else:
            start = 0
            for request in batch:
                end = start + len(request.conversations)
                request.future.set_result(groups[start:end])
                start = end
        finally:
            with self._cond:
                self.calls += 1
                self.conversations += len(conversations)
                self._free_since = time.monotonic()
                self._last_run = self._free_since - started


def runs_in_process(policy: Any) -> bool:
    """True for an in-process engine (:class:`~.hf.HFPolicy`, :class:`~.vllm.VLLMPolicy`): not
    thread-safe, and faster on a batch than on its conversations one by one. Checked without
    importing torch or vllm: a policy of those classes has its module loaded already."""
    for module, name in (("swe_srl.policy.hf", "HFPolicy"), ("swe_srl.policy.vllm", "VLLMPolicy")):
        cls = getattr(sys.modules.get(module), name, None)
        if cls is not None and isinstance(policy, cls):
            return True
    return False


def shared_policy(policy: Policy, threads: int, *, max_wait_ms: float = 10.0) -> Policy:
    """``policy`` made safe for ``threads`` callers that are not thread-safe themselves: an
    in-process engine gets a :class:`BatchingPolicy` (a batch starts once every thread waits,
    or after ``max_wait_ms``); any other policy takes turns behind a lock."""
    if runs_in_process(policy):
        return BatchingPolicy(policy, max_batch=threads, max_wait_ms=max_wait_ms)
    return SerialPolicy(policy)
