"""Where episodes run (:mod:`swe_srl.runner`) and the one run-and-grade sequence every backend
shares, without Docker: a fake sandbox stands in for the container, so how an episode ends
(its typed :class:`~swe_srl.agent.EpisodeEnd`) and what the harness grades from it are checked
in milliseconds. The ``local`` backend runs an episode end to end where Docker is up."""

from __future__ import annotations

from contextlib import contextmanager, nullcontext
from dataclasses import replace
from typing import get_args

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.agent import AgentConfig, EpisodeEnd, run_episode
from swe_srl.errors import ConfigError, DiskLimitExceeded, InfrastructureError, PatchTooLarge, SandboxDied
from swe_srl.harness import CONTAINER_DIED, DISK_LIMIT, EpisodeBackend, HarnessConfig, run_graded_episode
from swe_srl.hosts import HostsConfig
from swe_srl.policy.scripted import ScriptedPolicy
from swe_srl.prompts import format_completion
from swe_srl.runner import RUNNERS, DockerRunner, LocalRunner, RayRunner, backend_of, open_runner
from swe_srl.schemas import ExecResult, Task, TestReport

TASK = Task(instance_id="o__r-1", repo="o/r", base_commit="0" * 40, problem_statement="Fix it.")
PATCH = "diff --git a/x.py b/x.py\n--- a/x.py\n+++ b/x.py\n@@ -1 +1 @@\n-a\n+b\n"


def _say(tool: str, **arguments) -> str:
    return format_completion("Next.", render_xml(make_action(tool, arguments)))


class FakeSandbox:
    """The Sandbox protocol over a dict of canned outcomes: a command's output, or what it raises."""

    base_commit = "0" * 40

    def __init__(self, outcomes: dict | None = None, diff: object = PATCH) -> None:
        self.outcomes, self._diff, self.closed = outcomes or {}, diff, False

    def exec(self, command: str, timeout: float | None = None, **_: object) -> ExecResult:
        outcome = self.outcomes.get(command, "ok")
        if isinstance(outcome, BaseException):
            raise outcome
        return ExecResult(output=outcome, exit_code=0)

    def diff(self) -> str:
        if isinstance(self._diff, BaseException):
            raise self._diff
        return str(self._diff)

    def close(self) -> None:
        self.closed = True

    def __enter__(self) -> FakeSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class TenTokenPrompts(ScriptedPolicy):
    """A scripted policy whose every prompt counts 10 tokens."""

    def generate(self, conversations, config):
        return [[replace(s, prompt_ids=(1,) * 10) for s in group] for group in super().generate(conversations, config)]


# --------------------------------------------------------------------------- the knob


def test_every_name_of_the_knob_has_a_runner_and_back():
    assert set(get_args(EpisodeBackend)) == set(RUNNERS)


def test_one_knob_says_where_and_the_old_hosts_backend_key_still_means_ray():
    assert backend_of(HarnessConfig(), HostsConfig()) == "docker"
    assert backend_of(HarnessConfig(sandbox="local"), HostsConfig()) == "local"
    assert backend_of(HarnessConfig(sandbox="ray"), HostsConfig()) == "ray"
    assert backend_of(HarnessConfig(), HostsConfig(backend="ray")) == "ray"
    with pytest.raises(ConfigError, match="harness.sandbox=local"):
        backend_of(HarnessConfig(sandbox="local"), HostsConfig(backend="ray"))


def test_runners_are_built_from_the_settings_without_starting_anything():
    with open_runner(HarnessConfig(), workers=3) as runner:
        assert isinstance(runner, DockerRunner) and runner.workers == 3
    assert isinstance(open_runner(HarnessConfig(sandbox="local")), LocalRunner)
    hosts = HostsConfig(hosts=("a=", "b="), episodes_per_host=3, episode_budget_s=100.0, call_grace_s=10.0)
    ray = open_runner(HarnessConfig(sandbox="ray"), hosts, workers=1)
    assert isinstance(ray, RayRunner) and ray.workers == 6 and ray.pool is None  # Ray starts at the first plan
    assert ray.harness.agent.max_wall_time == 90.0  # the agent's limit within the episode budget
    ray.plan([])
    assert ray.pool is None
    ray.close()


def test_a_runner_shares_an_unsafe_policy_between_its_workers_only():
    policy = ScriptedPolicy(["x"])
    assert open_runner(HarnessConfig(), workers=1).share(policy) is policy
    assert open_runner(HarnessConfig(), workers=2).share(policy, thread_safe=True) is policy
    assert open_runner(HarnessConfig(), workers=2).share(policy) is not policy


# --------------------------------------------------------------------------- the one sequence


