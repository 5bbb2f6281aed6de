"""The agent loop against real containers of a demo task: how episodes end (submit, step
limit, format errors, a container killed between two turns) and what the next prompt shows."""

from __future__ import annotations

import os

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.agent import FORMAT_ERROR_OBSERVATION, AgentConfig, run_episode
from swe_srl.experts import load_script, script_path
from swe_srl.policy.scripted import ScriptedPolicy
from swe_srl.prompts import format_completion
from swe_srl.tasks import load_tasks

pytestmark = pytest.mark.docker

TASK = load_tasks("demo", ids=["swe-srl-demo__pagekit-1"])[0]


def _say(thought: str, tool: str, **arguments) -> str:
    return format_completion(thought, render_xml(make_action(tool, arguments)))


@pytest.fixture(scope="module")
def image(docker_client, base_image) -> str:
    from swe_srl.sandbox.images.source import ensure_image

    return ensure_image(TASK)


@pytest.fixture
def sandbox(image):
    from swe_srl.sandbox import SandboxConfig, open_sandbox

    with open_sandbox(SandboxConfig(image=image, workdir=TASK.workdir)) as box:
        yield box


def test_expert_replay_submits_the_fix_with_real_observations(sandbox):
    steps = load_script(script_path(TASK.instance_id))
    policy = ScriptedPolicy([s.completion() for s in steps])
    episode = run_episode(policy, sandbox, TASK, AgentConfig(max_steps=20))
    result = episode.result
    assert result.exit_reason == "submitted" and result.infra_error is None
    assert result.num_steps == len(steps) == len(episode.turns) and policy.remaining == 0
    assert [render_xml(t.action) for t in result.trajectory.steps] == [render_xml(s.action) for s in steps]
    assert "-(-total // per_page)" in result.patch and "tests/" not in result.patch
    observations = [s.observation for s in result.trajectory.steps]
    assert "IndexError: page 3 out of range 1..2" in observations[2]  # the reproduction, before the edit
    assert "passed" in observations[-2] and observations[-1] == "submitted"
    # each prompt shows the last K=2 rounds: the 4th prompt holds actions 2 and 3, not 1
    fourth = policy.calls[3][0][1]["content"]
    assert render_xml(steps[2].action) in fourth and render_xml(steps[0].action) not in fourth


def test_a_whole_conversation_episode_continues_each_prompt_from_the_last_turns_ids(sandbox, tiny_model_dir):
    """agent.context=conversation: turn k+1's prompt is turn k's prompt + sampled ids + the
    observation turn, token for token, so the episode packs into one masked sequence."""
    from transformers import AutoTokenizer

    from swe_srl.rl.episode_pack import pack_turns

    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    steps = load_script(script_path(TASK.instance_id))
    policy = ScriptedPolicy([s.completion() for s in steps], tokenizer=tokenizer)
    episode = run_episode(policy, sandbox, TASK, AgentConfig(max_steps=20, context="conversation"))
    assert episode.result.exit_reason == "submitted" and "-(-total // per_page)" in episode.result.patch
    samples = [turn.sample for turn in episode.turns]
    for before, after in zip(samples, samples[1:]):
        seen = before.prompt_ids + before.completion_ids
        assert after.prompt_ids[:len(seen)] == seen
    # the reproduction's output reached the next prompt, inside an observation turn
    third = tokenizer.decode(samples[3].prompt_ids[len(samples[2].prompt_ids):])
    assert "IndexError: page 3 out of range 1..2" in third and third.count("<observation>") == 1
    (row,), stats = pack_turns(samples)
    assert stats.breaks == 0 and row.num_tokens == sum(len(s.completion_ids) for s in samples)
    last = samples[-1]
    assert len(row.prompt_ids) + len(row.completion_ids) == len(last.prompt_ids) + len(last.completion_ids)


def test_a_conversation_that_would_pass_the_context_length_ends_at_the_token_limit(sandbox, tiny_model_dir):
    from transformers import AutoTokenizer

    steps = load_script(script_path(TASK.instance_id))
    policy = ScriptedPolicy([s.completion() for s in steps], tokenizer=AutoTokenizer.from_pretrained(tiny_model_dir))
    config = AgentConfig(max_steps=20, context="conversation", max_context_tokens=1500)
    episode = run_episode(policy, sandbox, TASK, config)
    assert episode.result.exit_reason == "token_limit" and 1 <= len(episode.turns) < len(steps)
    last = episode.turns[-1].sample
    assert len(last.prompt_ids) + 512 <= 1500  # every turn it ran fitted (GREEDY: 512 new tokens)


