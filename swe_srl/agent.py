"""One agent episode: Policy <-> Sandbox, with the SAME prompt as SRL training.

Each turn the policy sees the issue plus its own last K (action, observation) rounds (the
step-target context of training), writes ``<think>...</think>`` and one action; the action runs
in the sandbox and its output becomes the next observation. A completion that breaks the format
gets a corrective observation (bounded count). The episode ends on ``submit``, on a limit
(steps, wall time, tokens, format errors; :meth:`_Run.limit` lists them, one line each) or
when the sandbox fails under it. How it ended is typed, :class:`EpisodeEnd` (reason + detail,
on the returned :class:`Episode`): the harness reads it to decide what is graded. A container
the model's commands killed, or a disk budget they filled, is the model's result; any other
sandbox failure is the infrastructure's, reported as such and never blamed on the model.
"""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any, Literal

from .actions import ActionSyntax, is_submit
from .dataset import truncate_middle
from .errors import ConfigError, DiskLimitExceeded, InfrastructureError, PatchTooLarge, SandboxDied
from .policy.base import GenerationConfig, Policy, Sample
from .prompts import build_messages, observation_message, turn_continuation
from .rewards.similarity import parse_completion
from .sandbox.base import Sandbox
from .sandbox.tools import run_tool
from .schemas import Action, EpisodeResult, ExecResult, Step, Task, Trajectory

AgentContext = Literal["window", "conversation"]
ExitReason = Literal["submitted", "step_limit", "time_limit", "token_limit", "format_errors", "container_died",
                     "disk_limit", "infra_error"]

FORMAT_ERROR_OBSERVATION = (
    "Your last response could not be executed: it must be your reasoning inside <think>...</think>, "
    "followed by exactly one function call in the format\n<function=NAME>\n<parameter=KEY>VALUE</parameter>\n"
    "</function>\nand nothing else. Try again."
)
BASH_FORMAT_ERROR_OBSERVATION = (
    "Your last response could not be executed: it must be your reasoning inside <think>...</think>, "
    "followed by exactly one ```bash code block holding one command, and nothing else. Try again."
)


@dataclass(frozen=True)
class AgentConfig:
    """Limits and prompt settings of an episode."""

    max_steps: int = 30
    """Policy turns before the episode is cut (format errors count as turns)."""
    max_wall_time: float = 1800.0
    """Seconds for the whole episode."""
    max_tokens: int = 0
    """Prompt + completion tokens for the whole episode; 0 = no limit."""
    max_format_errors: int = 3
    """Malformed completions tolerated (each gets a corrective observation) before giving up."""
    context_rounds: int = 2
    """K: earlier rounds shown in each prompt (as in the step targets the policy was trained on)."""
    observation_budget: int = 2000
    """Characters of each observation shown in later prompts (head + tail)."""
    command_timeout: float = 60.0
    """Seconds per tool call in the sandbox."""
    syntax: ActionSyntax = "xml"
    """Action syntax the policy writes."""
    allow_prose: bool = True
    """Accept prose around the action after </think> (rollouts are lenient; the SRL reward is not)."""
    max_context_tokens: int = 0
    """``context: conversation``: the longest prompt + ``max_new_tokens`` a turn may have; the
    episode ends (``token_limit``) before a turn that would pass it. 0 = the model's own
    context length when the policy has one (a scripted policy: no limit)."""
    context: AgentContext = "window"
    """What each turn's prompt holds. window: the issue + the last ``context_rounds`` rounds,
    rendered afresh (the step targets' layout, what SRL trains on). conversation: the whole
    episode so far, token in, token out: turn k+1's prompt ids are turn k's prompt ids + its
    sampled ids + the tokens of the observation turn, so the episode trains as one masked
    sequence (``episodes.pack``). Needs a policy that samples from token ids (hf, scripted)."""

    def __post_init__(self) -> None:
        if self.max_steps < 1:
            raise ConfigError("agent.max_steps must be >= 1")
        if self.max_format_errors < 0 or self.context_rounds < 0:
            raise ConfigError("agent.max_format_errors and agent.context_rounds must be >= 0")
        if self.context not in ("window", "conversation"):
            raise ConfigError(f"agent.context must be window or conversation, got {self.context!r}")
        if min(self.max_wall_time, self.command_timeout) <= 0 or min(self.max_tokens, self.max_context_tokens) < 0:
            raise ConfigError("agent.max_wall_time and agent.command_timeout must be > 0, agent.max_tokens and "
                              "agent.max_context_tokens >= 0")


