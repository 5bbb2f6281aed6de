"""The settings the training math reads: GRPO's loss modes and fields, autocast precision,
what an episode's loss weighs as one sequence.

Torch-free and free of every other swe_srl module but :mod:`swe_srl.errors`, so that
:mod:`swe_srl.config` nests them (the ``grpo`` section is a :class:`GrpoLossConfig` plus the
sampling fields) while :mod:`swe_srl.rl.grpo` and :mod:`swe_srl.rl.logprobs` import them
without the configuration tree (the harness, hosts and sandbox settings it nests).
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum
from typing import Literal

from ..errors import ConfigError

Precision = Literal["auto", "bf16", "fp32"]
LossWeighting = Literal["episode", "turn", "token"]


class AdvantageScale(str, Enum):
    """What GRPO divides the centred rewards by."""

    GROUP = "group"  # the group's std (GRPO)
    BATCH = "batch"  # the std of all valid rewards in the batch (less noisy for small G)
    NONE = "none"  # nothing (Dr. GRPO: std scaling up-weights near-solved prompts)


class LossAggregation(str, Enum):
    """How GRPO's per-token losses become one scalar."""

    SEQ_MEAN_TOKEN_MEAN = "seq-mean-token-mean"  # GRPO / SRL papers: mean per sequence, then mean
    TOKEN_MEAN = "token-mean"  # DAPO: every token of the batch weighs the same
    SEQ_MEAN_TOKEN_SUM_NORM = "seq-mean-token-sum-norm"  # Dr. GRPO: token sum / (sequences * max_tokens)


@dataclass(frozen=True)
class GrpoLossConfig:
    """The GRPO loss's hyper-parameters (:func:`swe_srl.rl.grpo.grpo_loss`), the loss half of
    the ``grpo`` config section. Paper defaults (SRL): symmetric clip 0.2, no KL (beta 0),
    per-sequence mean aggregation."""

    beta: float = 0.0
    """KL coefficient to a frozen reference model (0 = no reference is loaded)."""
    clip_eps_low: float = 0.2
    """Lower clip range of the ratio: it is clipped to ``[1 - clip_eps_low, 1 + clip_eps_high]``."""
    clip_eps_high: float = 0.2
    """Upper clip range of the ratio (DAPO's clip-higher uses e.g. 0.28)."""
    loss_aggregation: LossAggregation = LossAggregation.SEQ_MEAN_TOKEN_MEAN
    """seq-mean-token-mean: mean over each completion's tokens, then over completions (the
    paper); token-mean: every token of the batch weighs the same (DAPO);
    seq-mean-token-sum-norm: token sum / (completions x max_new_tokens) (Dr. GRPO)."""
    tis_cap: float = 2.0
    """The truncation C of the importance weight (TRL's default 2)."""
    dual_clip: float = 3.0
    """Dual-clip constant c > 1: a token of a negative advantage weighs at most c times (verl's
    default 3); 0 = off."""
    is_veto: float = 0.0
    """Leave out tokens (or sequences, ``is_veto_level``) whose raw importance weight is above
    this (e.g. 20: a token the engine and trainer disagree on that much is a bug's signature,
    not a sample); 0 = off."""
    is_veto_level: Literal["token", "sequence"] = "token"

    def __post_init__(self) -> None:
        try:
            object.__setattr__(self, "loss_aggregation", LossAggregation(self.loss_aggregation))
        except ValueError:
            choices = [m.value for m in LossAggregation]
            raise ConfigError(f"grpo.loss_aggregation must be one of {choices}, "
                              f"got {self.loss_aggregation!r}") from None
        if self.beta < 0 or self.clip_eps_low < 0 or self.clip_eps_high < 0:
            raise ConfigError("grpo.beta and the clip ranges must be >= 0")
        if self.clip_eps_low >= 1:
            raise ConfigError(f"grpo.clip_eps_low must be in [0, 1), got {self.clip_eps_low}")
        if self.tis_cap < 1 or (self.dual_clip and self.dual_clip <= 1):
            raise ConfigError("grpo.tis_cap must be >= 1 and grpo.dual_clip > 1 (or 0 = off)")
        if self.is_veto and self.is_veto <= self.tis_cap:
            raise ConfigError("grpo.is_veto must be above grpo.tis_cap (or 0 = off)")
        if self.is_veto_level not in ("token", "sequence"):
            raise ConfigError(f"grpo.is_veto_level must be token or sequence, got {self.is_veto_level!r}")
