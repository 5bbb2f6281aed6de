"""Expert trajectories for the bundled demo tasks, recorded by replaying scripted expert
sessions through the REAL agent loop.

An expert script (``trajectories/expert/scripts/<instance_id>.json``) is a list of
``{"thought": ..., "action": {"tool": ..., "arguments": {...}}}``: what an expert agent
would write at each turn (explore, reproduce, edit, verify, submit). :func:`record_experts`
turns each script into the completions a policy would write (``<think>`` + one canonical XML
call), replays them with :class:`ExpertReplay` through :func:`swe_srl.evaluate.evaluate_tasks`
(Docker sandbox -> :func:`swe_srl.agent.run_episode` -> grading in a fresh container), and
writes the episodes, with the observations the containers really returned, as swe-srl
Trajectory JSONL that ``swe-srl build-dataset`` reads as format ``swe-srl``.

A script that does not resolve its task, or ends any other way than by submitting after its
last step, fails the whole recording: the output file is only written when every expert is
verified, so a committed recording never holds an unverified trajectory.
"""

from __future__ import annotations

import dataclasses
import json
import os
import tempfile
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from .actions import EDITOR_COMMANDS, is_submit, make_action, render_xml
from .agent import AgentConfig
from .errors import ConfigError, InfrastructureError, InputError
from .evaluate import EvalConfig, InstanceResult, evaluate_tasks, instance_dir, read_result
from .harness import HarnessConfig
from .paths import DEMO_EXPERTS as DEFAULT_OUTPUT
from .paths import EXPERT_TRAJECTORIES_DIR, REPO_ROOT
from .policy.base import Conversation, GenerationConfig
from .policy.scripted import ScriptedPolicy
from .prompts import format_completion
from .sandbox.grading import GradingConfig
from .schemas import Action, Task, Trajectory

SCRIPTS_DIR = EXPERT_TRAJECTORIES_DIR / "scripts"
EXPERT_MODEL_NAME = "expert-script"
_TOOLS = ("bash", "str_replace_editor", "submit")


@dataclass(frozen=True)
class ExpertStep:
    """One turn of an expert script: the expert's reasoning and the action it takes."""

    thought: str
    action: Action

    def completion(self) -> str:
        """What a policy answering this turn writes: ``<think>`` thought ``</think>`` + XML call."""
        return format_completion(self.thought, render_xml(self.action))


# ---------------------------------------------------------------- scripts


def script_path(instance_id: str, scripts_dir: str | os.PathLike = SCRIPTS_DIR) -> Path:
    """Where the expert script of ``instance_id`` lives."""
    return Path(scripts_dir) / f"{instance_id.replace('/', '__')}.json"


def _parse_step(raw: Any, where: str) -> ExpertStep:
    if not isinstance(raw, Mapping):
        raise InputError(f"{where}: a step must be an object with 'thought' and 'action'")
    thought, action = raw.get("thought"), raw.get("action")
    if not isinstance(thought, str) or not thought.strip():
        raise InputError(f"{where}: 'thought' must be non-empty text (the expert's reasoning)")
    if not isinstance(action, Mapping) or not isinstance(action.get("tool"), str):
        raise InputError(f"{where}: 'action' must be an object with a 'tool' name")
    arguments = action.get("arguments") or {}
    if not isinstance(arguments, Mapping):
        raise InputError(f"{where}: 'action.arguments' must be an object")
    parsed = make_action(action["tool"], arguments)
    if parsed.tool not in _TOOLS:
        raise InputError(f"{where}: unknown tool {parsed.tool!r} (use one of {', '.join(_TOOLS)})")
    if parsed.tool == "bash" and not str(parsed.arguments.get("command", "")).strip():
        raise InputError(f"{where}: a bash action needs a non-empty 'command'")
    if parsed.tool == "str_replace_editor":
        if parsed.arguments.get("command") not in EDITOR_COMMANDS:
            raise InputError(f"{where}: str_replace_editor 'command' must be one of {', '.join(EDITOR_COMMANDS)}")
        if not str(parsed.arguments.get("path", "")).startswith("/"):
            raise InputError(f"{where}: str_replace_editor needs an absolute 'path'")
    return ExpertStep(thought=thought.strip(), action=parsed)


