"""Where the GRPO loop's groups come from: a data item is drawn, G samples of it are made and
rewarded, and the samples become the sequences of the update.

* :class:`StepTargetSource` (``srl``): an item is a step target; a sample is one completion
  (``<think>`` + one action) rewarded by the similarity of its action to the expert's; each
  completion is one sequence with its own advantage.
* :class:`EpisodeSource` (``rlvr`` / ``hybrid``): an item is a task; a sample is one whole
  episode of the current policy in a fresh sandbox, graded in a fresh container (by the run's
  :class:`~swe_srl.runner.EpisodeRunner`, wherever ``harness.sandbox`` says) and rewarded by
  :mod:`swe_srl.rewards.episode`.
  Credit assignment: every turn carries the episode's advantage on its EXACT sampled ids; the
  turns are rows of the update (:mod:`.episode_pack`): one masked row per episode when each
  turn's prompt extends the last (``agent.context: conversation``), else one row per turn (its
  prompt ids hold the issue and earlier rounds as context), weighed per
  ``episodes.loss_weighting``. An infrastructure failure gives the episode reward
  None: it is left out of its group's statistics and of the loss, and counted. A task the
  calibration (:mod:`swe_srl.calibration`) calls broken, or flaky with ``episodes.flaky:
  skip``, is skipped when drawn (no group, counted); a flaky one with ``downweight`` has its
  episodes' advantages scaled. Skipping at the draw keeps the data order, and so ``--resume``,
  independent of the calibration.

Both expose the same four members the loop uses: ``draw``, ``sequences``, ``metrics`` and
``max_tokens`` / ``max_chunk`` (the update's Dr. GRPO normaliser and chunking).
"""

from __future__ import annotations

import json
import logging
from collections import Counter
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..actions import render_xml
from ..calibration import episode_weight, resolve_calibration, verdict_counts
from ..config import EpisodeConfig, LossWeighting, TrainConfig
from ..errors import ConfigError, InputError, RecordError
from ..harness import GradedEpisode
from ..paths import DEMO_EXPERTS as DEFAULT_EXPERTS
from ..policy.base import Policy
from ..prompts import messages_for_target
from ..rewards.episode import SIMILARITY, TESTS, reward_weights, score_episode, turn_credit
from ..rewards.scanner import TAMPERING
from ..runner import open_runner
from ..schemas import ResourceUsage, StepTarget, Task, Trajectory
from .distributed import Dist
from .episode_pack import PackedSequence, PackStats, pack_turns, weigh
from .prompt_budget import PromptBudget
from .records import EpisodeTotals, Group

log = logging.getLogger(__name__)


class StepTargetSource:
    """``srl``: G completions per step target, scored by the SRL similarity reward. A step
    target whose prompt is over ``data.max_prompt_tokens`` is shortened, or skipped (no group)."""

    max_chunk = 0  # completions are short: ``optim.grad_accumulation`` alone splits the batch

    def __init__(self, config: TrainConfig, sampler: Policy, targets: Sequence[StepTarget],
                 tokenizer: Any = None) -> None:
        self.config, self.sampler, self.targets = config, sampler, targets
        self.reward_fn = config.reward.step_reward()
        self.max_tokens = config.generation.max_new_tokens
        self.budget = PromptBudget(tokenizer if tokenizer is not None else getattr(sampler, "tokenizer", None),
                                   config.data)

    def draw(self, serials: Sequence[int], indices: Sequence[int]) -> list[Group]:
        """Sample and score one group per item index (this rank's share; none for a skipped one)."""
        fitted = [(serial, self.budget.fit(self.targets[i])) for serial, i in zip(serials, indices)]
        serials = [serial for serial, t in fitted if t is not None]
        targets = [t for _, t in fitted if t is not None]
        if not targets:
            return []
        G = self.config.grpo.num_generations
        gen = replace(self.config.generation, n=G)
        outputs = self.sampler.generate([messages_for_target(t) for t in targets], gen)
        rewards = self.reward_fn([s.text for group in outputs for s in group],
                                 [{"target": t.target} for t in targets for _ in range(G)])
        return [Group(serial, t.id, list(samples), list(rewards[i * G:(i + 1) * G]),
                      [len(s.completion_ids) for s in samples])
                for i, (serial, t, samples) in enumerate(zip(serials, targets, outputs))]

    def sequences(self, groups: Sequence[Group], advantages: torch.Tensor,
                  divisors: torch.Tensor) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
        """(sequences, their advantages, valid) of the update: one per completion."""
        samples = [s for g in groups for s in g.samples]
        valid = torch.tensor([r is not None for g in groups for r in g.rewards], dtype=torch.bool)
        return samples, advantages, valid

    def metrics(self, drawn: Sequence[Group], dist: Dist) -> dict[str, float]:
        """The step's prompt counts (``data.max_prompt_tokens``), summed over ranks."""
        return self.budget.metrics(dist)


