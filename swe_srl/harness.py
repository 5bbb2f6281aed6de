"""Run a task as an agent episode, then grade it: THE run-and-grade sequence every episode
runner shares (:mod:`swe_srl.runner` picks where it runs, for eval, rlvr/hybrid training and
``record-experts``).

    task image -> fresh sandbox -> agent episode (policy <-> sandbox) -> patch
               -> fresh grading container (patch + test patch, the task's tests) -> TestReport

:func:`run_graded_episode` takes what differs between backends as parameters: the image
provider (a context manager per task: the image held for the episode and its grading), the
sandbox opener and the grader. :func:`finish_graded_episode` decides from the episode's typed
end (:class:`~swe_srl.agent.EpisodeEnd`) what is graded.

Who is at fault: a failure before the model's code runs (image missing, engine error,
container create/start, a grading harness that breaks) is an infrastructure failure
(``GradedEpisode.infra_error``): nothing is known about the policy, and rewards built on it
are None. Whatever the model's actions or patch do is its own result. An empty patch is not
graded: the FAIL_TO_PASS tests fail at the base commit by construction.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass, field, replace
from typing import Literal

from .agent import GREEDY, AgentConfig, Episode, run_episode
from .errors import ConfigError, InfrastructureError
from .policy.base import GenerationConfig, Policy
from .sandbox import SandboxConfig
from .sandbox.base import Sandbox
from .sandbox.config import Backend, check_size
from .sandbox.grading import GradingConfig
from .sandbox.images.source import ensure_image
from .schemas import EpisodeResult, ResourceUsage, Task, TestReport

EpisodeBackend = Literal["docker", "local", "ray"]
"""Where episodes run (``harness.sandbox``): one name per :data:`swe_srl.runner.RUNNERS` entry."""

ImageProvider = Callable[[Task], AbstractContextManager["str | InfrastructureError"]]
"""``task`` -> a context manager holding its image for the block: the tag, or the
InfrastructureError that kept it from being made."""
SandboxOpener = Callable[[Task, str], Sandbox]
"""(task, image tag) -> a started sandbox (closed by the caller, with ``with``)."""
Grader = Callable[[Task, str], TestReport]
"""(task with its image, patch) -> the report of a fresh grading container."""

EMPTY_PATCH_LOG = "empty patch: not graded"
CONTAINER_DIED = "the agent's commands killed its container"
DISK_LIMIT = "the agent's commands wrote past the disk budget"


@dataclass(frozen=True)
class HarnessConfig:
    """How one task is run and graded: the agent's limits, the grading limits, and the
    sandbox the agent works in (one fresh container per episode)."""

    agent: AgentConfig = field(default_factory=AgentConfig)
    grading: GradingConfig = field(default_factory=GradingConfig)
    mem_limit: str = "2g"
    """Memory of each agent container."""
    cpus: float = 1.0
    """CPU share of each agent container."""
    disk_limit: str | None = "4g"
    """What each agent container may write (None = unlimited); past it the episode ends as
    the model's failure."""
    sandbox: EpisodeBackend = "docker"
    """Where episodes run: 'docker' (this machine's engine, isolated), 'local' (a copy of the
    task's repository, no isolation; only where docker is unavailable: grading still uses
    Docker) or 'ray' (Docker hosts behind Ray actors, the ``hosts`` settings beside this). The
    older ``hosts.backend: ray`` means 'ray' too. See :mod:`swe_srl.runner`."""
    image_budget_gb: float | None = None
    """Disk budget of the project's images on each Docker engine, in GB (10^9 bytes; None =
    no budget): task images are evicted least recently used to stay within it (never a base
    image or one in use) and rebuilt when needed again. See :mod:`swe_srl.sandbox.images.cache`."""
    image_prefetch: int = 2
    """Images of the next N tasks made (built or pulled) in the background while the current
    ones run, within the budget (local engine; 0 = off)."""

    def __post_init__(self) -> None:
        if self.cpus <= 0:
            raise ConfigError(f"harness.cpus must be > 0, got {self.cpus}")
        check_size("harness.disk_limit", self.disk_limit)
        if self.image_budget_gb is not None and self.image_budget_gb < 0:
            raise ConfigError(f"harness.image_budget_gb must be >= 0 (or null for no budget), got "
                              f"{self.image_budget_gb}")
        if self.image_prefetch < 0:
            raise ConfigError(f"harness.image_prefetch must be >= 0 (0 = off), got {self.image_prefetch}")