def _graded(completions, sandbox, images=None, grader=None):
    """run_graded_episode with fake seams; returns (graded, what happened, in order)."""
    events: list = []

    @contextmanager
    def image(task):
        events.append(("lease", task.instance_id))
        yield "img:1"
        events.append(("release", task.instance_id))

    def grade(task, patch):
        events.append(("grade", task.image, patch))
        return TestReport(instance_id=task.instance_id, resolved=True, fail_to_pass=1.0, pass_to_pass=1.0)

    harness = HarnessConfig(agent=AgentConfig(max_steps=3))
    graded = run_graded_episode(ScriptedPolicy(completions), TASK, harness, images=images or image,
                                sandboxes=lambda task, tag: sandbox, grader=grader or grade)
    return graded, events


def test_the_sequence_grades_the_patch_on_the_leased_image_and_releases_it_after():
    box = FakeSandbox()
    graded, events = _graded([_say("bash", command="ls"), _say("submit")], box)
    assert graded.resolved and graded.infra_error is None and box.closed
    assert graded.episode.end == EpisodeEnd("submitted") and graded.result.report is graded.report
    assert events == [("lease", TASK.instance_id), ("grade", "img:1", PATCH), ("release", TASK.instance_id)]


def test_an_image_that_cannot_be_made_is_an_infra_failure_with_no_report():
    graded, _ = _graded([_say("submit")], FakeSandbox(),
                        images=lambda task: nullcontext(InfrastructureError("image gone")))
    assert graded.infra_error == "image gone" and graded.episode is None and graded.report is None


@pytest.mark.parametrize("error, reason, rejected", [
    (SandboxDied("container exited (137)", output="Killed"), "container_died", CONTAINER_DIED),
    (DiskLimitExceeded("wrote past 50m", output="No space"), "disk_limit", DISK_LIMIT),
], ids=["container_died", "disk_limit"])
def test_a_container_the_model_took_down_is_its_miss_not_an_infra_failure(error, reason, rejected):
    graded, events = _graded([_say("bash", command="kill -9 -1"), _say("submit")], FakeSandbox({"kill -9 -1": error}))
    assert graded.episode.end == EpisodeEnd(reason, str(error))
    assert graded.infra_error is None and not graded.resolved and graded.report.rejected == rejected
    assert graded.report.log_tail == str(error) and graded.turns[-1].observation == error.output
    assert graded.result.trajectory.metadata["container_died"] == str(error)  # trajectory.json as before
    assert not [e for e in events if e[0] == "grade"]


def test_a_sandbox_failure_under_the_episode_is_an_infra_failure():
    graded, _ = _graded([_say("bash", command="ls")], FakeSandbox({"ls": InfrastructureError("engine gone")}))
    assert graded.episode.end == EpisodeEnd("infra_error", "engine gone")
    assert graded.infra_error == "engine gone" == graded.result.infra_error and graded.report.infra_error


def test_an_oversized_patch_is_refused_unread_and_the_step_limit_still_ends_the_episode():
    graded, events = _graded([_say("bash", command="ls")] * 3, FakeSandbox(diff=PatchTooLarge(9_000_000, 10)))
    refused = "patch too large: 9000000 bytes > 10"
    assert graded.episode.end == EpisodeEnd("step_limit") and graded.episode.patch_refused == refused
    assert graded.report.rejected == refused and graded.result.patch == ""
    assert graded.result.trajectory.metadata["patch_too_large"] == refused
    assert not [e for e in events if e[0] == "grade"]


@pytest.mark.parametrize("config, completions, reason", [
    (AgentConfig(max_steps=2), [_say("bash", command="ls")] * 2, "step_limit"),
    (AgentConfig(max_format_errors=1), ["no think", "still none", _say("submit")], "format_errors"),
    (AgentConfig(max_tokens=1), [_say("bash", command="ls"), _say("submit")], "token_limit"),
    (AgentConfig(max_wall_time=1e-9), [_say("submit")], "time_limit"),
], ids=["steps", "format_errors", "tokens", "wall_time"])
def test_each_limit_ends_the_episode_with_its_reason(config, completions, reason):
    policy = TenTokenPrompts(completions)
    episode = run_episode(policy, FakeSandbox(), TASK, config)
    assert episode.end == EpisodeEnd(reason) and episode.result.exit_reason == reason
    assert episode.result.patch == PATCH  # graded on what it left in the repository


# --------------------------------------------------------------------------- local, end to end


@pytest.mark.docker
def test_the_local_backend_runs_the_episode_in_a_copy_of_the_repository_and_grades_it(docker_client, base_image):
    from swe_srl.tasks import load_tasks

    task = load_tasks("demo", ids=["swe-srl-demo__pagekit-1"])[0]
    policy = ScriptedPolicy([_say("bash", command="pwd && echo x > note.txt"), _say("submit")])
    with open_runner(replace(HarnessConfig(), sandbox="local"), model_name="scripted") as runner:
        graded = runner.run(policy, task)
    assert graded.infra_error is None and graded.episode.end == EpisodeEnd("submitted")
    assert "swe-srl-local-" in graded.result.trajectory.steps[0].observation  # not a container's /testbed
    assert "+++ b/note.txt" in graded.result.patch and graded.report.patch_applied and not graded.resolved
    assert graded.result.trajectory.model == "scripted"
