"""Where episodes run: one :class:`EpisodeRunner` per run, built once from the harness and
hosts settings, that eval, rlvr/hybrid training (:class:`~swe_srl.rl.sources.EpisodeSource`)
and ``record-experts`` (through eval) each call.

    runner = open_runner(harness, hosts, workers=4, generation=GREEDY, model_name="m")
    policy = runner.share(policy)        # safe for the runner's threads (one batching queue)
    runner.plan(tasks)                   # the order tasks will run in: images made ahead
    graded = runner.run(policy, task)    # -> GradedEpisode; from up to runner.workers threads
    runner.close()

One knob answers "where": ``harness.sandbox`` (:data:`~swe_srl.harness.EpisodeBackend`).

    docker   this machine's engine (default): images leased from one ImageCache (built once,
             evicted under harness.image_budget_gb, the next tasks' prefetched)
    local    a copy of the task's repository, no isolation (only where docker is
             unavailable; the image is still made, and grading still runs in Docker)
    ray      Docker hosts behind Ray actors (:mod:`swe_srl.hosts`, the ``hosts`` settings):
             each episode takes a slot on the least loaded live host, which makes the image,
             holds the sandbox and grades the patch; the agent loop stays here, next to the
             policy. ``workers`` is then the hosts' slots (``hosts.episodes_per_host`` each).

Older keys still work: ``hosts.backend: ray`` means ``harness.sandbox: ray``, and
``hosts.backend: local`` (its old default) leaves ``harness.sandbox`` to say where.

Every backend runs the SAME sequence, :func:`swe_srl.harness.run_graded_episode` (image ->
fresh sandbox -> agent episode -> fresh grading container), and differs only in the three
things it hands it: :meth:`EpisodeRunner.image` (where the task's image comes from, held
until graded), :meth:`~EpisodeRunner.open` (how a sandbox is opened) and
:meth:`~EpisodeRunner.grade` (where the patch is graded). Adding a backend = one class here:
subclass :class:`EpisodeRunner`, override those three (and ``plan`` / ``close`` /
``summary`` when it holds resources across episodes), add it to :data:`RUNNERS` and its name
to :data:`~swe_srl.harness.EpisodeBackend` (a test keeps the two in step).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from typing import Any, ClassVar

from .agent import GREEDY
from .errors import ConfigError, InfrastructureError
from .harness import EpisodeBackend, GradedEpisode, HarnessConfig, present_image, run_graded_episode, sandbox_config
from .hosts import HostHandle, HostPool, HostsConfig, RemoteSandbox
from .policy.base import GenerationConfig, Policy
from .policy.batching import shared_policy
from .sandbox import open_sandbox
from .sandbox.base import Sandbox
from .sandbox.grading import grade
from .sandbox.images.cache import ImageCache
from .schemas import Task, TestReport

log = logging.getLogger(__name__)


class EpisodeRunner:
    """Runs and grades episodes of one run, from up to :attr:`workers` threads at once."""

    name: ClassVar[str]

    def __init__(self, harness: HarnessConfig, hosts: HostsConfig, *, workers: int = 1,
                 generation: GenerationConfig = GREEDY, model_name: str = "") -> None:
        self.harness, self.hosts, self.generation, self.model_name = harness, hosts, generation, model_name
        self.workers = workers
        """Episodes this runner runs at once: the caller's thread count."""

    def share(self, policy: Policy, *, thread_safe: bool = False) -> Policy:
        """``policy`` as :attr:`workers` threads call it: an in-process model behind one
        batching queue (no global lock), another policy behind a lock; as is when it is
        ``thread_safe`` (a server) or there is one worker."""
        return policy if thread_safe or self.workers == 1 else shared_policy(policy, self.workers)

    def run(self, policy: Policy, task: Task) -> GradedEpisode:
        """Run ``policy`` on ``task`` in a fresh sandbox; grade its patch in a fresh container."""
        return run_graded_episode(policy, task, self.harness, self.generation, images=self.image,
                                  sandboxes=self.open, grader=self.grade, model_name=self.model_name)

    def image(self, task: Task) -> AbstractContextManager[str | InfrastructureError]:
        """``task``'s image, held for the block (its episode and grading)."""
        return present_image(task)

    def open(self, task: Task, image: str) -> Sandbox:
        """A fresh sandbox of ``image`` for ``task``'s episode."""
        raise NotImplementedError

    def grade(self, task: Task, patch: str) -> TestReport:
        """The report of ``patch`` on ``task`` (its image set), from a fresh grading container."""
        return grade(task, patch, self.harness.grading)

    def plan(self, tasks: Sequence[Task]) -> None:
        """The tasks about to run, in order."""

    def summary(self) -> dict[str, Any]:
        """What this runner adds to eval's summary.json."""
        return {}

    def close(self) -> None:
        """Release what the runner holds (prefetching, host actors)."""

    def __enter__(self) -> EpisodeRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class DockerRunner(EpisodeRunner):
    """``docker``: this machine's engine; each episode leases its task's image from one
    :class:`~swe_srl.sandbox.images.cache.ImageCache` (built once, evicted least recently used under
    ``harness.image_budget_gb``, the next tasks' images made ahead)."""

    name = "docker"

    def __init__(self, harness: HarnessConfig, hosts: HostsConfig, **kwargs: Any) -> None:
        super().__init__(harness, hosts, **kwargs)
        self.images = ImageCache.of(harness.image_budget_gb, harness.image_prefetch)

    def image(self, task: Task) -> AbstractContextManager[str | InfrastructureError]:
        return self.images.lease(task)

    def open(self, task: Task, image: str) -> Sandbox:
        return open_sandbox(sandbox_config(task, image, self.harness))

    def plan(self, tasks: Sequence[Task]) -> None:
        self.images.plan(tasks)  # prefetch builds the next tasks' images; eviction keeps the soonest needed

    def summary(self) -> dict[str, Any]:
        return {"image_cache": self.images.stats.to_dict()} if self.images.budget is not None else {}

    def close(self) -> None:
        self.images.close()


