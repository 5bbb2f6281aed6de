"""One masked sequence per episode (token in, token out) and how episodes weigh in the loss.

An episode is a list of turns, each a :class:`~swe_srl.policy.base.Sample` with the EXACT ids
its sampler saw (``prompt_ids``) and wrote (``completion_ids``). When turn k+1's prompt starts
with turn k's prompt + completion (``agent.context: conversation`` builds its prompts that way),
the two are one sequence: the tokens between turn k's completion and turn k+1's (the end of
turn k, the observation, the next assistant header) are context, masked out of the loss, and
turn k+1's completion is scored on the same context its sampler had. Nothing is re-tokenised,
so each completion's log-probs in the joined row equal those of its own forward (up to float
noise), and the shared prefix goes through the model once instead of once per turn: for 30
turns from a 4k-token issue, a few times fewer tokens (``benchmarks/episode_tokens.py``).

Where a turn does not extend the sequence (a sliding-window prompt, another weights version)
or would make it longer than ``max_tokens``, a new sequence starts from that turn's own prompt:
the per-turn forward of that turn, counted as a break or a cut. A single turn longer than the
limit still gets its own sequence (as before packing; the micro-batcher gives it a pass).

Weighting (``episodes.loss_weighting``) is set per token, as the weight ``1 / (tokens of the
token's unit)`` that ``grpo.loss_aggregation``'s per-sequence mean divides by, and as a count of
units for its normaliser: ``turn`` gives each turn's mean the same weight (the loss of one
sequence per turn, exactly), ``episode`` each episode's, ``token`` each token's.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace
from typing import Any

from .settings import LossWeighting


@dataclass(frozen=True)
class PackedSequence:
    """Consecutive turns of one episode as one row of the update. Quacks like a ``Sample``
    where the update reads one (``prompt_ids``, ``completion_ids``, ``logprobs``,
    ``weights_version``); ``completion_ids`` runs from the first turn's completion to the last
    one's, observations included, and ``loss_mask`` marks the sampled tokens among them."""

    prompt_ids: tuple[int, ...]
    completion_ids: tuple[int, ...]
    loss_mask: tuple[int, ...]
    turn_of: tuple[int, ...]
    """The turn (index in the episode) of each completion position; -1 on context tokens."""
    logprobs: tuple[float, ...] | None
    """The sampler's log-prob of each sampled token, 0.0 on context tokens; None when a turn
    has none (a scripted policy)."""
    weights_version: int | None
    turns: tuple[int, ...]
    """The episode's turns packed here, in order."""
    advantages: tuple[float, ...] = ()
    """Per completion position: its turn's advantage (0.0 on context), set by :func:`weigh`."""
    unit_weights: tuple[float, ...] = ()
    """Per completion position: 1 / the token count of its loss unit (0.0 on context)."""
    units: float = 0.0
    """How many of the aggregation's sequences this row holds, for the normaliser (an episode
    split over rows counts on its first row)."""

    @property
    def num_tokens(self) -> int:
        """Sampled (loss-carrying) tokens."""
        return sum(self.loss_mask)


@dataclass
class PackStats:
    """What packing did, summed over episodes (``episodes/pack_*`` metrics)."""

    turns: int = 0
    sequences: int = 0
    breaks: int = 0
    """Turns whose prompt did not extend the sequence before them (new sequence)."""
    cuts: int = 0
    """Turns that would have made the sequence longer than the limit (new sequence)."""

    def add(self, other: PackStats) -> None:
        self.turns += other.turns
        self.sequences += other.sequences
        self.breaks += other.breaks
        self.cuts += other.cuts


def _extends(ids: Sequence[int], prompt: Sequence[int]) -> bool:
    return len(prompt) >= len(ids) and tuple(prompt[:len(ids)]) == tuple(ids)


def pack_turns(samples: Sequence[Any], *, pack: bool = True, max_tokens: int = 0) -> tuple[list[PackedSequence],
        PackStats]:
    """The rows of one episode's turns (``Sample`` records, in order). ``pack`` False: one row
    per turn. ``max_tokens`` > 0: no joined row longer than that (prompt + completion)."""
    stats = PackStats(turns=len(samples))
    rows: list[dict[str, Any]] = []
    for index, s in enumerate(samples):
        completion = tuple(s.completion_ids)
        row = rows[-1] if rows else None
        joinable = False
        if pack and row is not None:
            ids = row["ids"]
            same_kind = (s.weights_version == row["version"]) and ((s.logprobs is None) == (row["logprobs"] is None))
            if same_kind and _extends(ids, s.prompt_ids):
                if max_tokens and len(s.prompt_ids) + len(completion) > max_tokens:
                    stats.cuts += 1
                else:
                    joinable = True
            else:
                stats.breaks += 1
        if joinable and row is not None:
            gap = tuple(s.prompt_ids[len(row["ids"]):])
            row["ids"] += gap + completion
            row["mask"] += (0,) * len(gap) + (1,) * len(completion)
            row["turn_of"] += (-1,) * len(gap) + (index,) * len(completion)
            if row["logprobs"] is not None:
                row["logprobs"] += (0.0,) * len(gap) + tuple(float(x) for x in s.logprobs)
            row["turns"] += (index,)
            continue
        rows.append({"prompt": tuple(s.prompt_ids), "ids": tuple(s.prompt_ids) + completion,
                     "mask": (1,) * len(completion), "turn_of": (index,) * len(completion),
                     "logprobs": None if s.logprobs is None else tuple(float(x) for x in s.logprobs),
                     "version": s.weights_version, "turns": (index,)})
    out = [PackedSequence(prompt_ids=r["prompt"], completion_ids=r["ids"][len(r["prompt"]):], loss_mask=r["mask"],
                          turn_of=r["turn_of"], logprobs=r["logprobs"], weights_version=r["version"],
                          turns=r["turns"]) for r in rows]
    stats.sequences = len(out)
    return out, stats


def weigh(rows: Sequence[PackedSequence], turn_advantages: Sequence[float], turn_tokens: Sequence[int],
          weighting: LossWeighting) -> list[PackedSequence]:
    """``rows`` of one episode with each position's advantage (its turn's) and its unit weight
    under ``weighting``; ``turn_tokens`` are the completion lengths of the episode's turns."""
    episode_tokens = sum(turn_tokens)
    out = []
    for row in rows:
        advantages = tuple(float(turn_advantages[t]) if t >= 0 else 0.0 for t in row.turn_of)
        if weighting == "turn":
            weights = tuple(1.0 / turn_tokens[t] if t >= 0 else 0.0 for t in row.turn_of)
            units = float(len(row.turns))
        elif weighting == "episode":
            weights = tuple(1.0 / episode_tokens if t >= 0 else 0.0 for t in row.turn_of)
            # a whole episode counts as one unit, on its first row when it is split over rows
            # (whole numbers: the normaliser sums them exactly)
            units = float(row is rows[0])
        else:
            weights = tuple(1.0 if t >= 0 else 0.0 for t in row.turn_of)
            units = float(row.num_tokens)
        out.append(replace(row, advantages=advantages, unit_weights=weights, units=units))
    return out