@dataclass
class Turn:
    """One policy call of an episode, with what training needs: the exact prompt and tokens."""

    messages: list
    sample: Sample
    action: Action | None
    observation: str


@dataclass(frozen=True)
class EpisodeEnd:
    """How an episode ended: ``reason`` (the trajectory's exit status) and ``detail``, what the
    sandbox said when it failed under the episode (``container_died``, ``disk_limit``: the
    model's result; ``infra_error``: the infrastructure's failure). Empty for the other reasons."""

    reason: ExitReason
    detail: str = ""


SANDBOX_FAILED: tuple[ExitReason, ...] = ("container_died", "disk_limit", "infra_error")


@dataclass
class Episode:
    """The episode record (schema) plus the turns (token ids) for RL training, how it ended, and
    why its patch was not read (``patch_refused``: over the size limit; empty otherwise)."""

    result: EpisodeResult
    turns: list = field(default_factory=list)
    end: EpisodeEnd = EpisodeEnd("submitted")
    patch_refused: str = ""

    @property
    def patch(self) -> str:
        return self.result.patch


def _observation_text(result: ExecResult) -> str:
    text = result.output
    if result.timed_out:
        text += "\n[command timed out and was killed]"
    return text


# Greedy turns of up to 512 tokens: what an evaluated agent does unless told otherwise.
GREEDY = GenerationConfig(temperature=0.0, max_new_tokens=512)


@dataclass
class _Run:
    """What an episode has gathered so far."""

    start: float = field(default_factory=time.monotonic)
    rounds: list[tuple[Action | str, str]] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    turns: list[Turn] = field(default_factory=list)
    reply: str = ""  # conversation: the user turn that answers the last completion
    format_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    model_time: float = 0.0
    sandbox_time: float = 0.0
    patch: str | None = None
    refused: str = ""

    def limit(self, config: AgentConfig) -> EpisodeEnd | None:
        """The limit reached before the next turn, if any (one line each)."""
        tokens = self.prompt_tokens + self.completion_tokens
        reached: list[tuple[ExitReason, bool]] = [
            ("format_errors", self.format_errors > config.max_format_errors),  # first: the last one ends it at once
            ("step_limit", len(self.turns) >= config.max_steps),
            ("time_limit", time.monotonic() - self.start > config.max_wall_time),
            ("token_limit", config.max_tokens > 0 and tokens >= config.max_tokens),
        ]
        return next((EpisodeEnd(reason) for reason, hit in reached if hit), None)


