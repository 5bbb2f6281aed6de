"""Rollouts one step ahead of the update (``rollout.async_ahead``).

Without it a step samples its batch, then updates: the model waits for the episodes and the
episodes for the model. With it, as soon as step s has its batch, the batch of step s+1 is
drawn in a background thread by a sampler that still holds the weights of step s (version s)
while the update of step s runs; the new weights (version s+1) reach the sampler only when that
draw is done, so the sampler never changes mid-batch and a batch is at most ONE version older
than the model it trains (step s+1 trains version s+1 on samples of version s).

The staleness is explicit, not refused: every sample records its version, a batch older than
one step is :class:`~swe_srl.errors.StaleWeights`, and ``rollout/staleness`` logs the step's
largest gap. The importance ratio's old log-probs are the SAMPLER's (version s), so the
clipped surrogate is PPO's off-policy correction of the step in between; with a vLLM engine
and TIS, min(exp(trainer - engine), cap) weighs it in the same way as the engine mismatch
(:mod:`swe_srl.rl.update`).

* ``engine: hf``: the sampler is :class:`SnapshotPolicy`, a copy of the trained model that is
  sent the new weights after each update (twice the weights in memory, not the optimizer).
* ``engine: vllm``: the engine is already a separate copy with versioned pushes.

One process only (a draw's collectives would interleave with the update's), no fsdp.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import torch

from ..errors import ConfigError, StaleWeights
from ..policy.hf import HFPolicy
from .data_order import DataOrder
from .engine import Engine, sampler_logprobs, unwrap

if TYPE_CHECKING:  # the run's state, handed down (imported for types only: no cycle)
    from .session import Session


class SnapshotPolicy(HFPolicy):
    """An HF policy on a private copy of the trained model: it samples with the weights it was
    last sent (``weights_version``), whatever the trained model does meanwhile."""

    def __init__(self, policy: HFPolicy) -> None:
        model = copy.deepcopy(unwrap(policy.model))
        for p in model.parameters():
            p.requires_grad_(False)
        super().__init__(model, policy.tokenizer, max_batch_size=policy.max_batch_size)
        self.autocast_bf16 = policy.autocast_bf16
        self.weights_version: int | None = None

    def update_weights(self, named_tensors: Any, *, version: int) -> None:
        own = dict(self.model.named_parameters())
        with torch.no_grad():
            for name, tensor in named_tensors:
                own[name].copy_(tensor)
        self.weights_version = version

    def generate_from_ids(self, prompts: Sequence[Sequence[int]], config: Any) -> list[list[Any]]:
        groups = super().generate_from_ids(prompts, config)
        return [[replace(s, weights_version=self.weights_version) for s in g] for g in groups]


class AheadEngine:
    """The session's :class:`~swe_srl.rl.engine.RolloutEngine` as seen by a run one step ahead:
    same members (``sampler``, ``push``, ``release``, ``check``, ``old_logprobs``, ``close``)."""

    def __init__(self, inner: Engine, policy: Any, model: torch.nn.Module, version: int = 0) -> None:
        """``version``: the trained model's now (the step a resumed run starts from)."""
        self.inner, self.engine = inner, inner.engine
        if inner.pushes:
            self.sampler = inner.sampler
        elif inner.sampler is policy:
            self.sampler = SnapshotPolicy(policy)
            self.sampler.update_weights(_named(model), version=version)
        else:  # a given sampler (scripted, in tests): no weights of its own, nothing to follow
            self.sampler = inner.sampler
        self.pushes = True

    def push(self, model: torch.nn.Module, version: int) -> dict[str, float]:
        """The new weights to the sampler (call only when no draw is running)."""
        if isinstance(self.sampler, SnapshotPolicy):
            self.sampler.update_weights(_named(model), version=version)
            return {"rollout/weights_version": float(version)}
        return self.inner.push(model, version)

    def release(self) -> None:
        """Nothing to release: the engine draws the next batch during the update."""

    def check(self, samples: Sequence[Any], version: int) -> float:
        """The batch's largest version gap to the trained model's ``version`` (0 or 1);
        :class:`StaleWeights` for anything older (a missed push) or newer."""
        versions = {s.weights_version for s in samples if getattr(s, "weights_version", None) is not None}
        bad = sorted(v for v in versions if v not in (version, version - 1))
        if bad:
            raise StaleWeights(f"a batch for the model at version {version} holds samples of version(s) "
                               f"{bad}: rollout.async_ahead allows one step of staleness, no more")
        return float(max((version - v for v in versions), default=0))

    def old_logprobs(self, samples: Sequence[Any], logprobs: torch.Tensor) -> torch.Tensor | None:
        """The sampler's log-probs: the ratio then spans the step in between (None for a
        sampler without weights, whose samples count as on-policy)."""
        if self.sampler is self.inner.sampler and not self.inner.pushes:
            return None
        return sampler_logprobs(samples, logprobs)

    def close(self) -> None:
        self.inner.close()


def _named(model: torch.nn.Module):
    """The trained model's weights under the names of the snapshot's parameters (LoRA kept as
    adapters: the snapshot is a copy of the same peft model)."""
    return unwrap(model).named_parameters()


def check_ahead(config: Any, world_size: int, sharded: bool) -> None:
    """ConfigError where a draw in the background cannot run beside the update."""
    if world_size > 1:
        raise ConfigError("rollout.async_ahead runs on one process (its draw's collectives would interleave "
                          "with the update's); drop it or run on one process")
    if sharded:
        raise ConfigError("rollout.async_ahead with run.parallel=fsdp is not supported (the sampler needs the "
                          "whole model while the update holds the shards); use ddp or turn it off")
    if config.rollout.sleep_level:
        raise ConfigError("rollout.async_ahead with rollout.sleep_level > 0: the engine draws the next batch during "
                          "the update, so it cannot sleep then; set rollout.sleep_level=0 or turn async_ahead off")


class Prefetch:
    """``fn()`` in a background thread; :meth:`result` waits and returns it (or raises its error)."""

    def __init__(self, fn: Callable[[], Any]) -> None:
        self._result: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(fn,), name="rollout-ahead", daemon=True)
        self._thread.start()

    def _run(self, fn: Callable[[], Any]) -> None:
        try:
            self._result = fn()
        except BaseException as exc:  # handed to the caller of result()
            self._error = exc

    def wait(self) -> None:
        self._thread.join()

    def result(self) -> Any:
        self.wait()
        if self._error is not None:
            raise self._error
        return self._result


@contextmanager
def data_position(session: Session, state: dict | None) -> Iterator[None]:
    """While logging and saving a step, the data order stands where it stood before the batch
    drawn ahead (``state``; None: where it is): a resumed run draws that batch again."""
    if state is None:
        yield
        return
    live = session.order
    session.order = DataOrder.from_state(live.n, live.seed, live.shuffle, state)
    try:
        yield
    finally:
        session.order = live
