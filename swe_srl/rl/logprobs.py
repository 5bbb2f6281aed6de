"""Token log-probs of exact sampled ids under the trained model, and the forward-pass
plumbing around them: mixed precision, padded token batches, micro-batches (by sequence count
or by a token budget), and the vocabulary projection in chunks along the sequence."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.checkpoint import checkpoint

from ..errors import ConfigError
from .hf_model import base_model, decoder, output_embeddings
from .settings import Precision


def chunks(items: Sequence[Any], parts: int) -> Iterator[Sequence[Any]]:
    """Split ``items`` into ``parts`` nearly equal consecutive chunks (empty ones skipped)."""
    size = max(1, math.ceil(len(items) / max(parts, 1)))
    for start in range(0, len(items), size):
        yield items[start:start + size]


def micro_batches(shapes: Sequence[tuple[int, int]], parts: int, max_tokens: int = 0) -> list[list[int]]:
    """Indices of the sequences of each forward/backward pass; ``shapes`` holds each
    sequence's (prompt, completion) token counts.

    Without a budget (``max_tokens`` 0): ``parts`` nearly equal consecutive chunks. With one:
    sequences sorted by length, longest first, are packed greedily while the padded size of
    the pass, (longest prompt + longest completion) x sequences as :class:`TokenBatch` lays
    them out, stays within ``max_tokens``; a sequence longer than that gets a pass of its own.
    Sorting keeps sequences of like length together, so little of a pass is padding."""
    if max_tokens <= 0:
        return [list(part) for part in chunks(range(len(shapes)), parts)]
    order = sorted(range(len(shapes)), key=lambda i: (-(shapes[i][0] + shapes[i][1]), i))
    out: list[list[int]] = []
    prompt = completion = 0
    for i in order:
        p, c = shapes[i]
        wider_p, wider_c = max(prompt, p), max(completion, max(c, 1))
        if out and (len(out[-1]) + 1) * (wider_p + wider_c) <= max_tokens:
            out[-1].append(i)
            prompt, completion = wider_p, wider_c
        else:
            out.append([i])
            prompt, completion = p, max(c, 1)
    return out


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
              pad_id: int, device: torch.device,
              loss_masks: Sequence[Sequence[int]] | None = None) -> TokenBatch:
        """``loss_masks``: per completion, 1 on the tokens that carry loss (a packed episode's
        sampled tokens; its observations are context); None: every completion token."""
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
        if loss_masks is not None:
            for i, m in enumerate(loss_masks):
                comp_mask[i, :len(m)] *= torch.tensor(list(m), dtype=torch.float32)
        return cls(ids.to(device), mask.to(device), positions.to(device),
                   ids[:, P:].to(device), comp_mask.to(device))

    @property
    def num_tokens(self) -> int:
        return int(self.completion_mask.sum().item())


def completion_logprobs(model: torch.nn.Module, batch: TokenBatch, temperature: float = 1.0,
                        chunk_tokens: int = 0) -> torch.Tensor:
    """Log-probs (B, C) of the EXACT completion token ids under ``model``, logits divided by
    ``temperature`` as when they were sampled (0 is greedy: no division). Padding gets 0.

    ``chunk_tokens`` > 0 projects the final hidden states to the vocabulary that many
    completion positions at a time, each chunk recomputed in the backward pass instead of
    kept: the float32 (B, C, vocab) logits never exist at once, only (B, chunk, vocab)."""
    C = batch.completion_ids.shape[1]
    if chunk_tokens <= 0 or chunk_tokens >= C:
        # The logits at column t predict token t+1: the completion needs columns P-1 .. P+C-2.
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                    position_ids=batch.position_ids, logits_to_keep=C + 1, use_cache=False)
        logprobs = _picked_logprobs(out.logits[:, :-1, :], batch.completion_ids, temperature)
        return logprobs * batch.completion_mask
    head = output_head(model)
    hidden = final_hidden_states(model, batch)[:, -C - 1:-1, :]
    parts = []
    for start in range(0, C, chunk_tokens):
        stop = min(start + chunk_tokens, C)
        # Only the (B, chunk, hidden) input is kept for the backward pass, not the logits.
        parts.append(checkpoint(_head_logprobs, head, hidden[:, start:stop], batch.completion_ids[:, start:stop],
                                temperature, use_reentrant=False))
    return torch.cat(parts, dim=1) * batch.completion_mask


def final_hidden_states(model: torch.nn.Module, batch: TokenBatch) -> torch.Tensor:
    """The decoder's last (normed) hidden states (B, P + C, hidden), without the logits.

    A model sharded with FSDP (``run.parallel=fsdp``) runs through its root, whose forward
    gathers the embeddings, final norm and head and keeps them until the backward: the
    decoder called alone would meet sharded embeddings."""
    from torch.distributed.fsdp import FSDPModule

    if isinstance(base_model(model), FSDPModule):
        out = model(input_ids=batch.input_ids, attention_mask=batch.attention_mask, position_ids=batch.position_ids,
                    logits_to_keep=1, output_hidden_states=True, use_cache=False)
        return out.hidden_states[-1]
    return decoder(model)(input_ids=batch.input_ids, attention_mask=batch.attention_mask,
                          position_ids=batch.position_ids, use_cache=False).last_hidden_state


# Config fields of models whose logits are more than lm_head(hidden states).
_LOGIT_TRANSFORMS = ("final_logit_softcapping", "logit_scale", "logits_scaling")


def output_head(model: torch.nn.Module) -> torch.nn.Module:
    """The vocabulary projection, when the model's logits are exactly it applied to the
    decoder's final hidden states (what chunked log-probs recompute)."""
    config = getattr(model, "config", None)
    transforms = [name for name in _LOGIT_TRANSFORMS if getattr(config, name, None) not in (None, 1, 1.0)]
    head = output_embeddings(model)
    if transforms or head is None or not hasattr(model, "get_decoder"):
        what = f"its logits also apply {', '.join(transforms)}" if transforms else "it has no separate output head"
        raise ConfigError(f"optim.logprob_chunk_tokens cannot chunk {type(model).__name__}: {what}; "
                          "set optim.logprob_chunk_tokens=0")
    return head


def _head_logprobs(head: torch.nn.Module, hidden: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    return _picked_logprobs(head(hidden), ids, temperature)


def _picked_logprobs(logits: torch.Tensor, ids: torch.Tensor, temperature: float) -> torch.Tensor:
    logits = logits.float()
    if temperature > 0 and temperature != 1.0:
        logits = logits / temperature
    picked = torch.gather(logits, 2, ids.unsqueeze(-1)).squeeze(-1)
    return picked - torch.logsumexp(logits, dim=-1)