@dataclass
class GradedEpisode:
    """One task run and graded. ``episode`` is None when no sandbox could be opened; its
    ``result.report`` is the grading report (also in ``report``)."""

    task: Task
    episode: Episode | None = None
    report: TestReport | None = None
    infra_error: str | None = None
    wall_time: float = 0.0
    host: str | None = None
    """The Docker host it ran on (Ray backend; None for the local engine)."""

    @property
    def result(self) -> EpisodeResult | None:
        return self.episode.result if self.episode is not None else None

    @property
    def turns(self) -> list:
        return list(self.episode.turns) if self.episode is not None else []

    @property
    def resolved(self) -> bool:
        return self.infra_error is None and self.report is not None and bool(self.report.resolved)

    @property
    def usage(self) -> ResourceUsage | None:
        """The agent's container and the grading container together (None: neither measured)."""
        parts = [self.result.usage if self.result is not None else None,
                 self.report.usage if self.report is not None else None]
        return ResourceUsage.total(parts) if any(p is not None for p in parts) else None


def record_usage(out: GradedEpisode, sandbox: object) -> None:
    """Put what the episode's sandbox used (read when it was removed) into its result."""
    usage = getattr(sandbox, "usage", None)
    if out.episode is not None and usage is not None:
        out.episode.result = replace(out.episode.result, usage=usage)


def sandbox_config(task: Task, image: str, config: HarnessConfig, backend: Backend = "docker") -> SandboxConfig:
    """The agent sandbox of ``task`` under ``config``'s limits (the local backend copies the
    task's repository)."""
    source = task.metadata.get("task_dir") if backend == "local" and isinstance(task.metadata, dict) else None
    return SandboxConfig(image=image, workdir=task.workdir, mem_limit=config.mem_limit, cpus=config.cpus,
                         backend=backend, source=source, max_patch_bytes=config.grading.max_patch_bytes,
                         disk_limit=config.disk_limit)


@contextmanager
def present_image(task: Task) -> Iterator[str | InfrastructureError]:
    """The image provider without a cache: ``task``'s image made present (built or pulled)."""
    try:
        image: str | InfrastructureError = ensure_image(task)
    except InfrastructureError as exc:
        image = exc
    yield image


def finish_graded_episode(out: GradedEpisode, grade_patch: Callable[[str], TestReport]) -> None:
    """Set ``out``'s report from its finished episode: what the episode itself decided (its
    end: an infrastructure failure, a killed container, the disk budget; an oversized or empty
    patch), else ``grade_patch(patch)`` (a fresh grading container, here or on the episode's host)."""
    task, episode, result = out.task, out.episode, out.episode.result
    end = episode.end
    if end.reason == "infra_error":
        report = TestReport(instance_id=task.instance_id, infra_error=end.detail, pass_to_pass=0.0)
    elif end.reason in ("container_died", "disk_limit"):
        report = TestReport(instance_id=task.instance_id, resolved=False, pass_to_pass=0.0, patch_applied=False,
                            rejected=CONTAINER_DIED if end.reason == "container_died" else DISK_LIMIT,
                            log_tail=end.detail)
    elif episode.patch_refused:
        report = TestReport(instance_id=task.instance_id, resolved=False, pass_to_pass=0.0, patch_applied=False,
                            rejected=episode.patch_refused,
                            log_tail=f"[swe-srl] {episode.patch_refused}: not read, not stored")
    elif not result.patch.strip():
        report = TestReport(instance_id=task.instance_id, resolved=False, pass_to_pass=0.0,
                            patch_applied=False, log_tail=EMPTY_PATCH_LOG)
    else:
        report = grade_patch(result.patch)
    out.report = report
    out.infra_error = report.infra_error
    out.episode.result = replace(result, report=report)


def run_graded_episode(policy: Policy, task: Task, config: HarnessConfig, generation: GenerationConfig = GREEDY,
                       *, images: ImageProvider, sandboxes: SandboxOpener, grader: Grader,
                       model_name: str = "") -> GradedEpisode:
    """Run ``policy`` on ``task`` in a fresh sandbox, then grade its patch in a fresh container:
    the image from ``images`` (held until graded), the sandbox from ``sandboxes``, the report
    from ``grader``. An InfrastructureError on the way is the episode's ``infra_error``;
    ``report`` stays None then (nothing came back to grade)."""
    started = time.monotonic()
    out = GradedEpisode(task)
    try:
        with images(task) as image:
            if isinstance(image, InfrastructureError):
                raise image
            with sandboxes(task, image) as sandbox:
                out.episode = run_episode(policy, sandbox, task, config.agent, generation, model_name=model_name)
            record_usage(out, sandbox)
            finish_graded_episode(out, lambda patch: grader(replace(task, image=image), patch))
    except InfrastructureError as exc:
        out.infra_error = str(exc)
    out.wall_time = time.monotonic() - started
    return out
