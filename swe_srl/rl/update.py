"""One GRPO optimizer step on sampled sequences: recompute their log-probs under the trained
model (exact sampled token ids), the clipped surrogate (+ optional KL to a frozen reference)
with the global normalisers, backward in micro-batches, then one optimizer step."""

from __future__ import annotations

import contextlib
import math
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

import torch

from ..config import TrainConfig
from . import grpo
from .engine import sampler_logprobs
from .episode_pack import PackedSequence
from .logprobs import TokenBatch, autocast, completion_logprobs, micro_batches
from .optim import lr_at, optimizer_step
from .parallel import aligned_passes

if TYPE_CHECKING:  # the run's state, handed down (imported for types only: no cycle)
    from .session import Session

# grpo_loss metrics averaged over tokens for the log.
TOKEN_METRICS = ("kl", "clip_fraction", "clip_dual_fraction", "ratio_mean", "logprob_gap", "is_clip_fraction",
                 "is_veto_fraction", "mismatch_kl")


def uses_tis(config: TrainConfig, bf16: bool = False) -> bool:
    """Whether the sampler's log-probs are corrected by truncated importance sampling (else,
    bypass: a vLLM engine's are the ratio's old log-probs; the trained model's own are ignored).

    auto: with vllm; and with hf when the run trains in bf16 (``bf16``): the trained model then
    samples with a KV cache and scores the whole sequence at once, both under bf16 autocast, and
    the two differ per token (measured 0.03-0.04 nats/token on SmolLM2-135M): the sampled tokens
    are not exactly the scored model's, which a ratio forced to 1 would ignore."""
    mode = config.grpo.rollout_correction
    return mode == "tis" or (mode == "auto" and (config.rollout.engine == "vllm" or bf16))


def policy_update(session: Session, samples: Sequence[Any], advantages: torch.Tensor, valid: torch.Tensor,
                  ref_model: torch.nn.Module | None, *, max_tokens: int, max_chunk: int = 0) -> dict[str, float]:
    """One optimizer step on ``samples`` (each with exact ``prompt_ids`` / ``completion_ids``),
    one advantage per sample, under the run's GRPO loss settings (``grpo``); ``valid`` False (a
    None reward) leaves a sample out of the loss and its normalisers. ``max_tokens``: the
    generation budget (Dr. GRPO's normaliser, ``grpo.loss_aggregation: seq-mean-token-sum-norm``).
    ``max_chunk`` > 0 caps the sequences per forward/backward pass (unless
    ``optim.max_tokens_per_microbatch`` packs them by tokens instead). Every rank
    calls it, even with no samples (the gradient all-reduce needs every rank)."""
    cfg, d = session.config, session.dist
    valid = valid.bool() if len(samples) else torch.zeros(0, dtype=torch.bool)
    # Packed episodes (rl/episode_pack.py) carry their loss mask, per-position advantages and
    # unit weights; a row counts as the units of the aggregation it holds.
    packed = any(isinstance(s, PackedSequence) for s in samples)
    tokens = sum(policy_tokens(s) for s, v in zip(samples, valid) if v)
    units = sum(s.units if packed else 1.0 for s, v in zip(samples, valid) if v)
    n_seq, n_tok = d.all_sum([float(units), float(tokens)])
    temperature = cfg.generation.temperature or 1.0
    parts = cfg.optim.grad_accumulation
    if max_chunk > 0:
        parts = max(parts, math.ceil(len(samples) / max_chunk))
    shapes = [(len(s.prompt_ids), len(s.completion_ids)) for s in samples]
    chunk_tokens = cfg.optim.logprob_chunk_tokens
    loss_sum, weight, weight_max = 0.0, 0.0, 1.0
    tis = uses_tis(cfg, session.bf16)
    weighted = dict.fromkeys(TOKEN_METRICS, 0.0)  # same keys on every rank: they are all-reduced
    # fsdp: every rank runs as many passes as the busiest one (zero-weight padding passes).
    with dropout_off(session.model):
        for part in aligned_passes(session, micro_batches(shapes, parts, cfg.optim.max_tokens_per_microbatch),
                                   ref_model):
            rows = [samples[i] for i in part]
            batch = TokenBatch.build([s.prompt_ids for s in rows], [s.completion_ids for s in rows],
                                     session.tokenizer.pad_token_id, d.device,
                                     loss_masks=[s.loss_mask for s in rows] if packed else None)
            part_advantages = position_values(rows, "advantages", batch) if packed else advantages[part]
            unit_weights = position_values(rows, "unit_weights", batch) if packed else None
            with autocast(d.device, session.bf16):
                logprobs = completion_logprobs(session.model, batch, temperature, chunk_tokens)
                ref = None
                if ref_model is not None:
                    with torch.no_grad():
                        ref = completion_logprobs(ref_model, batch, temperature, chunk_tokens)
            # One update per batch. Engine log-probs: None when the trained model sampled (rollout.engine
            # hf: ratio 1 with the policy gradient), the engine's own for vllm (rl/engine.py): with
            # TIS they weigh each token, min(exp(trainer - engine), cap); bypassed, they are the
            # ratio's old log-probs (dual-clip bounds the negative advantages).
            drawn = [samples[i] for i in part]
            engine = session.engine.old_logprobs(drawn, logprobs)
            if tis and engine is None and all(s.logprobs is not None for s in drawn):
                engine = sampler_logprobs(drawn, logprobs)  # the trained model sampled (hf): its own
            old, engine = (None, engine) if tis else (engine, None)
            loss, metrics = grpo.grpo_loss(logprobs, old, part_advantages, batch.completion_mask,
                                           ref_logprobs=ref, sample_mask=valid[part], config=cfg.grpo,
                                           max_tokens=max_tokens,
                                           num_sequences=max(n_seq, 1.0), num_tokens=max(n_tok, 1.0),
                                           engine_logprobs=engine, unit_weights=unit_weights)
            weight_max = max(weight_max, metrics["is_weight_max"])
            loss.backward()
            # Each micro-batch's loss is already divided by the global count: the parts add up.
            loss_sum += float(loss.detach())
            metrics["logprob_gap"] = sampler_gap(logprobs.detach(), [samples[i] for i in part])
            for key in TOKEN_METRICS:
                weighted[key] += metrics[key] * metrics["tokens"]
            weight += metrics["tokens"]
    lr = lr_at(cfg.optim, session.step, cfg.run.max_steps)
    if n_seq > 0:
        grad_norm = optimizer_step(session.model, session.optimizer, cfg.optim, d, lr)
    else:  # nothing to learn from on any rank: no AdamW step on momentum and weight decay alone
        session.optimizer.zero_grad(set_to_none=True)
        grad_norm = 0.0
    forwarded = float(sum(p + c for p, c in shapes))  # prompt + completion tokens through the model
    sums = d.all_sum([loss_sum, weight, forwarded] + [weighted[k] for k in TOKEN_METRICS])
    out = {f"train/{k}": v / max(sums[1], 1.0) for k, v in zip(TOKEN_METRICS, sums[3:])}
    out.update({"train/loss": sums[0], "train/grad_norm": grad_norm, "train/lr": lr,
                "train/forward_tokens": sums[2],
                "train/is_weight_max": max(d.gather(weight_max)),  # the tail of trainer / engine
                "train/sequences": n_seq, "train/skipped_update": float(n_seq == 0)})
    return out


