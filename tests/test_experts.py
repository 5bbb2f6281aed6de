"""Expert scripts of the demo tasks, the per-task replay policy, and the committed recording
(checked against the scripts, and cut into step targets by build-dataset). No Docker here:
tests/test_evaluate.py replays the scripts in containers."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from swe_srl.actions import render_xml
from swe_srl.cli import main
from swe_srl.dataset import DatasetConfig, build_dataset, load_step_targets
from swe_srl.errors import ConfigError, InputError
from swe_srl.experts import DEFAULT_OUTPUT, SCRIPTS_DIR, ExpertReplay, load_script, load_scripts, script_path
from swe_srl.policy.base import GenerationConfig
from swe_srl.prompts import build_messages
from swe_srl.rewards.similarity import parse_completion
from swe_srl.schemas import Trajectory
from swe_srl.tasks import load_tasks

DEMO_TASKS = load_tasks("demo")
EDITS = ("str_replace", "insert", "create")


def _recorded() -> dict[str, Trajectory]:
    lines = DEFAULT_OUTPUT.read_text(encoding="utf-8").splitlines()
    return {t.task_id: t for t in (Trajectory.from_dict(json.loads(line)) for line in lines if line.strip())}


@pytest.mark.parametrize("task", DEMO_TASKS, ids=lambda t: t.instance_id)
def test_every_demo_task_has_a_realistic_expert_session(task):
    steps = load_script(script_path(task.instance_id))
    assert 5 <= len(steps) <= 10
    tools = [(s.action.tool, s.action.arguments.get("command", "")) for s in steps]
    # explore first, then edit the source (never the tests), verify with the tests, submit last
    assert tools[0][1] == "view" or tools[0][0] == "bash"
    edits = [s.action for s in steps
             if s.action.tool == "str_replace_editor" and s.action.arguments["command"] in EDITS]
    assert edits and all(a.arguments["path"].startswith("/testbed/") for a in edits)
    assert not any("/tests/" in a.arguments["path"] for a in edits)
    first_edit = next(i for i, s in enumerate(steps) if s.action in edits)
    ran_tests = [i for i, s in enumerate(steps)
                 if s.action.tool == "bash" and "pytest" in s.action.arguments["command"]]
    assert ran_tests and ran_tests[-1] > first_edit
    assert steps[-1].action.tool == "submit"
    assert all(len(s.thought.split()) >= 12 for s in steps), "thoughts are reasoning prose, not labels"


@pytest.mark.parametrize("task", DEMO_TASKS, ids=lambda t: t.instance_id)
def test_script_completions_parse_back_to_their_actions_with_the_strict_reward_parser(task):
    for step in load_script(script_path(task.instance_id)):
        parsed = parse_completion(step.completion(), syntax="xml", allow_prose=False)
        assert parsed is not None
        assert parsed.action_text == render_xml(step.action)
        assert parsed.thought.strip() == step.thought


def test_committed_recording_matches_the_scripts_and_is_all_resolved():
    recorded = _recorded()
    assert sorted(recorded) == sorted(t.instance_id for t in DEMO_TASKS)
    for task in DEMO_TASKS:
        traj = recorded[task.instance_id]
        steps = load_script(script_path(task.instance_id))
        assert traj.resolved is True and traj.exit_status == "submitted" and traj.source_format == "swe-srl"
        assert traj.problem_statement == task.problem_statement
        # a script edited after recording would leave a stale file: re-run `swe-srl record-experts`
        assert [render_xml(s.action) for s in traj.steps] == [render_xml(s.action) for s in steps]
        assert [s.thought for s in traj.steps] == [s.thought for s in steps]
        assert all(s.observation.strip() for s in traj.steps)
        test_runs = [s for s in traj.steps if s.action.tool == "bash" and "pytest" in s.action.arguments["command"]]
        assert test_runs and all(s.exit_code == 0 and " passed" in s.observation for s in test_runs)
        touched = [line.split(" b/")[-1] for line in traj.final_patch.splitlines() if line.startswith("diff --git")]
        assert touched and not any(path.startswith("tests/") for path in touched)
        assert traj.metadata["grading"]["fail_to_pass"] == 1.0


def test_recording_becomes_step_targets_for_every_demo_task(tmp_path):
    result = build_dataset([DEFAULT_OUTPUT], tmp_path, DatasetConfig(), output="jsonl")
    targets = load_step_targets(tmp_path / "train.jsonl") + load_step_targets(tmp_path / "val.jsonl")
    assert {t.task_id for t in targets} == {t.instance_id for t in DEMO_TASKS}
    assert len(targets) == sum(len(load_script(script_path(t.instance_id))) for t in DEMO_TASKS)
    assert result is not None
    first = next(t for t in targets if t.step_index == 0)
    assert first.context == () and first.expert_thought
    later = next(t for t in targets if t.step_index == 3)
    assert len(later.context) == 2 and later.context[-1].observation


# ---------------------------------------------------------------- script validation


def _write(tmp_path: Path, steps) -> Path:
    path = tmp_path / "x.json"
    path.write_text(json.dumps(steps) if not isinstance(steps, str) else steps)
    return path


VIEW = {"thought": "look",
        "action": {"tool": "str_replace_editor", "arguments": {"command": "view", "path": "/testbed"}}}
SUBMIT = {"thought": "done", "action": {"tool": "submit"}}


@pytest.mark.parametrize("steps, needle", [
    ("[1, 2", "not JSON"),
    ([], "non-empty JSON list"),
    ([VIEW], "must be a submit"),
    ([SUBMIT, VIEW, SUBMIT], "only the last"),
    ([{"thought": " ", "action": VIEW["action"]}, SUBMIT], "'thought' must be non-empty"),
    ([{"thought": "x", "action": {"tool": "python", "arguments": {}}}, SUBMIT], "unknown tool 'python'"),
    ([{"thought": "x", "action": {"tool": "bash", "arguments": {"command": ""}}}, SUBMIT], "non-empty 'command'"),
    ([{"thought": "x", "action": {"tool": "str_replace_editor", "arguments": {"command": "view", "path": "a.py"}}},
      SUBMIT], "absolute 'path'"),
    ([{"thought": "x", "action": {"tool": "str_replace_editor", "arguments": {"command": "delete", "path": "/a"}}},
      SUBMIT], "must be one of"),
])
def test_broken_scripts_are_rejected_with_the_file_and_step(tmp_path, steps, needle):
    with pytest.raises(InputError, match=needle) as exc:
        load_script(_write(tmp_path, steps))
    assert "\n" not in str(exc.value)


def test_a_task_without_a_script_is_named(tmp_path):
    with pytest.raises(InputError, match="no expert script for 8 task"):
        load_scripts(DEMO_TASKS, tmp_path)


# ---------------------------------------------------------------- replay policy


def test_replay_serves_each_task_its_own_script_in_order_when_interleaved():
    a, b = DEMO_TASKS[0], DEMO_TASKS[1]
    replay = ExpertReplay({a.instance_id: ["a0", "a1"], b.instance_id: ["b0"]}, DEMO_TASKS)
    policy = replay.policy()
    conv_a = build_messages(a.problem_statement)
    conv_b = build_messages(b.problem_statement, [("ls", "x")])
    out = policy.generate([conv_a, conv_b, conv_a], GenerationConfig())
    assert [group[0].text for group in out] == ["a0", "b0", "a1"]
    assert replay.remaining(a.instance_id) == 0 and replay.served == {a.instance_id: 2, b.instance_id: 1}
    with pytest.raises(InputError, match="asked for turn 2 but the script has 1"):
        policy.generate([conv_b], GenerationConfig())
    with pytest.raises(InputError, match="matches no scripted task"):
        policy.generate([build_messages("another issue")], GenerationConfig())


def test_replay_refuses_tasks_it_cannot_tell_apart():
    import dataclasses

    twin = dataclasses.replace(DEMO_TASKS[0], instance_id="twin")
    with pytest.raises(ConfigError, match="share a problem statement"):
        ExpertReplay({DEMO_TASKS[0].instance_id: ["x"], "twin": ["y"]}, [DEMO_TASKS[0], twin])


# ---------------------------------------------------------------- CLI errors (no docker needed)


def _cli(args, capsys):
    with pytest.raises(SystemExit) as exc:
        main(["record-experts", *map(str, args)])
    return exc.value.code, capsys.readouterr().err


@pytest.mark.parametrize("args, needle", [
    (["--ids", "swe-srl-demo__nope-1"], "not in the source"),
    (["--scripts", "{tmp}"], "no expert script for 8 task"),
    (["--tasks", "{tmp}/missing"], "neither"),
    (["-j", "0"], "workers must be >= 1"),
])
def test_cli_bad_input_is_one_line_and_exit_2(tmp_path, capsys, args, needle):
    code, err = _cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err
    assert SCRIPTS_DIR.is_dir()