@dataclass
class EpisodeRollout:
    """One episode of a group: the graded episode and how it was rewarded."""

    graded: GradedEpisode
    components: dict = field(default_factory=dict)
    reward: float | None = None
    turn_scores: tuple[float, ...] = ()
    """Each turn's similarity to its aligned expert step (hybrid; empty otherwise)."""

    @property
    def turns(self) -> list:
        return self.graded.turns

    @property
    def num_tokens(self) -> int:
        """Policy (completion) tokens over all turns."""
        return sum(len(turn.sample.completion_ids) for turn in self.turns)


class EpisodeSource:
    """``rlvr`` / ``hybrid``: G rewarded episodes per task, ``episodes.workers`` at a time (on Ray
    hosts: their slots)."""

    def __init__(self, config: TrainConfig, sampler: Policy, tasks: Sequence[Task]) -> None:
        e = config.episodes
        self.config, self.tasks = config, tasks
        # Where episodes run (this machine's Docker, Ray hosts, ...): built once, started at the first draw.
        self.runner = open_runner(e.harness, e.hosts, workers=e.workers, generation=config.generation)
        # Concurrent episodes share an in-process model through one batching queue.
        self.sampler = self.runner.share(sampler)
        self.weights = reward_weights(config.method, e.weights.similarity, e.weights.tests)
        self.experts = load_expert_actions(e.experts or DEFAULT_EXPERTS, tasks) if SIMILARITY in self.weights else {}
        self.max_tokens, self.max_chunk = config.generation.max_new_tokens, e.update_chunk_turns
        self.verdicts, self.task_weights = calibrated_weights(tasks, e)
        self.skipped: Counter = Counter()  # this step's skipped draws, by verdict
        self.pack_stats = PackStats()  # this step's packing of episodes into rows

    def draw(self, serials: Sequence[int], indices: Sequence[int]) -> list[Group]:
        G = self.config.grpo.num_generations
        weights = [self.task_weights[self.tasks[i].instance_id] for i in indices]
        self.skipped.update(self.verdicts[self.tasks[i].instance_id] for i, w in zip(indices, weights) if w == 0)
        serials = [s for s, w in zip(serials, weights) if w > 0]
        tasks = [self.tasks[i] for i, w in zip(indices, weights) if w > 0]
        if not tasks:
            return []
        self.runner.plan(tasks)  # the step's other tasks' images are made while the first run
        with ThreadPoolExecutor(self.runner.workers, thread_name_prefix="episode") as pool:
            done = list(pool.map(self.rollout, [t for t in tasks for _ in range(G)]))
        return [Group(serial, task.instance_id, done[i * G:(i + 1) * G], [r.reward for r in done[i * G:(i + 1) * G]],
                      [r.num_tokens for r in done[i * G:(i + 1) * G]])
                for i, (serial, task) in enumerate(zip(serials, tasks))]

    def rollout(self, task: Task) -> EpisodeRollout:
        """One episode in a fresh sandbox, graded in a fresh container, rewarded."""
        e = self.config.episodes
        graded = self.runner.run(self.sampler, task)
        score = score_episode(
            graded.report, [turn.action for turn in graded.turns], self.experts.get(task.instance_id, ()),
            self.weights, shape=e.test_reward, scorer=self.config.reward.scorer(), infra_error=graded.infra_error)
        return EpisodeRollout(graded, score.components, score.reward, score.turn_scores)

    def close(self) -> None:
        """Stop what the runner holds: prefetching, the host actors (and the local Ray this run
        started, if any)."""
        self.runner.close()

    def sequences(self, groups: Sequence[Group], advantages: torch.Tensor,
                  divisors: torch.Tensor) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
        """The update's rows (:class:`~.episode_pack.PackedSequence`): every turn of episode
        ``i`` carries ``advantages[i]`` on its sampled tokens (plus, with ``episodes.credit:
        turn``, its own similarity's share over the group's divisor), times its task's
        calibration weight; the rows of an episode whose reward is None are not valid (left out
        of the loss). The returned advantages tensor is zeros: each row holds its own per
        position."""
        rollouts = [r for g in groups for r in g.samples]
        per_episode = torch.repeat_interleave(divisors.float(), self.config.grpo.num_generations)
        weight = self.weights.get(SIMILARITY, 0.0) if self.config.episodes.credit == "turn" else 0.0
        scale = [self.task_weights.get(r.graded.task.instance_id, 1.0) for r in rollouts]
        _, per_turn, _ = turn_sequences(rollouts, advantages, per_episode, weight, scale)
        e = self.config.episodes
        rows, stats = episode_rows(rollouts, per_turn.tolist(), e.loss_weighting, pack=e.pack,
                                   max_tokens=e.pack_max_tokens or self.config.optim.max_tokens_per_microbatch)
        self.pack_stats.add(stats)
        # Each row carries its positions' advantages (the tensor is a placeholder); a row is
        # valid when its episode's reward is not None.
        valid = torch.tensor([rollouts[i].reward is not None for i, _ in rows], dtype=torch.bool)
        return [row for _, row in rows], torch.zeros(len(rows)), valid

    def metrics(self, drawn: Sequence[Group], dist: Dist) -> dict[str, float]:
        """Totals over every episode the step ran (kept or not) and the draws skipped by the
        calibration, summed over ranks."""
        metrics = episode_totals([r for g in drawn for r in g.samples]).all_sum(dist).metrics()
        broken, flaky = dist.all_sum([self.skipped["broken"], self.skipped["flaky"]])
        self.skipped.clear()
        return {**metrics, "episodes/skipped_broken": broken, "episodes/skipped_flaky": flaky}

    def pack_metrics(self, dist: Dist) -> dict[str, float]:
        """How the last :meth:`sequences` packed the batch's turns into rows (all ranks): turns,
        rows, and the turns that started a row of their own for not extending the one before
        (``pack_breaks``) or for the length limit (``pack_cuts``)."""
        p = self.pack_stats
        turns, rows, breaks, cuts = dist.all_sum([p.turns, p.sequences, p.breaks, p.cuts])
        self.pack_stats = PackStats()
        return {"episodes/update_turns": turns, "episodes/update_sequences": rows,
                "episodes/pack_breaks": breaks, "episodes/pack_cuts": cuts}


