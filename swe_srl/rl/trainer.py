"""The training loop, in one function: :func:`train`.

Each optimizer step draws data items from the resumable order, samples a group of G per item
with the policy being trained, scores them, drops the groups whose rewards are all equal (no
signal: DAPO's dynamic sampling) and draws more until the batch holds ``optim.batch_size``
groups or ``grpo.max_resample_rounds`` rounds have run, computes group-normalised advantages,
and takes one clipped-surrogate GRPO step on the exact sampled token ids. Who samples is
``rollout.engine`` (:mod:`swe_srl.rl.engine`): the trained model itself, or a vLLM engine
that is sent the new weights after every step and whose batches are checked to be sampled
with the current ones. Where the groups come from is the source (:mod:`swe_srl.rl.sources`):
step targets for ``srl``, tasks run as Docker episodes for ``rlvr`` / ``hybrid``. ``sft`` swaps
only the step: cross-entropy on the expert's answer (:mod:`swe_srl.rl.sft`).

The SRL -> RLVR curriculum is ``swe-srl train --method rlvr --model <srl run dir>``: a run
folder given as the model starts from its latest checkpoint. The tensor math is in
:mod:`swe_srl.rl.grpo`, the update in :mod:`swe_srl.rl.update`, the run's state (processes,
model, optimizer, data order, logs, checkpoints, validation) in :mod:`swe_srl.rl.session`.
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from ..config import TrainConfig
from ..schemas import StepTarget, Task
from . import grpo, parallel
from .ahead import AheadEngine, Prefetch, check_ahead, data_position
from .distributed import init_distributed, shutdown_distributed
from .records import DrawLog, Group, SampledBatch
from .session import Session, TrainResult
from .sft import sft_step
from .sources import EpisodeSource, StepTargetSource
from .update import policy_update

Source = StepTargetSource | EpisodeSource


def train(config: TrainConfig, *, resume: bool = False, sampler: Any = None) -> TrainResult:
    """Run ``config.method`` to ``run.max_steps``; ``resume`` continues the run in
    ``run.out_dir`` from its latest checkpoint. ``sampler`` (a Policy) samples the rollouts
    instead of the trained model (a scripted policy in tests); its samples count as on-policy.
    Under torchrun, the process group is ended on return when this call started it (a caller
    that needs it afterwards starts it first)."""
    owner = not (torch.distributed.is_available() and torch.distributed.is_initialized())
    init_distributed(config.dist_timeout_s)  # started here with the run's timeout; the Session joins it
    try:
        return _train(config, resume, sampler)
    finally:
        if owner:  # ended before the interpreter ends it: gloo torn down at exit can abort the rank
            shutdown_distributed()


def _train(config: TrainConfig, resume: bool, sampler: Any) -> TrainResult:
    with Session(config, resume=resume, sampler=sampler) as session:
        ahead = config.rollout.async_ahead and config.method != "sft"
        if ahead:  # the next batch is drawn while the update runs, by a sampler one version behind
            check_ahead(config, session.dist.world_size, parallel.is_sharded(session.model))
            session.engine = AheadEngine(session.engine, session.policy, session.model, session.step)
            session.sampler = session.engine.sampler
        source = None if config.method == "sft" else make_source(session)
        ref_model = session.reference_model()  # the run's initial model, when grpo.beta > 0
        at_start = session.step == 0 and config.run.eval_every and config.run.eval_at_start
        val = session.validate_and_log() if at_start else {}
        final = session.resumed_from.path if session.resumed_from is not None else None
        prefetch: Prefetch | None = None  # rollout.async_ahead: the next step's batch, being drawn
        try:
            while session.step < config.run.max_steps:
                started = time.perf_counter()
                position = None  # the data position before a batch drawn ahead
                if source is None:  # sft: cross-entropy on the next batch of step targets
                    indices = session.order.take(config.optim.batch_size)
                    metrics = sft_step(session, indices)
                    drawn = DrawLog(ids=[session.item_id(i) for i in indices])
                else:
                    batch = prefetch.result() if prefetch else collect_batch(session,
                            source)  # draw -> score -> dynamic sampling
                    sampled = time.perf_counter()
                    prefetch = None
                    if ahead and session.step + 1 < config.run.max_steps:  # next batch, with these weights
                        position = session.order.state()
                        prefetch = Prefetch(lambda: collect_batch(session, source))
                    rewards = grpo.rewards_tensor([r for g in batch.kept for r in g.rewards])
                    advantages, divisors = group_advantages(session, rewards)  # group-normalised
                    sequences, per_sequence, valid = source.sequences(batch.kept, advantages, divisors)
                    staleness = session.engine.check(sequences, session.step)  # sampled with these weights?
                    if not ahead:
                        session.engine.release()  # engine asleep during the update (rollout.sleep_level)
                    metrics = policy_update(session, sequences, per_sequence, valid, ref_model,  # clipped surrogate
                                            max_tokens=source.max_tokens, max_chunk=source.max_chunk)
                    metrics.update(batch.metrics)
                    if isinstance(source, EpisodeSource):
                        metrics.update(source.pack_metrics(session.dist))  # turns -> rows of the update
                    updated = time.perf_counter()
                    metrics.update({"time/rollout_s": sampled - started, "time/update_s": updated - sampled})
                    if prefetch is not None:  # the sampler keeps this step's weights until its draw is done
                        prefetch.wait()
                    if ahead:
                        metrics.update({"rollout/staleness": staleness,
                                        "time/ahead_wait_s": time.perf_counter() - updated})
                    metrics.update(session.engine.push(session.model, session.step + 1))  # engine follows
                    drawn = batch.log
                session.step += 1
                with data_position(session, position):  # logged and saved as if not drawn ahead
                    session.log_step(metrics, drawn, time.perf_counter() - started)
                    last = session.step == config.run.max_steps
                    if session.due(config.run.eval_every) or (last and config.run.eval_every):
                        val = session.validate_and_log()
                    if session.due(config.run.save_every) or last:
                        final = session.save()
        finally:
            if prefetch is not None:
                prefetch.wait()  # its containers are closed before the source is
            if isinstance(source, EpisodeSource):
                source.close()  # its Ray host actors, if any
        return TrainResult(session.run_dir, session.step, final, val)


def make_source(session: Session) -> Source:
    """Step targets for srl; tasks run as Docker episodes for rlvr / hybrid."""
    if session.config.on_episodes:
        return EpisodeSource(session.config, session.sampler, [t for t in session.items if isinstance(t, Task)])
    return StepTargetSource(session.config, session.sampler, [t for t in session.items if isinstance(t, StepTarget)],
                            tokenizer=session.tokenizer)


def collect_batch(session: Session, source: Source) -> SampledBatch:
    """Dynamic sampling: rounds of draw + score until ``optim.batch_size`` groups with signal
    (reward std > ``grpo.dynamic_sampling_eps``) are kept over all ranks, or the round budget
    is spent. Every rank draws its strided share of each round's items."""
    d, cfg = session.dist, session.config
    want, G = cfg.optim.batch_size, cfg.grpo.num_generations
    drawn: list[Group] = []  # this rank's groups, every round
    ids: list[str] = []  # every rank's items, in draw order
    kept_serials: list[int] = []
    serial = 0
    for rounds in range(1, cfg.grpo.max_resample_rounds + 1):
        keep_rate = len(kept_serials) / serial if serial else 1.0
        # Draw for the observed keep rate (at most one batch), a multiple of the world size.
        count = min(want, math.ceil((want - len(kept_serials)) / max(keep_rate, 1.0 / want)))
        count = math.ceil(count / d.world_size) * d.world_size
        indices = session.order.take(count)
        ids += [session.item_id(i) for i in indices]
        mine = list(range(serial + d.rank, serial + count, d.world_size))
        with session.sampling_weights():  # fsdp: the whole model gathered while it samples
            groups = source.draw(mine, [indices[s - serial] for s in mine])
        drawn += groups
        serial += count
        signal = grpo.dynamic_sampling_mask(grpo.rewards_tensor([r for g in groups for r in g.rewards]), G,
                                            cfg.grpo.dynamic_sampling_eps)
        with_signal = [g.serial for g, keep in zip(groups, signal.tolist()) if keep]
        kept_serials = sorted(set(kept_serials) | {s for part in d.gather(with_signal) for s in part})
        if len(kept_serials) >= want:
            break
    # The first ``want`` groups in draw order: the same choice a single process makes.
    chosen = set(kept_serials[:want])
    per_group = {row[0]: row for part in d.gather([(g.serial, g.rewards, g.lengths) for g in drawn]) for row in part}
    # An item the source skipped (a prompt over data.max_prompt_tokens, a task the calibration
    # skips) logs empty lists.
    rows = [per_group.get(s, (s, [], [])) for s in range(serial)]
    log = DrawLog(ids=ids, rewards=[row[1] for row in rows], lengths=[row[2] for row in rows])
    metrics = sampling_metrics(session, drawn, kept=len(chosen), num_drawn=serial, rounds=rounds)
    metrics.update(source.metrics(drawn, d))
    return SampledBatch([g for g in drawn if g.serial in chosen], drawn, log, metrics)


