"""`swe-srl eval`: the policy as an agent on tasks (resolve rate), or on held-out step targets
(the SRL paper's validation metric: mean action similarity, format-error rate).

Task mode writes, per instance, ``instances/<id>/{trajectory.json, result.json}`` (result.json
last and atomically: its presence marks the instance finished, so an interrupted run resumes
where it stopped), then ``predictions.jsonl`` in the SWE-bench format (``instance_id``,
``model_name_or_path``, ``model_patch``) and ``summary.json``. Infrastructure failures are
counted apart and never lower the resolve rate; a resumed run retries them.
"""

from __future__ import annotations

import json
import os
import statistics
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field, fields, replace
from itertools import islice
from pathlib import Path
from typing import Any

from .actions import ActionSyntax
from .agent import GREEDY
from .calibration import Calibration, resolve_calibration, stable_summary
from .config import RewardConfig
from .costs import cost_summary, usage_dict
from .errors import ConfigError
from .harness import GradedEpisode, HarnessConfig
from .hosts import HostsConfig
from .jsonio import write_json_atomic
from .policy.base import GenerationConfig, Policy
from .prompts import messages_for_target
from .rewards.similarity import StepScores
from .runner import EpisodeRunner, open_runner
from .schemas import StepTarget, Task


@dataclass(frozen=True)
class EvalConfig:
    """How an agent evaluation runs (``swe-srl eval``; the ``eval:`` section of a config file)."""

    workers: int = 1
    """Instances run in parallel (each in its own container)."""
    generation: GenerationConfig = GREEDY
    """Sampling per turn; greedy by default."""
    harness: HarnessConfig = field(default_factory=HarnessConfig)
    """The agent's limits, the grading limits and where each instance runs (``sandbox``)."""
    model_name: str = "swe-srl"
    """`model_name_or_path` written to predictions.jsonl."""
    retry_infra: bool = True
    """On resume, run again the instances that ended in an infrastructure failure."""
    reward: RewardConfig = field(default_factory=RewardConfig)
    """How ``--mode steps`` compares actions with the expert's (as training's ``reward``)."""
    hosts: HostsConfig = field(default_factory=HostsConfig)
    """The Docker hosts behind Ray actors of ``harness.sandbox: ray`` (then ``workers`` is
    ignored: each host runs ``episodes_per_host`` at a time)."""
    calibration: str = ""
    """Calibration file (``swe-srl env calibrate``) for the resolve rate on stable tasks
    (summary.json ``stable``); empty: runs/calibration.json when it exists."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError(f"eval workers must be >= 1, got {self.workers}")
        if self.generation.n != 1:
            raise ConfigError("eval generation.n must be 1: an episode follows one sample per turn")


@dataclass(frozen=True)
class InstanceResult:
    """``instances/<id>/result.json``: how one instance ended. An infrastructure failure has
    ``infra_error`` set and counts apart from the resolve rate."""

    instance_id: str
    repo: str = ""
    resolved: bool = False
    infra_error: str | None = None
    exit_reason: str = "infra_error"
    steps: int = 0
    format_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_time: float = 0.0
    sandbox_time: float = 0.0
    grading_time: float = 0.0
    wall_time: float = 0.0
    patch: str = ""
    report: dict | None = None
    host: str | None = None
    usage: dict | None = None
    """What the agent's and the grading containers used together (``ResourceUsage``; the
    grading container's alone is in ``report``)."""
    agent_usage: dict | None = None
    """What the agent's container used."""

    @classmethod
    def of(cls, graded: GradedEpisode) -> InstanceResult:
        task, result, report = graded.task, graded.result, graded.report
        base = cls(instance_id=task.instance_id, repo=task.repo, infra_error=graded.infra_error,
                   wall_time=graded.wall_time, host=graded.host, usage=usage_dict(graded.usage))
        if result is None:
            return base
        return replace(
            base, resolved=graded.resolved, exit_reason=result.exit_reason, steps=result.num_steps,
            format_errors=result.format_errors, prompt_tokens=result.prompt_tokens,
            completion_tokens=result.completion_tokens, model_time=result.model_time,
            sandbox_time=result.sandbox_time, grading_time=report.duration if report is not None else 0.0,
            patch=result.patch, report=report.to_dict() if report is not None else None,
            agent_usage=usage_dict(result.usage))

    @classmethod
    def from_dict(cls, data: dict) -> InstanceResult:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def instance_dir(out_dir: Path, instance_id: str) -> Path:
    return out_dir / "instances" / instance_id.replace("/", "__")