def calibrated_weights(tasks: Sequence[Task], episodes: EpisodeConfig) -> tuple[dict[str, Any], dict[str, float]]:
    """(verdict, weight) of each task by id under ``episodes``' calibration and flaky mode
    (verdict None: not calibrated). A ConfigError when every task would be skipped."""
    calibration = resolve_calibration(episodes.calibration)
    verdicts = {t.instance_id: calibration.verdict(t) if calibration is not None else None for t in tasks}
    weights = {i: episode_weight(v, episodes.flaky, episodes.flaky_weight) for i, v in verdicts.items()}
    if calibration is not None:
        counts = verdict_counts(tasks, calibration)
        log.info("calibration %s: %d stable, %d flaky (%s), %d broken (skipped), %d not calibrated, of %d tasks",
                 calibration.path, counts["stable"], counts["flaky"], episodes.flaky, counts["broken"],
                 counts["uncalibrated"] + counts["unknown"], len(tasks))
        if tasks and not any(weights.values()):
            raise ConfigError(f"every task is skipped by the calibration {calibration.path} ({counts['broken']} "
                              f"broken, {counts['flaky']} flaky with episodes.flaky={episodes.flaky}): "
                              "pick other tasks, or set episodes.flaky=downweight")
    return verdicts, weights


def turn_sequences(rollouts: Sequence[EpisodeRollout], advantages: torch.Tensor, divisors: torch.Tensor | None = None,
                   similarity_weight: float = 0.0,
                   scale: Sequence[float] | None = None) -> tuple[list[Any], torch.Tensor, torch.Tensor]:
    """(sequences, advantages, valid): each turn's sampled ``Sample`` with its episode's
    advantage; with ``similarity_weight`` > 0 (per-turn credit) each turn also gets
    ``turn_credit / divisor`` of its episode (its own similarity in place of the episode's);
    ``scale``: a factor per episode on all of that (a flaky task's calibration weight)."""
    samples = [turn.sample for r in rollouts for turn in r.turns]
    if not samples:
        return samples, torch.zeros(0), torch.zeros(0, dtype=torch.bool)
    repeat = torch.tensor([len(r.turns) for r in rollouts])
    per_turn = torch.repeat_interleave(advantages[:len(rollouts)].float(), repeat)
    if similarity_weight > 0 and divisors is not None:
        credit: list[float] = []
        for r, divisor in zip(rollouts, divisors.tolist()):
            usable = r.reward is not None and len(r.turn_scores) == len(r.turns)
            shares = (turn_credit(r.turn_scores, r.components[SIMILARITY], similarity_weight) if usable
                      else [0.0] * len(r.turns))
            credit += [c / divisor for c in shares]
        per_turn = per_turn + torch.tensor(credit, dtype=per_turn.dtype)
    if scale is not None:
        per_turn = per_turn * torch.repeat_interleave(torch.tensor(list(scale), dtype=per_turn.dtype), repeat)
    valid = torch.repeat_interleave(torch.tensor([r.reward is not None for r in rollouts]), repeat)
    return samples, per_turn, valid


