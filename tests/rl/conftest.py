"""Fixtures shared by the rl/ tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def grpo_loss_calls(monkeypatch: pytest.MonkeyPatch) -> list[tuple[bool, bool]]:
    """Per grpo_loss call during the test: (old log-probs given, engine log-probs given), i.e.
    whether the sampler's log-probs reached the loss as the ratio's old log-probs (bypass) or
    as truncated importance-sampling weights."""
    pytest.importorskip("torch")
    from swe_srl.rl import grpo

    calls: list[tuple[bool, bool]] = []
    real = grpo.grpo_loss

    def spy(logprobs, old_logprobs, *args, **kwargs):
        calls.append((old_logprobs is not None, kwargs.get("engine_logprobs") is not None))
        return real(logprobs, old_logprobs, *args, **kwargs)

    monkeypatch.setattr(grpo, "grpo_loss", spy)
    return calls