def read_result(out_dir: Path, instance_id: str) -> InstanceResult | None:
    """The finished result of an instance, or None (not run, or a torn file)."""
    path = instance_dir(out_dir, instance_id) / "result.json"
    if not path.is_file():
        return None
    try:
        return InstanceResult.from_dict(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, TypeError):
        return None


def _finished(out_dir: Path, task: Task, retry_infra: bool) -> bool:
    result = read_result(out_dir, task.instance_id)
    return result is not None and not (retry_infra and result.infra_error)


def run_instance(policy: Policy, task: Task, out_dir: Path, config: EvalConfig,
                 runner: EpisodeRunner) -> InstanceResult:
    """Run and grade one task with ``runner``; writes trajectory.json, then result.json
    (atomically, last: its presence marks the instance finished)."""
    folder = instance_dir(out_dir, task.instance_id)
    folder.mkdir(parents=True, exist_ok=True)
    graded = runner.run(policy, task)
    if graded.result is not None:
        (folder / "trajectory.json").write_text(
            json.dumps(graded.result.trajectory.to_dict(), ensure_ascii=False) + "\n", encoding="utf-8")
    result = InstanceResult.of(graded)
    write_json_atomic(folder / "result.json", result.to_dict())
    return result


def evaluate_tasks(policy: Policy, tasks: Sequence[Task], out_dir: str | os.PathLike,
                   config: EvalConfig = EvalConfig(), *,
                   on_result: Callable[[InstanceResult], None] | None = None,
                   thread_safe_policy: bool = False, calibration: Calibration | None = None,
                   provenance: dict | None = None) -> dict:
    """Run every task not already finished in ``out_dir``; return (and write) the summary.
    ``calibration`` (default: the one ``config.calibration`` names, if any) adds the resolve
    rate on its stable tasks (``stable``; None without a calibration). ``provenance`` (the
    model's, the evaluated ids' hash, their overlap with its training data) is recorded as is."""
    if calibration is None:
        calibration = resolve_calibration(config.calibration)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    todo = [t for t in tasks if not _finished(out, t, config.retry_infra)]
    runner = open_runner(config.harness, config.hosts, workers=config.workers, generation=config.generation,
                         model_name=config.model_name)
    workers = runner.workers
    # Threads share an in-process model through one batching queue (no global lock).
    shared = runner.share(policy, thread_safe=thread_safe_policy)
    try:
        runner.plan(todo)
        if todo:
            # At most `workers` instances are in flight and the next starts only once a result
            # is handled: on Ctrl-C (or a raising on_result) the running ones finish and clean
            # up their containers, nothing new starts, and a rerun resumes from there.
            queue = iter(todo)
            with ThreadPoolExecutor(max_workers=workers) as pool:
                running = {pool.submit(run_instance, shared, task, out, config, runner)
                           for task in islice(queue, workers)}
                while running:
                    done, running = wait(running, return_when=FIRST_COMPLETED)
                    for future in done:
                        result = future.result()  # a harness bug surfaces here, never silently lost
                        if on_result is not None:
                            on_result(result)
                        running |= {pool.submit(run_instance, shared, task, out, config, runner)
                                    for task in islice(queue, 1)}
    finally:
        runner.close()
    results = [r for r in (read_result(out, t.instance_id) for t in tasks) if r is not None]
    write_predictions(out / "predictions.jsonl", results, config.model_name)
    summary = summarize(results, total=len(tasks), skipped=len(tasks) - len(todo))
    summary["stable"] = stable_summary(results, tasks, calibration) if calibration is not None else None
    summary |= runner.summary()  # the image cache's work under a budget (docker)
    if provenance is not None:
        summary["provenance"] = provenance
    write_json_atomic(out / "summary.json", summary)
    return summary


def write_predictions(path: Path, results: Sequence[InstanceResult], model_name: str) -> None:
    """SWE-bench predictions: one line per instance that produced an episode."""
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for r in results:
            if r.exit_reason == "infra_error" and not r.patch:
                continue
            fh.write(json.dumps({"instance_id": r.instance_id, "model_name_or_path": model_name,
                                 "model_patch": r.patch}) + "\n")
    os.replace(tmp, path)