def episode_rows(rollouts: Sequence[EpisodeRollout], per_turn: Sequence[float], weighting: LossWeighting, *,
                 pack: bool = True, max_tokens: int = 0) -> tuple[list[tuple[int, PackedSequence]], PackStats]:
    """The update's rows of ``rollouts`` as (episode index, row): each episode's turns packed
    (:func:`~.episode_pack.pack_turns`) and weighed, ``per_turn`` being every turn's advantage
    in order (:func:`turn_sequences`)."""
    rows: list[tuple[int, PackedSequence]] = []
    stats = PackStats()
    start = 0
    for i, r in enumerate(rollouts):
        samples = [turn.sample for turn in r.turns]
        packed, counts = pack_turns(samples, pack=pack, max_tokens=max_tokens)
        stats.add(counts)
        weighed = weigh(packed, per_turn[start:start + len(samples)], [len(s.completion_ids) for s in samples],
                        weighting)
        rows += [(i, row) for row in weighed]
        start += len(samples)
    return rows, stats


def episode_totals(rollouts: Sequence[EpisodeRollout]) -> EpisodeTotals:
    """This rank's totals of the episodes drawn (see :class:`EpisodeTotals`)."""
    ok = [r for r in rollouts if r.graded.infra_error is None]
    results = [r.graded.result for r in ok if r.graded.result is not None]
    sims = [r.components[SIMILARITY] for r in ok if r.components.get(SIMILARITY) is not None]
    rejected = [r.graded.report.rejected for r in ok if r.graded.report is not None and r.graded.report.rejected]
    return _cost_totals(rollouts) + EpisodeTotals(
        count=len(rollouts), infra_failures=len(rollouts) - len(ok), valid=len(ok),
        tests=sum(r.components.get(TESTS) or 0.0 for r in ok), resolved=sum(1 for r in ok if r.graded.resolved),
        similarity_count=len(sims), similarity=sum(sims), turns=sum(res.num_steps for res in results),
        format_errors=sum(res.format_errors for res in results),
        submitted=sum(1 for res in results if res.exit_reason == "submitted"),
        wall_time=sum(r.graded.wall_time for r in rollouts), model_time=sum(res.model_time for res in results),
        sandbox_time=sum(res.sandbox_time for res in results),
        grading_time=sum(r.graded.report.duration for r in ok if r.graded.report is not None),
        rejected=len(rejected), tampering=sum(1 for reason in rejected if reason.startswith(TAMPERING)))


