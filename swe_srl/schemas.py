"""Versioned, typed records that every layer of swe-srl exchanges.

All records are frozen dataclasses. Sequences are tuples and mappings are dicts so that
``Record.from_dict(json.loads(json.dumps(r.to_dict()))) == r`` holds exactly. Each serialised
record carries ``schema_version``; readers accept older versions they know and refuse newer ones.
"""

from __future__ import annotations

import dataclasses
import functools
import types
import typing
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, TypeVar, Union

from .errors import RecordError

SCHEMA_VERSION = 1

T = TypeVar("T", bound="Record")


def _convert(tp: Any, value: Any) -> Any:
    """Rebuild ``value`` (parsed JSON) as type ``tp`` (a field annotation)."""
    if value is None:
        return None
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return _convert(inner[0], value) if len(inner) == 1 else value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise RecordError(f"expected a list, got {type(value).__name__}")
        item_tp = args[0] if args else Any
        return tuple(_convert(item_tp, v) for v in value)
    if origin in (dict, Mapping) or tp is dict:
        if not isinstance(value, Mapping):
            raise RecordError(f"expected an object, got {type(value).__name__}")
        return dict(value)
    if isinstance(tp, type) and issubclass(tp, Record):
        return tp.from_dict(value)
    if tp is float and isinstance(value, int) and not isinstance(value, bool):
        return float(value)
    return value


_PLAIN = (str, int, float, bool, type(None))


@functools.cache
def _type_hints(cls: type) -> dict[str, Any]:
    return typing.get_type_hints(cls)


@functools.cache
def _field_names(cls: type) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls))


def _jsonable(value: Any) -> Any:
    if type(value) in _PLAIN:
        return value
    if isinstance(value, Record):
        return value.to_dict()
    if isinstance(value, (tuple, list)):
        return [_jsonable(v) for v in value]
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    return value


class Record:
    """Mixin: dict/JSON round trip driven by the dataclass field annotations."""

    kind: ClassVar[str] = "record"

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"schema_version": SCHEMA_VERSION}
        for name in _field_names(type(self)):
            value = getattr(self, name)
            out[name] = value if type(value) in _PLAIN else _jsonable(value)
        return out

    @classmethod
    def from_dict(cls: type[T], data: Mapping[str, Any]) -> T:
        if not isinstance(data, Mapping):
            raise RecordError(f"{cls.__name__}: expected an object, got {type(data).__name__}")
        version = data.get("schema_version", SCHEMA_VERSION)
        if not isinstance(version, int) or version > SCHEMA_VERSION:
            raise RecordError(
                f"{cls.__name__}: schema_version {version!r} is newer than this swe-srl "
                f"understands ({SCHEMA_VERSION}); upgrade swe-srl"
            )
        hints = _type_hints(cls)
        kwargs = {}
        for f in dataclasses.fields(cls):  # type: ignore[arg-type]
            if f.name in data:
                try:
                    kwargs[f.name] = _convert(hints[f.name], data[f.name])
                except RecordError as exc:
                    raise RecordError(f"{cls.__name__}.{f.name}: {exc}") from exc
            elif f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
                raise RecordError(f"{cls.__name__}: missing required field {f.name!r}")
        try:
            return cls(**kwargs)
        except (TypeError, ValueError) as exc:
            raise RecordError(f"{cls.__name__}: {exc}") from exc


@dataclass(frozen=True)
class Action(Record):
    """One tool call. ``tool`` is the function name (``bash``, ``str_replace_editor``,
    ``submit``, or a SWE-agent ACI command such as ``edit``); ``arguments`` its named
    arguments (strings or ints); ``raw`` the text the action was parsed from, if any."""

    tool: str
    arguments: dict = field(default_factory=dict)
    raw: str = ""

    def __post_init__(self) -> None:
        if not isinstance(self.tool, str) or not self.tool:
            raise ValueError("Action.tool must be a non-empty string")
        if not isinstance(self.arguments, dict):
            raise ValueError("Action.arguments must be a dict")

    @property
    def is_submit(self) -> bool:
        return self.tool in ("submit", "finish")


@dataclass(frozen=True)
class Step(Record):
    """One round of an agent episode: the agent's thought and action, and what came back."""

    action: Action
    thought: str = ""
    observation: str = ""
    exit_code: int | None = None
    timed_out: bool = False


@dataclass(frozen=True)
class Trajectory(Record):
    """A whole agent episode on one task, in any source format, normalised."""

    task_id: str
    problem_statement: str
    steps: tuple[Step, ...]
    source_format: str
    source: str = ""
    trajectory_id: str = ""
    resolved: bool | None = None
    final_patch: str | None = None
    exit_status: str | None = None
    model: str | None = None
    metadata: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not self.trajectory_id:
            object.__setattr__(self, "trajectory_id", self.task_id)


@dataclass(frozen=True)
class ContextRound(Record):
    """One earlier (action, observation) round shown in a step target's context."""

    action: str
    observation: str
    thought: str = ""