def test_conversation_context_needs_a_policy_that_samples_from_token_ids(sandbox):
    from swe_srl.errors import ConfigError

    with pytest.raises(ConfigError, match="needs the policy's tokenizer"):
        run_episode(ScriptedPolicy(["x"]), sandbox, TASK, AgentConfig(context="conversation"))
    with pytest.raises(ConfigError, match="agent.context must be window or conversation"):
        AgentConfig(context="everything")


def test_episode_that_never_submits_ends_at_the_step_limit_and_keeps_its_edits(sandbox):
    edit = _say("Append a marker so the repository has a change.", "bash",
                command="echo '# touched' >> pagekit/__init__.py")
    look = _say("Look at the status of the repository.", "bash", command="git status --short")
    policy = ScriptedPolicy([edit, look], cycle=True)
    result = run_episode(policy, sandbox, TASK, AgentConfig(max_steps=3)).result
    assert result.exit_reason == "step_limit" and result.num_steps == 3 and len(policy.calls) == 3
    assert "+# touched" in result.patch  # an unsubmitted episode is graded on what it left
    assert result.trajectory.steps[1].observation.strip() == "M pagekit/__init__.py"


def test_format_errors_get_the_corrective_observation_then_end_the_episode(sandbox):
    broken = [
        "I will just run ls.\n<function=bash>\n<parameter=command>ls</parameter>\n</function>",  # no <think>
        "<think>two at once</think>\n<function=bash>\n<parameter=command>ls</parameter>\n</function>\n"
        "<function=bash>\n<parameter=command>pwd</parameter>\n</function>",
        "<think>unterminated</think>\n<function=bash>\n<parameter=command>ls</parameter>",
    ]
    policy = ScriptedPolicy(broken)
    result = run_episode(policy, sandbox, TASK, AgentConfig(max_steps=10, max_format_errors=2)).result
    assert result.exit_reason == "format_errors" and result.format_errors == 3 and result.num_steps == 3
    assert result.trajectory.steps == ()  # nothing was executed
    second_prompt = policy.calls[1][0][1]["content"]
    assert second_prompt.count(FORMAT_ERROR_OBSERVATION) == 1
    third_prompt = policy.calls[2][0][1]["content"]  # the broken answer is shown as it was written
    assert third_prompt.count(FORMAT_ERROR_OBSERVATION) == 2 and "<parameter=command>pwd</parameter>" in third_prompt


def test_a_format_error_then_a_good_action_continues_the_episode(sandbox):
    policy = ScriptedPolicy(["no think, no action", _say("Now properly: list the package.", "bash",
                                                          command="ls pagekit"),
                             _say("Done looking.", "submit")])
    result = run_episode(policy, sandbox, TASK, AgentConfig(max_steps=10, max_format_errors=1)).result
    assert result.exit_reason == "submitted" and result.format_errors == 1
    assert "pages.py" in result.trajectory.steps[0].observation


def test_container_killed_between_two_turns_is_an_infra_failure(docker_client, image):
    from swe_srl.sandbox import SandboxConfig, open_sandbox
    from swe_srl.sandbox.reaper import LABEL_RUN

    run_id = f"test-kill-{os.getpid()}"
    view = _say("Read the module.", "str_replace_editor", command="view", path="/testbed/pagekit/pages.py")

    def completion(conversation, index):
        if len(policy.calls) == 2:  # after turn 1 ran: kill the container under the agent
            for container in docker_client.containers.list(filters={"label": f"{LABEL_RUN}={run_id}"}):
                container.kill()
        return view

    policy = ScriptedPolicy(completion)
    with open_sandbox(SandboxConfig(image=image, workdir=TASK.workdir, run_id=run_id)) as box:
        result = run_episode(policy, box, TASK, AgentConfig(max_steps=5)).result
    assert result.exit_reason == "infra_error" and result.infra_error
    assert len(result.trajectory.steps) == 1 and result.num_steps == 2


def test_a_sandbox_without_the_tasks_repository_is_an_infrastructure_failure(image):
    """Seen on Ray hosts: a sandbox whose start found no repository gave an empty diff, and the
    policy's work scored 0. Before any turn it is the infrastructure's failure instead."""
    from swe_srl.errors import InfrastructureError
    from swe_srl.sandbox import SandboxConfig, open_sandbox

    policy = ScriptedPolicy([_say("look", "bash", command="ls")])
    with open_sandbox(SandboxConfig(image=image, workdir="/tmp")) as box:  # no repository there
        assert box.base_commit == ""
        with pytest.raises(InfrastructureError, match="no git repository at /testbed"):
            run_episode(policy, box, TASK, AgentConfig(max_steps=2))