def _cost_totals(rollouts: Sequence[EpisodeRollout]) -> EpisodeTotals:
    """The ``cost`` part of :func:`episode_totals`: containers and tokens, infra failures apart."""
    def spent(rows: Sequence[EpisodeRollout]) -> tuple[ResourceUsage, int]:
        usage = ResourceUsage.total([r.graded.usage for r in rows])
        tokens = sum(r.graded.result.prompt_tokens + r.graded.result.completion_tokens
                     for r in rows if r.graded.result is not None)
        return usage, tokens

    ok = [r for r in rollouts if r.graded.infra_error is None]
    (usage, tokens), (lost, lost_tokens) = spent(ok), spent([r for r in rollouts if r.graded.infra_error])
    peaks = [u.memory_peak_bytes for u in (r.graded.usage for r in ok) if u is not None and u.memory_peak_bytes]
    return EpisodeTotals(
        reward=sum(r.reward for r in ok if r.reward is not None), cpu_seconds=usage.cpu_seconds,
        container_seconds=usage.container_seconds, tokens=tokens, memory_peak_bytes=sum(peaks),
        memory_peaks=len(peaks), infra_cpu_seconds=lost.cpu_seconds,
        infra_container_seconds=lost.container_seconds, infra_tokens=lost_tokens)


def load_expert_actions(path: str | Path, tasks: Sequence[Task]) -> dict[str, list[str]]:
    """Canonical expert actions per task id, from swe-srl Trajectory JSONL (the first
    trajectory of a task wins). A task without one is a ConfigError: hybrid cannot score it.
    A leaky trajectory (one that reads the fix from outside the task: :mod:`swe_srl.leaks`) is
    never a reference: scoring the policy's similarity to it would reward the same cheat."""
    from ..leaks import scan_trajectory

    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"expert trajectories not found: {path} (set episodes.experts, or use --method rlvr)")
    found: dict[str, list[str]] = {}
    leaky: dict[str, str] = {}  # task id -> the first leaky action's rule
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        try:
            trajectory = Trajectory.from_dict(json.loads(line))
        except (ValueError, TypeError, KeyError, RecordError) as exc:
            raise InputError(f"{path}:{number}: not a swe-srl trajectory ({exc})") from None
        if trajectory.steps and trajectory.task_id not in found:
            leaks = [leak for step in scan_trajectory(trajectory) for leak in step]
            if leaks:
                leaky.setdefault(trajectory.task_id, leaks[0].rule)
                continue
            found[trajectory.task_id] = [render_xml(step.action) for step in trajectory.steps]
    missing = [t.instance_id for t in tasks if t.instance_id not in found]
    if missing:
        why = (f" ({sum(m in leaky for m in missing)} only leaky, e.g. {leaky[next(m for m in missing if m in leaky)]})"
               if any(m in leaky for m in missing) else "")
        raise ConfigError(f"{path} has no usable expert trajectory for {len(missing)} task(s), e.g. {missing[0]!r}"
                          f"{why}; record them or narrow episodes.ids, or use --method rlvr")
    return found