def load_script(path: str | os.PathLike) -> list[ExpertStep]:
    """Read and check one expert script: a non-empty list of steps whose last (and only
    last) action is ``submit``. Raises InputError naming the file and the step."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"no expert script at {path}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: not JSON: {exc.msg} (line {exc.lineno})") from None
    if not isinstance(data, list) or not data:
        raise InputError(f"{path}: an expert script is a non-empty JSON list of steps")
    steps = [_parse_step(raw, f"{path.name} step {i}") for i, raw in enumerate(data)]
    submits = [i for i, step in enumerate(steps) if is_submit(step.action)]
    if submits != [len(steps) - 1]:
        raise InputError(f"{path.name}: the last step, and only the last, must be a submit action")
    return steps


def load_scripts(tasks: Sequence[Task], scripts_dir: str | os.PathLike = SCRIPTS_DIR) -> dict[str, list[ExpertStep]]:
    """The expert script of every task, by instance id; a missing one is an InputError."""
    missing = [t.instance_id for t in tasks if not script_path(t.instance_id, scripts_dir).is_file()]
    if missing:
        raise InputError(f"no expert script for {len(missing)} task(s) in {scripts_dir}, e.g. {missing[0]!r}")
    return {t.instance_id: load_script(script_path(t.instance_id, scripts_dir)) for t in tasks}


# ---------------------------------------------------------------- replay policy


class ExpertReplay:
    """A completion function for :class:`~swe_srl.policy.scripted.ScriptedPolicy` that
    replays a different script per task, so one policy serves a whole (parallel) evaluation.

    The task of a call is recognised by the issue text that opens its user message (the
    prompt shows only the last K rounds, so the turn number is tracked per task here)."""

    def __init__(self, completions: Mapping[str, Sequence[str]], tasks: Sequence[Task]) -> None:
        self._scripts = {task_id: list(texts) for task_id, texts in completions.items()}
        self._issues: list[tuple[str, str]] = []
        seen: dict[str, str] = {}
        for task in tasks:
            if task.instance_id not in self._scripts:
                continue
            issue = f"<issue>\n{task.problem_statement.strip()}\n</issue>"
            if issue in seen:
                raise ConfigError(f"tasks {seen[issue]!r} and {task.instance_id!r} share a problem statement: "
                                  "their replays cannot be told apart")
            seen[issue] = task.instance_id
            self._issues.append((issue, task.instance_id))
        self.served: dict[str, int] = {task_id: 0 for task_id in self._scripts}
        """Completions handed out per task so far."""
        self._lock = threading.Lock()

    @classmethod
    def from_scripts(cls, scripts: Mapping[str, Sequence[ExpertStep]], tasks: Sequence[Task]) -> ExpertReplay:
        return cls({task_id: [s.completion() for s in steps] for task_id, steps in scripts.items()}, tasks)

    def task_of(self, conversation: Conversation) -> str:
        """The instance id whose issue comes first in the conversation's user message (it opens
        a window prompt's; a whole conversation's, decoded from token ids, holds it after the
        system prompt)."""
        content = next((str(m.get("content", "")) for m in conversation if m.get("role") == "user"), "")
        found = [(content.find(issue), task_id) for issue, task_id in self._issues if issue in content]
        if found:
            return min(found)[1]
        raise InputError("expert replay: the conversation's issue matches no scripted task")

    def remaining(self, instance_id: str) -> int:
        """Completions of ``instance_id``'s script not yet replayed."""
        return len(self._scripts[instance_id]) - self.served[instance_id]

    def __call__(self, conversation: Conversation, index: int) -> str:
        task_id = self.task_of(conversation)
        with self._lock:
            turn = self.served[task_id]
            if turn >= len(self._scripts[task_id]):
                raise InputError(f"expert replay of {task_id}: the agent asked for turn {turn + 1} "
                                 f"but the script has {len(self._scripts[task_id])}")
            self.served[task_id] = turn + 1
        return self._scripts[task_id][turn]

    def policy(self, tokenizer: Any = None):
        """A ScriptedPolicy answering with this replay (thread-safe: share it across workers)."""
        return ScriptedPolicy(self, tokenizer=tokenizer)


# ---------------------------------------------------------------- recording


@dataclass(frozen=True)
class RecordConfig:
    """How :func:`record_experts` replays and grades the scripts."""

    workers: int = 1
    """Tasks replayed in parallel (each in its own containers)."""
    command_timeout: float = 120.0
    """Seconds per expert action in the sandbox."""
    test_timeout: float = 600.0
    """Seconds the grading test command may run."""
    work_dir: Path | None = None
    """Where the evaluation files go (kept, and resumed on a rerun); None: a temporary folder."""

    def __post_init__(self) -> None:
        if self.workers < 1:
            raise ConfigError("record-experts workers must be >= 1")
        if self.command_timeout <= 0 or self.test_timeout <= 0:
            raise ConfigError("record-experts timeouts must be > 0")


@dataclass
class ExpertRecording:
    """What :func:`record_experts` produced: the verified trajectories and the eval summary."""

    trajectories: list[Trajectory]
    summary: dict
    out_path: Path
    records: dict = field(default_factory=dict)


