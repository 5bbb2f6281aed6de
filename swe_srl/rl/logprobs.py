"""Token log-probs of exact sampled ids under the trained model, and the forward-pass
plumbing around them: mixed precision, padded token batches, micro-batch chunks."""

from __future__ import annotations

import contextlib
import math
from dataclasses import dataclass
from typing import Any, Iterator, Sequence

import torch

from ..config import Precision


def chunks(items: Sequence[Any], parts: int) -> Iterator[Sequence[Any]]:
    """Split ``items`` into ``parts`` nearly equal consecutive chunks (empty ones skipped)."""
    size = max(1, math.ceil(len(items) / max(parts, 1)))
    for start in range(0, len(items), size):
        yield items[start:start + size]


def resolve_precision(precision: Precision, device: torch.device) -> bool:
    """Whether to autocast to bf16: 'auto' = on a GPU that supports it."""
    if precision == "auto":
        return device.type == "cuda" and torch.cuda.is_bf16_supported()
    return precision == "bf16"


def autocast(device: torch.device, bf16: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast for forward passes (master weights stay in their own dtype)."""
    if not bf16:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16)


@dataclass(frozen=True)
class TokenBatch:
    """Prompt + completion token ids of several sequences, ready for one forward pass.

    Layout: prompts left-padded to a common length P, completions right-padded after them,
    so every completion starts at column P and ``logits_to_keep`` trims the vocabulary
    projection to the completion part."""

    input_ids: torch.Tensor  # (B, P + C)
    attention_mask: torch.Tensor  # (B, P + C)
    position_ids: torch.Tensor  # (B, P + C)
    completion_ids: torch.Tensor  # (B, C)
    completion_mask: torch.Tensor  # (B, C) float, 1 on real completion tokens

    @classmethod
    def build(cls, prompts: Sequence[Sequence[int]], completions: Sequence[Sequence[int]],
              pad_id: int, device: torch.device) -> "TokenBatch":
        P = max(len(p) for p in prompts)
        C = max(1, max(len(c) for c in completions))
        B = len(prompts)
        ids = torch.full((B, P + C), pad_id, dtype=torch.long)
        mask = torch.zeros((B, P + C), dtype=torch.long)
        for i, (p, c) in enumerate(zip(prompts, completions)):
            ids[i, P - len(p):P] = torch.tensor(list(p), dtype=torch.long)
            mask[i, P - len(p):P] = 1
            if len(c):
                ids[i, P:P + len(c)] = torch.tensor(list(c), dtype=torch.long)
                mask[i, P:P + len(c)] = 1
        positions = (mask.cumsum(dim=1) - 1).clamp(min=0)
        comp_mask = mask[:, P:].float()
        return cls(ids.to(device), mask.to(device), positions.to(device),
                   ids[:, P:].to(device), comp_mask.to(device))

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum().item())


def completion_logprobs(model: torch.nn.Module, batch: TokenBatch, temperature: float = 1.0) -> torch.Tensor:
    """Log-probs (B, C) of the EXACT completion token ids under ``model``, logits divided by
    ``temperature`` as when they were sampled (0 is greedy: no division). Padding gets 0."""
    C = batch.completion_ids.shape[1]
    # The logits at column t predict token t+1: the completion needs columns P-1 .. P+C-2.
    out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                position_ids=batch.position_ids, logits_to_keep=C + 1, use_cache=False)
    logits = out.logits[:, :-1, :].float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, 2, batch.completion_ids.unsqueeze(-1)).squeeze(-1)
    logprobs = picked - torch.logsumexp(logits, dim=-1)
    return logprobs * batch.completion_mask