@contextlib.contextmanager
def dropout_off(model: torch.nn.Module) -> Iterator[None]:
    """Every ``nn.Dropout`` of ``model`` (LoRA's ``lora_dropout`` included) in eval mode: the
    sampler drew the tokens without dropout (rollouts run in eval mode), so the update's
    log-probs must be of that same function, or the importance ratio and the policy gradient
    are taken on a randomly thinned model. Only the Dropout modules: the rest stays in train
    mode (activation checkpointing is active only in train mode)."""
    switched = [m for m in model.modules() if isinstance(m, torch.nn.Dropout) and m.training]
    for m in switched:
        m.eval()
    try:
        yield
    finally:
        for m in switched:
            m.train()


def policy_tokens(sample: Any) -> int:
    """Loss-carrying tokens of a sequence: its completion, or a packed episode's sampled tokens."""
    return sample.num_tokens if isinstance(sample, PackedSequence) else len(sample.completion_ids)


def position_values(rows: Sequence[PackedSequence], name: str, batch: TokenBatch) -> torch.Tensor:
    """``[B, C]`` of a per-position field of packed rows, 0 past each row's end."""
    out = torch.zeros(batch.completion_mask.shape, dtype=torch.float32)
    for i, row in enumerate(rows):
        values = getattr(row, name)
        if values:
            out[i, :len(values)] = torch.tensor(values, dtype=torch.float32)
    return out.to(batch.completion_mask.device)


def sampler_gap(logprobs: torch.Tensor, samples: Sequence[Any]) -> float:
    """Mean |trainer - sampler| log-prob per sampled token: ~0 unless tokens or templates disagree."""
    gaps, count = 0.0, 0
    for i, s in enumerate(samples):
        if s.logprobs is None or not s.completion_ids:
            continue
        theirs = torch.tensor(s.logprobs, dtype=torch.float32, device=logprobs.device)
        diff = (logprobs[i, :len(theirs)].float() - theirs).abs()
        if isinstance(s, PackedSequence):  # context positions are no sampled tokens
            diff = diff * torch.tensor(s.loss_mask, dtype=torch.float32, device=logprobs.device)
        gaps += float(diff.sum())
        count += policy_tokens(s)
    return gaps / count if count else 0.0