def summarize(results: Sequence[InstanceResult], *, total: int, skipped: int = 0) -> dict:
    """Resolve rate over the instances whose infrastructure held; infra failures apart.
    ``resolved_rate`` is None when nothing was graded (no instance, or infra failures only):
    0.0 there would read as a policy that resolved nothing."""
    infra = [r for r in results if r.infra_error]
    graded = [r for r in results if not r.infra_error]
    resolved = sum(1 for r in graded if r.resolved)
    per_repo: dict[str, Counter] = defaultdict(Counter)
    for r in graded:
        per_repo[r.repo]["total"] += 1
        per_repo[r.repo]["resolved"] += int(r.resolved)

    def total_of(key: str) -> float:
        return round(sum(float(getattr(r, key) or 0) for r in graded), 3)

    return {
        "instances": total,
        "finished": len(results),
        "resumed_from_previous_run": skipped,
        "graded": len(graded),
        "resolved": resolved,
        "resolved_rate": round(resolved / len(graded), 4) if graded else None,
        "per_repo": {repo: {**c, "rate": round(c["resolved"] / c["total"], 4)} for repo, c in sorted(per_repo.items())},
        "infrastructure_failures": len(infra),
        "infrastructure_errors": {r.instance_id: r.infra_error for r in infra},
        "exit_reasons": dict(Counter(r.exit_reason for r in results)),
        "per_host": dict(Counter(r.host for r in results if r.host)),
        # Misses grading refused whatever the tests said (tampering, a killed container, ...).
        "rejected": dict(Counter(str(r.report["rejected"]).split(":")[0] for r in graded
                                 if r.report and r.report.get("rejected"))),
        "mean_steps": round(statistics.mean(r.steps for r in graded), 2) if graded else 0.0,
        "tokens": {"prompt": int(total_of("prompt_tokens")), "completion": int(total_of("completion_tokens"))},
        "time_seconds": {"model": total_of("model_time"), "sandbox": total_of("sandbox_time"),
                         "grading": total_of("grading_time"), "wall": total_of("wall_time")},
        "cost": cost_summary(results),
    }


# --------------------------------------------------------------------------- steps mode


def evaluate_steps(policy: Policy, targets: Sequence[StepTarget], *, generation: GenerationConfig = GREEDY,
                   reward: RewardConfig = RewardConfig(), syntax: ActionSyntax = "xml", batch_size: int = 8) -> dict:
    """Score the policy on held-out step targets (greedy by default) with the same metric as
    training validation: mean SRL reward (format violations count -1), mean similarity over
    well-formed answers, format-error rate, exact-match rate, the share of distinct answers (a
    policy collapsed onto one "average" action scores a fair similarity); also per target
    tool. ``answers`` holds each target's completion and reward, in order."""
    generation = replace(generation, n=1)
    reward_fn = reward.step_reward(syntax)
    rewards: list[float] = []
    answers: list[dict] = []
    per_tool: dict[str, list[float]] = defaultdict(list)
    for start in range(0, len(targets), batch_size):
        chunk = targets[start:start + batch_size]
        outputs = policy.generate([messages_for_target(t, syntax) for t in chunk], generation)
        texts = [samples[0].text for samples in outputs]
        scored = reward_fn(texts, [{"target": t.target} for t in chunk])
        for target, text, value in zip(chunk, texts, scored):
            rewards.append(float(value))  # type: ignore[arg-type]  # the similarity reward is never None
            per_tool[target.target_tool].append(float(value))  # type: ignore[arg-type]
            answers.append({"id": target.id, "task_id": target.task_id, "reward": round(float(value), 4),  # type: ignore[arg-type]
                            "completion": text, "target": target.target})
    metrics = StepScores.of(rewards).metrics()
    distinct = len({answer_text(a["completion"]) for a in answers})
    return {
        "step_targets": len(rewards),
        "reward": asdict(reward),
        "generation": asdict(generation),
        "mean_reward": round(metrics.get("reward", 0.0), 4),
        "mean_similarity": round(metrics.get("similarity", 0.0), 4),
        "format_error_rate": round(metrics.get("format_error_rate", 0.0), 4),
        "exact_match_rate": round(metrics.get("exact_match", 0.0), 4),
        "distinct_answers": distinct,
        "distinct_answer_rate": round(distinct / max(len(answers), 1), 4),
        "per_tool": {
            tool: {"n": len(v), "mean_reward": round(statistics.mean(v), 4)} for tool, v in sorted(per_tool.items())
        },
        "answers": answers,
    }


def answer_text(completion: str) -> str:
    """The part of a completion that is the action (after the last ``</think>``), stripped:
    what two answers must share to count as the same one."""
    return completion.rsplit("</think>", 1)[-1].strip()