def run_episode(policy: Policy, sandbox: Sandbox, task: Task, config: AgentConfig = AgentConfig(),
                generation: GenerationConfig = GREEDY, *, model_name: str = "") -> Episode:
    """Run the policy on ``task`` inside ``sandbox`` until it submits or hits a limit; each
    turn samples one completion with ``generation``."""
    _check_start(sandbox, task, generation)
    conversation = (ConversationPrompts.of(policy, config.max_context_tokens)
                    if config.context == "conversation" else None)
    error_text = FORMAT_ERROR_OBSERVATION if config.syntax == "xml" else BASH_FORMAT_ERROR_OBSERVATION
    run = _Run()
    while (end := run.limit(config)) is None:
        t0 = time.monotonic()
        turn = _sample(policy, conversation, task, config, generation, run)
        if turn is None:  # the conversation no longer fits the model's context
            end = EpisodeEnd("token_limit")
            break
        messages, sample = turn
        run.model_time += time.monotonic() - t0
        run.prompt_tokens += len(sample.prompt_ids)
        run.completion_tokens += len(sample.completion_ids)
        parsed = parse_completion(sample.text, syntax=config.syntax, allow_prose=config.allow_prose)
        if parsed is None:  # a corrective observation; past max_format_errors, run.limit ends it
            run.format_errors += 1
            run.turns.append(Turn(messages, sample, None, error_text))
            run.rounds.append((sample.text.strip()[-config.observation_budget:], error_text))
            run.reply = error_text
            continue
        t0 = time.monotonic()
        try:
            observation, exit_code, timed_out = _act(sandbox, parsed.action, config.command_timeout, run)
        except _SANDBOX_ERRORS as exc:
            end = _failure(exc)
            run.turns.append(Turn(messages, sample, parsed.action, getattr(exc, "output", "")))
            break
        finally:
            run.sandbox_time += time.monotonic() - t0
        run.steps.append(Step(action=parsed.action, thought=parsed.thought, observation=observation,
                              exit_code=exit_code, timed_out=timed_out))
        run.turns.append(Turn(messages, sample, parsed.action, observation))
        if run.patch is not None:
            end = EpisodeEnd("submitted")
            break
        run.rounds.append((parsed.action, truncate_middle(observation, config.observation_budget)))
        run.reply = observation_message(run.rounds[-1][1])
    if run.patch is None and end.reason not in SANDBOX_FAILED:
        try:  # an unsubmitted episode is still graded on what it left in the repository
            run.patch, run.refused = _diff(sandbox)
        except _SANDBOX_ERRORS as exc:
            end = _failure(exc)
    return _record(task, run, end, model_name)


def _check_start(sandbox: Sandbox, task: Task, generation: GenerationConfig) -> None:
    if generation.n != 1:
        raise ConfigError("an episode follows one sample per turn: generation.n must be 1")
    if task.base_commit and not getattr(sandbox, "base_commit", ""):
        # The sandbox found no repository where the task has one: the diff would come back
        # empty and score the policy 0 for the infrastructure's failure (seen on Ray hosts).
        raise InfrastructureError(f"sandbox of {task.instance_id}: no git repository at {task.workdir} at the start "
                                  f"(the task's base commit is {task.base_commit[:12]})")


def _sample(policy: Policy, conversation: ConversationPrompts | None, task: Task, config: AgentConfig,
            generation: GenerationConfig, run: _Run) -> tuple[list, Sample] | None:
    """The next turn's prompt and completion; None when the conversation would pass the model's
    context (``agent.context: conversation``, checked before sampling)."""
    if conversation is not None and run.turns:
        prompt_ids = conversation.prompt_ids(run.turns[-1].sample, run.reply)
        if conversation.limit and len(prompt_ids) + generation.max_new_tokens > conversation.limit:
            return None
        sample = conversation.policy.generate_from_ids([prompt_ids], generation)[0][0]
        return [{"role": "user", "content": run.reply}], sample
    recent = run.rounds[-config.context_rounds:] if config.context_rounds else []
    messages = build_messages(task.problem_statement, recent, syntax=config.syntax)
    return messages, policy.generate([messages], generation)[0][0]


def _act(sandbox: Sandbox, action: Action, timeout: float, run: _Run) -> tuple[str, int, bool]:
    """Run ``action`` in the sandbox: (observation, exit code, timed out). ``submit`` reads the
    episode's patch into ``run``. Raises what the sandbox raises when it fails."""
    if is_submit(action):
        run.patch, run.refused = _diff(sandbox)
        return "submitted", 0, False
    result = run_tool(sandbox, action, timeout=timeout)
    return _observation_text(result), result.exit_code, result.timed_out


_SANDBOX_ERRORS = (SandboxDied, DiskLimitExceeded, InfrastructureError)


def _failure(exc: Exception) -> EpisodeEnd:
    """How a sandbox failure ends the episode. The model's own command (or what it left
    running) took the container down or filled its disk budget: its result (nothing to grade),
    never a masked infrastructure failure. Anything else is the infrastructure's."""
    reason: ExitReason = ("container_died" if isinstance(exc, SandboxDied) else
                          "disk_limit" if isinstance(exc, DiskLimitExceeded) else "infra_error")
    return EpisodeEnd(reason, str(exc))