def _failure(task: Task, record: InstanceResult | None, trajectory: Trajectory | None,
             script_len: int) -> str | None:
    """Why this expert episode cannot be kept, or None when it is a verified success."""
    if record is None or trajectory is None:
        return "no result was written"
    if record.infra_error:
        return f"infrastructure failure: {record.infra_error}"
    if record.exit_reason != "submitted":
        return f"episode ended by {record.exit_reason!r}, not by the script's submit"
    if len(trajectory.steps) != script_len:
        return f"{len(trajectory.steps)} steps ran but the script has {script_len}"
    if not record.resolved:
        report = record.report or {}
        return (f"not resolved (FAIL_TO_PASS {report.get('fail_to_pass', 0):.0%}, PASS_TO_PASS "
                f"{report.get('pass_to_pass', 0):.0%}, patch applied: {report.get('patch_applied')})")
    return None


def _expert_trajectory(task: Task, trajectory: Trajectory, record: InstanceResult, script: Path,
                       recorded_at: str) -> Trajectory:
    try:
        script_name = str(script.resolve().relative_to(REPO_ROOT))
    except ValueError:
        script_name = str(script)
    report = record.report or {}
    return dataclasses.replace(
        trajectory, trajectory_id=f"{task.instance_id}.expert", source="expert-replay",
        resolved=True, model=EXPERT_MODEL_NAME, exit_status="submitted",
        metadata={**trajectory.metadata, "script": script_name, "recorded_at": recorded_at,
                  "grading": {"fail_to_pass": report.get("fail_to_pass"), "pass_to_pass": report.get("pass_to_pass"),
                              "duration": round(float(report.get("duration") or 0.0), 3)}},
    )


def write_trajectories(path: Path, trajectories: Sequence[Trajectory]) -> None:
    """One ``Trajectory.to_dict()`` per line, written atomically."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    with tmp.open("w", encoding="utf-8") as fh:
        for trajectory in trajectories:
            fh.write(json.dumps(trajectory.to_dict(), ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def _collect(tasks: Sequence[Task], work: Path) -> tuple[dict, dict]:
    records, trajectories = {}, {}
    for task in tasks:
        folder = instance_dir(work, task.instance_id)
        record = read_result(work, task.instance_id)
        if record is not None:
            records[task.instance_id] = record
        if (folder / "trajectory.json").is_file():
            data = json.loads((folder / "trajectory.json").read_text(encoding="utf-8"))
            trajectories[task.instance_id] = Trajectory.from_dict(data)
    return records, trajectories


def record_experts(tasks: Sequence[Task], out_path: str | os.PathLike = DEFAULT_OUTPUT, *,
                   scripts_dir: str | os.PathLike = SCRIPTS_DIR, config: RecordConfig = RecordConfig(),
                   on_result=None) -> ExpertRecording:
    """Replay every task's expert script in Docker, grade it, and write the trajectories.

    Raises InputError when an expert does not resolve its task (or does not end by its own
    submit) and InfrastructureError when the harness failed; nothing is written then."""
    scripts = load_scripts(tasks, scripts_dir)
    replay = ExpertReplay.from_scripts(scripts, tasks)
    longest = max(len(steps) for steps in scripts.values())
    eval_config = EvalConfig(
        workers=config.workers, model_name=EXPERT_MODEL_NAME,
        generation=GenerationConfig(temperature=0.0, max_new_tokens=4096),
        # No format errors are tolerated and no turn beyond the script: a script that does not
        # end the episode by its own submit is a broken expert, not something to paper over.
        harness=HarnessConfig(
            agent=AgentConfig(max_steps=longest, max_format_errors=0, command_timeout=config.command_timeout),
            grading=GradingConfig(test_timeout=config.test_timeout)),
    )
    with tempfile.TemporaryDirectory(prefix="swe-srl-experts-") as scratch:
        work = Path(config.work_dir) if config.work_dir is not None else Path(scratch)
        summary = evaluate_tasks(replay.policy(), tasks, work, eval_config, on_result=on_result,
                                 thread_safe_policy=True)
        records, episodes = _collect(tasks, work)
    failures = {t.instance_id: _failure(t, records.get(t.instance_id), episodes.get(t.instance_id),
                                        len(scripts[t.instance_id])) for t in tasks}
    failures = {k: v for k, v in failures.items() if v}
    if failures:
        first_id, reason = next(iter(failures.items()))
        error = InfrastructureError if all(v.startswith("infrastructure") for v in failures.values()) else InputError
        raise error(f"{len(failures)} of {len(tasks)} expert(s) failed, nothing written; "
                    f"{first_id}: {reason}"
                    + ("" if len(failures) == 1 else f" (also: {', '.join(list(failures)[1:])})"))
    recorded_at = datetime.now(timezone.utc).replace(microsecond=0).isoformat()
    trajectories = [_expert_trajectory(t, episodes[t.instance_id], records[t.instance_id],
                                       script_path(t.instance_id, scripts_dir), recorded_at) for t in tasks]
    out = Path(out_path)
    write_trajectories(out, trajectories)
    return ExpertRecording(trajectories=trajectories, summary=summary, out_path=out, records=records)
