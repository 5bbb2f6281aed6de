"""GRPO as pure tensor math: advantages, dynamic sampling, the clipped surrogate, KL, loss.

No models, no sampling, no sandboxes: the trainer calls these on tensors it gathered.
Shapes: rewards ``[B]`` with ``B = num_groups * group_size`` (the G samples of a prompt are
contiguous); per-token tensors ``[B, T]`` with a mask that is True on the policy's own
completion tokens (prompt, padding and observations False).

Rewards that are None (left out: the grading harness failed) travel as NaN. They are
excluded from their group's statistics, get advantage 0 and zero loss weight: an
infrastructure failure must not pull the group mean or look like a bad answer.

The settings it reads are :mod:`swe_srl.rl.settings`' (torch-free, imported by the config
tree, not importing it): this module pulls no sandbox, Docker or Ray module
(tests/rl/test_import_tower.py).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence
from typing import NamedTuple

import torch
from torch import Tensor

from ..errors import ConfigError, InputError
from .settings import AdvantageScale, GrpoLossConfig, LossAggregation


def rewards_tensor(rewards: Sequence[float | None], device: torch.device | str | None = None) -> Tensor:
    """Rewards as a float32 tensor, None -> NaN."""
    return torch.tensor([math.nan if r is None else float(r) for r in rewards],
                        dtype=torch.float32, device=device)


def _grouped(rewards: Tensor, group_size: int) -> Tensor:
    if rewards.dim() != 1:
        raise InputError(f"rewards must be a 1-d tensor, got shape {tuple(rewards.shape)}")
    if group_size < 1 or rewards.numel() % group_size:
        raise InputError(f"{rewards.numel()} rewards do not split into groups of {group_size}")
    return rewards.float().view(-1, group_size)


def group_stats(rewards: Tensor, group_size: int) -> tuple[Tensor, Tensor, Tensor]:
    """Per group (mean, std, count) over the finite rewards; std is the population std
    (a group with one valid reward has std 0). Groups with no valid reward get 0, 0, 0."""
    grouped = _grouped(rewards, group_size)
    valid = torch.isfinite(grouped)
    count = valid.sum(dim=1)
    denom = count.clamp(min=1).to(grouped.dtype)
    mean = torch.where(valid, grouped, 0.0).sum(dim=1) / denom
    centred = torch.where(valid, grouped - mean[:, None], 0.0)
    std = (centred.pow(2).sum(dim=1) / denom).sqrt()
    return mean, std, count


def std_from_moments(count: float, total: float, squares: float) -> float:
    """Population std from (count, sum, sum of squares): how a std over every rank's rewards
    is computed from three all-reduced numbers."""
    if count <= 0:
        return 0.0
    mean = total / count
    return math.sqrt(max(squares / count - mean * mean, 0.0))


def advantage_divisors(rewards: Tensor, group_size: int, *,
                       scale: AdvantageScale | str = AdvantageScale.GROUP, eps: float = 1e-4,
                       batch_std: float | None = None) -> Tensor:
    """``[num_groups]``: what each group's centred rewards are divided by: the group std + eps
    (group), the batch std + eps (batch; ``batch_std`` when given, see :func:`std_from_moments`,
    else the std of this tensor's valid rewards), or 1 (none)."""
    scale = AdvantageScale(scale)
    _, std, _ = group_stats(rewards, group_size)
    if scale is AdvantageScale.GROUP:
        return std + eps
    if scale is AdvantageScale.BATCH:
        if batch_std is None:
            finite = rewards[torch.isfinite(rewards)].float()
            batch_std = float(finite.std(correction=0)) if finite.numel() else 0.0
        return torch.full_like(std, batch_std + eps)
    return torch.ones_like(std)


def group_advantages(rewards: Tensor, group_size: int, *,
                     scale: AdvantageScale | str = AdvantageScale.GROUP, eps: float = 1e-4,
                     batch_std: float | None = None) -> Tensor:
    """``(r - group mean) / divisor`` per sample, ``[B]``; 0 where the reward is NaN. The
    divisor is :func:`advantage_divisors`'."""
    grouped = _grouped(rewards, group_size)
    valid = torch.isfinite(grouped)
    mean, _, _ = group_stats(rewards, group_size)
    divisors = advantage_divisors(rewards, group_size, scale=scale, eps=eps, batch_std=batch_std)
    centred = torch.where(valid, grouped - mean[:, None], 0.0) / divisors[:, None]
    return centred.reshape(-1)


def dynamic_sampling_mask(rewards: Tensor, group_size: int, threshold: float = 1e-6) -> Tensor:
    """``[num_groups]`` bool, True for groups worth training on: reward std > ``threshold``.

    A group whose samples all scored the same has zero advantage everywhere and only adds
    noise to the normaliser (DAPO's dynamic sampling drops it and samples more). The
    default threshold is just above float noise, since a mean of equal floats is not
    always exactly equal to them. A negative threshold keeps every group."""
    _, std, _ = group_stats(rewards, group_size)
    return std > threshold


class Surrogate(NamedTuple):
    """Per-token clipped surrogate loss and what the clip did, all ``[B, T]``."""

    loss: Tensor
    ratio: Tensor
    clipped_low: Tensor
    clipped_high: Tensor
    clipped_dual: Tensor


def clipped_surrogate(logprobs: Tensor, old_logprobs: Tensor, advantages: Tensor, mask: Tensor, *,
                      clip_low: float = 0.2, clip_high: float = 0.2, dual_clip: float = 0.0) -> Surrogate:
    """PPO's clipped objective per token, negated into a loss: ``-min(r A, clip(r) A)`` with
    ``r = exp(logp - old_logp)`` clipped to ``[1 - clip_low, 1 + clip_high]`` (DAPO raises
    ``clip_high``). ``advantages`` is ``[B]`` (one per sequence) or ``[B, T]``.

    ``dual_clip`` c > 1 (Ye et al. 2020): for a negative advantage the objective is also
    bounded below by ``c A``, so a token whose ratio ran far above 1 (old log-probs from another
    implementation, e.g. a vLLM engine) weighs at most c, not ``r``; 0 turns it off."""
    mask = mask.bool()
    # Zero the log-ratio off the mask before exp: padding logprobs can be -inf, and an inf
    # in the branch torch.where discards still turns the backward pass into NaN.
    log_ratio = torch.where(mask, logprobs.float() - old_logprobs.float(), 0.0)
    ratio = torch.exp(log_ratio)
    adv = advantages.float()
    if adv.dim() == 1:
        adv = adv[:, None]
    unclipped = ratio * adv
    clipped = torch.clamp(ratio, 1.0 - clip_low, 1.0 + clip_high) * adv
    per_token = -torch.minimum(unclipped, clipped)
    clipped_dual = torch.zeros_like(mask)
    if dual_clip > 0:
        bound = -dual_clip * adv  # the loss of a negative advantage is at most -c A (> 0)
        clipped_dual = mask & (adv < 0) & (per_token > bound)
        per_token = torch.where(adv < 0, torch.minimum(per_token, bound), per_token)
    loss = torch.where(mask, per_token, 0.0)
    clipped_low = mask & (ratio < 1.0 - clip_low) & (adv < 0)
    clipped_high = mask & (ratio > 1.0 + clip_high) & (adv > 0)
    return Surrogate(loss, ratio, clipped_low, clipped_high, clipped_dual)


class ISWeights(NamedTuple):
    """Truncated importance sampling (TIS) between the trainer and the engine that sampled."""

    weight: Tensor  # [B, T] min(exp(trainer - engine), cap), 0 where vetoed; detached
    raw: Tensor  # [B, T] exp(trainer - engine), before the cap
    vetoed: Tensor  # [B, T] bool


def truncated_is_weights(trainer_logprobs: Tensor, engine_logprobs: Tensor, mask: Tensor, *, cap: float,
                         veto: float = 0.0, veto_level: str = "token") -> ISWeights:
    """``min(exp(trainer - engine), cap)`` per token (Yao et al. 2025; TRL, OpenRLHF and slime
    do the same): the engine's samples re-weighted towards the trainer's distribution, the
    weight truncated so one mismatched token cannot dominate. ``veto`` > 0 zeroes tokens
    (``veto_level`` token) or whole sequences (sequence) with a raw weight above it."""
    mask = mask.bool()
    log_w = torch.where(mask, trainer_logprobs.detach().float() - engine_logprobs.float(), 0.0)
    raw = torch.exp(log_w)
    vetoed = torch.zeros_like(mask)
    if veto > 0:
        vetoed = mask & (raw > veto)
        if veto_level == "sequence":
            vetoed = mask & vetoed.any(dim=1, keepdim=True)
    weight = torch.where(vetoed, 0.0, torch.clamp(raw, max=cap))
    return ISWeights(weight, raw, vetoed)


K3_CLAMP = 10.0


def k3_kl(logprobs: Tensor, ref_logprobs: Tensor, mask: Tensor | None = None) -> Tensor:
    """Per-token k3 estimate of KL(policy || reference): ``exp(d) - d - 1``, ``d = ref - logp``
    (unbiased, always >= 0, low variance; Schulman 2020). 0 off the mask."""
    delta = ref_logprobs.float() - logprobs.float()
    if mask is not None:
        delta = torch.where(mask.bool(), delta, 0.0)
    # Clamped (as verl does, +-10): a token the reference finds e^30 likelier would otherwise
    # give a 1e13 loss term and an inf gradient in bf16.
    delta = delta.clamp(-K3_CLAMP, K3_CLAMP)
    return torch.exp(delta) - delta - 1.0


def aggregate(values: Tensor, mask: Tensor, mode: LossAggregation | str, *, max_tokens: int | None = None,
              num_sequences: float | None = None, num_tokens: float | None = None,
              unit_weights: Tensor | None = None) -> Tensor:
    """One scalar from per-token ``values`` ``[B, T]`` under ``mask``.

    Sequences without any masked-in token do not count. ``num_sequences`` / ``num_tokens``
    override the local counts so that micro-batches of one optimiser step share the global
    normaliser; ``max_tokens`` (Dr. GRPO's constant) defaults to ``T``.

    ``unit_weights`` ``[B, T]``: a row holds several of the aggregation's sequences (the turns
    of an episode packed into one masked row, :mod:`swe_srl.rl.episode_pack`); each token
    carries 1 / its unit's token count, which the per-sequence mean divides by, and
    ``num_sequences`` counts units, not rows."""
    mode = LossAggregation(mode)
    mask = mask.bool()
    masked = torch.where(mask, values, 0.0)
    tokens_per_seq = mask.sum(dim=1)
    sequences = num_sequences if num_sequences is not None else float((tokens_per_seq > 0).sum().clamp(min=1))
    if mode is LossAggregation.TOKEN_MEAN:
        tokens = num_tokens if num_tokens is not None else float(mask.sum().clamp(min=1))
        return masked.sum() / tokens
    if mode is LossAggregation.SEQ_MEAN_TOKEN_MEAN and unit_weights is not None:
        return (masked * unit_weights.to(masked.dtype)).sum() / sequences
    if mode is LossAggregation.SEQ_MEAN_TOKEN_MEAN:
        per_seq = masked.sum(dim=1) / tokens_per_seq.clamp(min=1)
        return per_seq.sum() / sequences
    width = max_tokens if max_tokens is not None else values.shape[1]
    return masked.sum() / (sequences * width)


def _masked_mean(values: Tensor, mask: Tensor) -> float:
    count = int(mask.sum())
    return float(torch.where(mask, values.float(), 0.0).sum() / count) if count else 0.0


def grpo_loss(logprobs: Tensor, old_logprobs: Tensor | None, advantages: Tensor, mask: Tensor, *,
              ref_logprobs: Tensor | None = None, sample_mask: Tensor | None = None,
              config: GrpoLossConfig = GrpoLossConfig(), max_tokens: int | None = None,
              num_sequences: float | None = None, num_tokens: float | None = None,
              engine_logprobs: Tensor | None = None,
              unit_weights: Tensor | None = None) -> tuple[Tensor, dict[str, float]]:
    """The GRPO loss of one (micro-)batch and its metrics.

    ``logprobs`` ``[B, T]`` carries the gradient; ``old_logprobs`` are the sampling policy's
    (None: a single on-policy update, ratio 1 with the gradient of logprobs);
    ``ref_logprobs`` are needed when ``config.beta > 0``; ``sample_mask`` ``[B]`` removes
    samples from the loss (NaN rewards, dropped groups). ``engine_logprobs``: the log-probs of
    another implementation that sampled the tokens (a vLLM engine): each token's loss is then
    weighted by :func:`truncated_is_weights` (``is_weight_max``, ``is_clip_fraction``,
    ``is_veto_fraction`` and ``mismatch_kl``, the k3 estimate of KL(engine || trainer), say
    how far apart the two were). ``max_tokens``, ``num_sequences``, ``num_tokens`` and
    ``unit_weights``: see :func:`aggregate` (``max_tokens``: the generation budget,
    ``generation.max_new_tokens``; ``unit_weights``: packed episodes).
    Metrics are token means over the
    masked-in tokens: ``clip_fraction`` (``clip_low_fraction`` + ``clip_high_fraction``),
    ``ratio_mean``/``ratio_min``/``ratio_max``, ``kl``, plus ``policy_loss``, ``kl_loss``,
    ``tokens``, ``sequences``."""
    if config.beta > 0 and ref_logprobs is None:
        raise ConfigError("beta > 0 needs reference logprobs (ref_logprobs)")
    if max_tokens is not None and max_tokens < 1:
        raise ConfigError(f"max_tokens must be >= 1, got {max_tokens}")
    if old_logprobs is None:
        old_logprobs = logprobs.detach()
    mask = mask.bool()
    advantages = advantages.float()
    finite = torch.isfinite(advantages) if advantages.dim() == 1 else torch.isfinite(advantages).all(dim=1)
    keep = finite if sample_mask is None else finite & sample_mask.bool()
    mask = mask & keep[:, None]
    advantages = torch.nan_to_num(advantages, nan=0.0, posinf=0.0, neginf=0.0)

    terms = clipped_surrogate(logprobs, old_logprobs, advantages, mask,
                              clip_low=config.clip_eps_low, clip_high=config.clip_eps_high,
                              dual_clip=config.dual_clip)
    agg = functools.partial(aggregate, mode=config.loss_aggregation, max_tokens=max_tokens,
                            num_sequences=num_sequences, num_tokens=num_tokens, unit_weights=unit_weights)
    per_token = terms.loss
    tis = None
    if engine_logprobs is not None:
        tis = truncated_is_weights(old_logprobs, engine_logprobs, mask, cap=config.tis_cap,
                                   veto=config.is_veto, veto_level=config.is_veto_level)
        per_token = per_token * tis.weight
    policy_loss = agg(per_token, mask)
    kl_tokens = k3_kl(logprobs, ref_logprobs, mask) if ref_logprobs is not None else None
    kl_loss = agg(kl_tokens, mask) if kl_tokens is not None else torch.zeros(())
    loss = policy_loss + config.beta * kl_loss if config.beta > 0 else policy_loss

    with torch.no_grad():
        ratio = terms.ratio.detach()
        tokens = int(mask.sum())
        metrics = {
            "policy_loss": float(policy_loss.detach()),
            "kl_loss": float(kl_loss.detach()),
            "kl": _masked_mean(kl_tokens.detach(), mask) if kl_tokens is not None else 0.0,
            "clip_low_fraction": _masked_mean(terms.clipped_low.float(), mask),
            "clip_high_fraction": _masked_mean(terms.clipped_high.float(), mask),
            "ratio_mean": _masked_mean(ratio, mask) if tokens else 1.0,
            "ratio_min": float(ratio[mask].min()) if tokens else 1.0,
            "ratio_max": float(ratio[mask].max()) if tokens else 1.0,
            "clip_dual_fraction": _masked_mean(terms.clipped_dual.float(), mask),
            "tokens": float(tokens),
            "sequences": float((mask.sum(dim=1) > 0).sum()),
            "is_weight_max": float(tis.raw[mask].max()) if tis is not None and tokens else 1.0,
            "is_clip_fraction": _masked_mean((tis.raw > config.tis_cap).float(), mask) if tis is not None else 0.0,
            "is_veto_fraction": _masked_mean(tis.vetoed.float(), mask) if tis is not None else 0.0,
            # k3 of KL(engine || trainer) on the engine's samples: r - log r - 1, r = trainer / engine
            "mismatch_kl": _masked_mean(k3_kl(engine_logprobs, old_logprobs, mask), mask)
            if engine_logprobs is not None else 0.0,
        }
        metrics["clip_fraction"] = metrics["clip_low_fraction"] + metrics["clip_high_fraction"]
    return loss, metrics