@dataclass(frozen=True)
class StepTarget(Record):
    """One SRL training instance: predict the expert's next action from the issue and the
    last K rounds. ``target`` is the canonical action text (XML function-call syntax).
    ``leaks`` names the leak rules the target action matched (``build-dataset --leaks flag``;
    empty otherwise)."""

    id: str
    trajectory_id: str
    task_id: str
    step_index: int
    num_steps: int
    problem_statement: str
    context: tuple[ContextRound, ...]
    target: str
    target_tool: str
    expert_thought: str = ""
    source_format: str = ""
    resolved: bool | None = None
    split: str = "train"
    leaks: tuple[str, ...] = ()


@dataclass(frozen=True)
class Task(Record):
    """A repository at a base commit with an issue and tests that decide success
    (the SWE-bench record shape). Test lists are tuples of test names."""

    instance_id: str
    repo: str
    base_commit: str
    problem_statement: str
    patch: str = ""
    test_patch: str = ""
    fail_to_pass: tuple[str, ...] = ()
    pass_to_pass: tuple[str, ...] = ()
    image: str = ""
    test_cmd: str = ""
    test_files: tuple[str, ...] = ()
    log_parser: str = "pytest"
    workdir: str = "/testbed"
    version: str = ""
    difficulty: str = ""
    hints_text: str = ""
    created_at: str = ""
    environment_setup_commit: str = ""
    source: str = "swebench"
    metadata: dict = field(default_factory=dict)


@dataclass(frozen=True)
class ExecResult(Record):
    """What one command in a sandbox gave back. A failing command is a result, not an error."""

    output: str
    exit_code: int | None
    timed_out: bool = False
    duration: float = 0.0
    truncated: bool = False


@dataclass(frozen=True)
class ResourceUsage(Record):
    """What sandbox containers used (one container, or the sum over an episode's or a run's).

    ``cpu_seconds`` and ``memory_peak_bytes``: the container's cgroup counters, read once just
    before it is removed (:mod:`swe_srl.sandbox.usage`; the local backend: the rusage of its
    commands). ``unmeasured`` counts the containers that could not be read (dead before
    removal, an engine error): their CPU is missing from the sum. ``memory_peak_bytes`` is the
    largest peak of any one container; ``memory_source`` says what it is: ``max_usage``
    (cgroup v1's high-water mark, page cache included), ``memory.peak`` (cgroup v2),
    ``usage_at_close`` (cgroup v2 without memory.peak: a lower bound), ``max_rss`` (local: the
    largest process), several joined by ``+``. ``container_seconds``: create to removal."""

    containers: int = 0
    container_seconds: float = 0.0
    cpu_seconds: float = 0.0
    memory_peak_bytes: int | None = None
    memory_source: str = ""
    unmeasured: int = 0

    def __add__(self, other: ResourceUsage) -> ResourceUsage:
        peaks = [p for p in (self.memory_peak_bytes, other.memory_peak_bytes) if p is not None]
        sources = sorted({s for u in (self, other) for s in u.memory_source.split("+") if s})
        return ResourceUsage(
            containers=self.containers + other.containers,
            container_seconds=round(self.container_seconds + other.container_seconds, 3),
            cpu_seconds=round(self.cpu_seconds + other.cpu_seconds, 3),
            memory_peak_bytes=max(peaks) if peaks else None, memory_source="+".join(sources),
            unmeasured=self.unmeasured + other.unmeasured)

    @classmethod
    def total(cls, parts: Sequence[ResourceUsage | None]) -> ResourceUsage:
        """The sum of ``parts`` (None entries skipped)."""
        out = cls()
        for part in parts:
            if part is not None:
                out = out + part
        return out


@dataclass(frozen=True)
class TestReport(Record):
    """Grading of one patch on one task. ``infra_error`` set means the harness failed and
    nothing is known about the patch. ``rejected`` says why the patch is not resolved whatever
    its tests said (``tampered: conftest.py``, ``test runner replaced: pytest.py``, ``results
    channel forged``, ``tests killed the container``, ``patch too large``, ...)."""

    __test__ = False  # not a pytest test class

    instance_id: str
    statuses: dict = field(default_factory=dict)
    resolved: bool = False
    fail_to_pass: float = 0.0
    pass_to_pass: float = 1.0
    patch_applied: bool = True
    infra_error: str | None = None
    duration: float = 0.0
    log_tail: str = ""
    rejected: str | None = None
    usage: ResourceUsage | None = None
    """The grading container's (None: no container ran)."""


@dataclass(frozen=True)
class RewardResult(Record):
    """A reward for one sample; ``value`` None means left out of group statistics."""

    value: float | None
    components: dict = field(default_factory=dict)
    infra_error: str | None = None


@dataclass(frozen=True)
class EpisodeResult(Record):
    """One agent episode: its trajectory, its patch, why it ended, what it cost."""

    trajectory: Trajectory
    patch: str
    exit_reason: str
    num_steps: int = 0
    format_errors: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_time: float = 0.0
    model_time: float = 0.0
    sandbox_time: float = 0.0
    infra_error: str | None = None
    report: TestReport | None = None
    usage: ResourceUsage | None = None
    """The agent's container (None: not measured); the grading container's is in ``report``."""