class LocalRunner(EpisodeRunner):
    """``local``: the agent works in a copy of the task's repository on this machine, no
    isolation (only where docker is unavailable); the image is still made for grading."""

    name = "local"

    def open(self, task: Task, image: str) -> Sandbox:
        return open_sandbox(sandbox_config(task, image, self.harness, backend="local"))


class RayRunner(EpisodeRunner):
    """``ray``: Docker hosts behind Ray actors (:class:`~swe_srl.hosts.HostPool`, started at
    the first :meth:`plan` or :meth:`run`). Each episode takes a slot on the least loaded live
    host and runs the shared sequence with that host's image, sandbox and grader, within
    ``hosts.episode_budget_s`` from its start; the agent's own time limit (the model's) is
    capped to that budget."""

    name = "ray"

    def __init__(self, harness: HarnessConfig, hosts: HostsConfig, **kwargs: Any) -> None:
        super().__init__(harness, hosts, **kwargs)
        self.workers = hosts.episodes_per_host * len(hosts.entries())
        cap = min(harness.agent.max_wall_time, max(1.0, hosts.episode_budget_s - hosts.call_grace_s))
        self.harness = replace(harness, agent=replace(harness.agent, max_wall_time=cap))
        self.pool: HostPool | None = None
        self._lock = threading.Lock()

    def _pool(self) -> HostPool:
        with self._lock:
            if self.pool is None:
                self.pool = HostPool(self.hosts)
            return self.pool

    def plan(self, tasks: Sequence[Task]) -> None:
        if tasks:  # start the hosts here, not in the first episode's thread
            self._pool()

    def run(self, policy: Policy, task: Task) -> GradedEpisode:
        """One task on the least loaded live host: agent episode there, graded there."""
        started = time.monotonic()
        pool = self._pool()
        host = pool.take()
        if host is None:
            return GradedEpisode(task, infra_error="no Docker host is up")
        deadline, grading, grace = started + self.hosts.episode_budget_s, self.harness.grading, self.hosts.call_grace_s
        try:
            out = run_graded_episode(
                policy, task, self.harness, self.generation, model_name=self.model_name,
                images=lambda t: self._image_on(pool, host, t, deadline),
                sandboxes=lambda t, image: RemoteSandbox(host, sandbox_config(t, image, self.harness), deadline, grace),
                grader=lambda t, patch: host.call("grade", t, patch, grading, timeout=grading.harness_timeout + grace))
            if out.report is None:  # the host raised, nothing came back: is its engine still there?
                pool.check(host)
        finally:
            pool.give(host)
        out.host, out.wall_time = host.name, time.monotonic() - started
        return out

    @contextmanager
    def _image_on(self, pool: HostPool, host: HostHandle, task: Task, deadline: float) -> Iterator[str]:
        """``task``'s image on ``host``'s engine (made there under the image budget), held until graded."""
        image = host.call("ensure_image", task, self.harness.image_budget_gb,
                          timeout=max(1.0, deadline - time.monotonic()))
        try:
            yield image
        finally:
            pool.release_image(host, image)

    def close(self) -> None:
        """Stop the host actors (and the local Ray this run started, if any)."""
        if self.pool is not None:
            self.pool.close()
            self.pool = None


RUNNERS: dict[str, type[EpisodeRunner]] = {r.name: r for r in (DockerRunner, LocalRunner, RayRunner)}


def backend_of(harness: HarnessConfig, hosts: HostsConfig) -> EpisodeBackend:
    """Where episodes run: ``harness.sandbox``, or ``ray`` where a config says so the older
    way (``hosts.backend: ray``)."""
    if hosts.backend == "ray" and harness.sandbox == "local":
        raise ConfigError("hosts.backend=ray runs episodes in Docker on the Ray hosts; it cannot be combined with "
                          "harness.sandbox=local (set harness.sandbox=ray instead of hosts.backend)")
    return "ray" if hosts.backend == "ray" else harness.sandbox


def open_runner(harness: HarnessConfig, hosts: HostsConfig | None = None, *, workers: int = 1,
                generation: GenerationConfig = GREEDY, model_name: str = "") -> EpisodeRunner:
    """The runner of ``harness.sandbox`` (see the module docstring); ``workers``: the threads
    the caller runs episodes from (a Ray runner sets its own, from its hosts' slots)."""
    hosts = hosts if hosts is not None else HostsConfig()
    return RUNNERS[backend_of(harness, hosts)](harness, hosts, workers=workers, generation=generation,
                                               model_name=model_name)