def sampling_metrics(session: Session, drawn: list[Group], *, kept: int, num_drawn: int, rounds: int) -> dict[str,
        float]:
    """Reward and length statistics over every group drawn this step (all ranks)."""
    rewards = [r for g in drawn for r in g.rewards if r is not None]
    n, total, sq, bad, tokens, none, samples, prompts = session.dist.all_sum([
        len(rewards), sum(rewards), sum(r * r for r in rewards), sum(1 for r in rewards if r <= -1.0),
        sum(n for g in drawn for n in g.lengths), sum(1 for g in drawn for r in g.rewards if r is None),
        sum(len(g.lengths) for g in drawn),
        # the prompt tokens prefilled to sample them (step targets; episodes count turns apart)
        sum(len(getattr(s, "prompt_ids", ())) for g in drawn for s in g.samples)])
    return {
        "reward/mean": total / max(n, 1),
        "reward/std": grpo.std_from_moments(n, total, sq),
        "reward/format_error_rate": bad / max(n, 1),
        "reward/none": none,
        "filter_rate": 1.0 - kept / max(num_drawn, 1),
        "groups/kept": kept,
        "groups/drawn": num_drawn,
        "sampling_rounds": rounds,
        "completion_tokens": tokens,
        "prompt_tokens_sampled": prompts,
        "completion_len/mean": tokens / max(samples, 1),
    }


def group_advantages(session: Session, rewards: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(advantages ``[B]``, each group's divisor ``[B / G]``); with ``batch`` scaling the std is
    over every rank's batch."""
    g = session.config.grpo
    batch_std: float | None = None
    if g.advantage_scale == "batch":
        finite = rewards[torch.isfinite(rewards)].double()
        batch_std = grpo.std_from_moments(*session.dist.all_sum(
            [finite.numel(), float(finite.sum()), float((finite * finite).sum())]))
    if rewards.numel() == 0:
        return rewards, rewards
    return (grpo.group_advantages(rewards, g.num_generations, scale=g.advantage_scale, batch_std=batch_std),
            grpo.advantage_divisors(rewards, g.num_generations, scale=g.advantage_scale, batch_std=batch_std))