def _record(task: Task, run: _Run, end: EpisodeEnd, model_name: str) -> Episode:
    """The episode's trajectory and result (the schema records) from what it gathered."""
    died = end.detail if end.reason in ("container_died", "disk_limit") else ""
    trajectory = Trajectory(
        task_id=task.instance_id, trajectory_id=f"{task.instance_id}.{uuid.uuid4().hex[:8]}",
        problem_statement=task.problem_statement, steps=tuple(run.steps), source_format="swe-srl",
        source="agent", final_patch=run.patch or "", exit_status=end.reason, model=model_name or None,
        metadata={"format_errors": run.format_errors, "turns": len(run.turns),
                  **({"container_died": died} if died else {}),
                  **({"patch_too_large": run.refused} if run.refused else {})},
    )
    result = EpisodeResult(
        trajectory=trajectory, patch=run.patch or "", exit_reason=end.reason, num_steps=len(run.turns),
        format_errors=run.format_errors, prompt_tokens=run.prompt_tokens, completion_tokens=run.completion_tokens,
        wall_time=time.monotonic() - run.start, model_time=run.model_time, sandbox_time=run.sandbox_time,
        infra_error=end.detail if end.reason == "infra_error" else None,
    )
    return Episode(result=result, turns=run.turns, end=end, patch_refused=run.refused)


class ConversationPrompts:
    """``agent.context: conversation``: each turn after the first is sampled from token ids,
    the last turn's prompt + sampled ids + the observation turn's tokens
    (:func:`~swe_srl.prompts.turn_continuation`), never re-tokenised from text."""

    def __init__(self, policy: Any, tokenizer: Any, limit: int = 0) -> None:
        self.policy, self.tokenizer, self.limit = policy, tokenizer, limit
        self.specials = frozenset(getattr(tokenizer, "all_special_ids", ()) or ())

    @classmethod
    def of(cls, policy: Any, limit: int = 0) -> ConversationPrompts:
        """For ``policy`` (or the policy a batching / locking wrapper holds), with its tokenizer;
        ``limit`` 0: the model's context length (``max_position_embeddings``), if it has one."""
        inner = policy
        while getattr(inner, "tokenizer", None) is None and getattr(inner, "policy", None) is not None:
            inner = inner.policy
        if not (hasattr(policy, "generate_from_ids") and hasattr(inner, "generate_from_ids")):
            raise ConfigError(f"agent.context=conversation samples from token ids, which {type(inner).__name__} "
                              "cannot (use an hf or scripted policy, or agent.context=window)")
        if getattr(inner, "tokenizer", None) is None:
            raise ConfigError("agent.context=conversation needs the policy's tokenizer (a scripted policy: give one)")
        model_config = getattr(getattr(inner, "model", None), "config", None)
        return cls(policy, inner.tokenizer, limit or int(getattr(model_config, "max_position_embeddings", 0) or 0))

    def prompt_ids(self, last: Sample, reply: str) -> tuple[int, ...]:
        """The next turn's prompt: ``last``'s prompt and sampled ids, then ``reply``'s turn."""
        text = turn_continuation(self.tokenizer, reply)
        completion = tuple(last.completion_ids)
        if completion and completion[-1] in self.specials:  # it sampled the answer's end marker itself
            end = self.tokenizer.decode([completion[-1]], skip_special_tokens=False)
            if end and text.startswith(end):
                text = text[len(end):]
        return tuple(last.prompt_ids) + completion + tuple(self.tokenizer(text, add_special_tokens=False)["input_ids"])

    def generate(self, last: Sample, reply: str, generation: GenerationConfig) -> Sample:
        """The next turn's sample (no limit checked: :func:`run_episode` checks it)."""
        return self.policy.generate_from_ids([self.prompt_ids(last, reply)], generation)[0][0]


def _diff(sandbox: Sandbox) -> tuple[str, str]:
    """The episode's patch, or ("", why) when it is over the size limit (never read whole)."""
    try:
        return sandbox.diff(), ""
    except PatchTooLarge as exc:
        return "", str(exc)
