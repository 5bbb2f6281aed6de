"""`evaluate_tasks` and `swe-srl eval` end to end: expert replays resolve every demo task in
Docker, wrong solutions resolve none, infrastructure failures (container killed, image
missing, harness timeouts) are counted apart from the resolve rate, an interrupted run
resumes without redoing finished instances, and the CLI reports bad input in one line."""

from __future__ import annotations

import dataclasses
import json
import os
from pathlib import Path

import pytest

from swe_srl.actions import make_action, render_xml
from swe_srl.cli import main
from swe_srl.evaluate import EvalConfig, InstanceResult, evaluate_tasks, instance_dir
from swe_srl.experts import DEFAULT_OUTPUT, ExpertReplay, load_scripts
from swe_srl.harness import HarnessConfig
from swe_srl.prompts import format_completion
from swe_srl.sandbox.grading import GradingConfig
from swe_srl.schemas import Trajectory
from swe_srl.tasks import load_tasks

DEMO = load_tasks("demo")
BY_ID = {t.instance_id: t for t in DEMO}
SCRIPTS = load_scripts(DEMO)
docker = pytest.mark.docker


def _replay(tasks) -> ExpertReplay:
    return ExpertReplay.from_scripts({t.instance_id: SCRIPTS[t.instance_id] for t in tasks}, tasks)


def _say(thought: str, tool: str, **arguments) -> str:
    return format_completion(thought, render_xml(make_action(tool, arguments)))


@pytest.fixture(scope="module")
def expert_eval(docker_client, base_image, tmp_path_factory):
    """Every demo task's expert script replayed through evaluate_tasks (2 workers)."""
    out = tmp_path_factory.mktemp("eval-experts")
    replay = _replay(DEMO)
    summary = evaluate_tasks(replay.policy(), DEMO, out, EvalConfig(workers=2, model_name="expert-script"),
                             thread_safe_policy=True)
    return out, summary, replay


def _unresolved(out: Path) -> dict:
    """What went wrong per unresolved instance, for the assertion message."""
    records = (InstanceResult.from_dict(json.loads(p.read_text())) for p in out.glob("instances/*/result.json"))
    return {r.instance_id: {"infra": r.infra_error, "exit": r.exit_reason,
                            "log": ((r.report or {}).get("log_tail") or "")[-800:]}
            for r in records if not r.resolved}


@docker
def test_expert_replay_resolves_every_demo_task(expert_eval):
    out, summary, replay = expert_eval
    assert summary["resolved"] == len(DEMO), _unresolved(out)
    assert summary["resolved_rate"] == 1.0 and summary["resolved"] == summary["graded"] == len(DEMO)
    assert summary["infrastructure_failures"] == 0 and summary["exit_reasons"] == {"submitted": len(DEMO)}
    assert all(repo["rate"] == 1.0 for repo in summary["per_repo"].values())
    assert all(replay.remaining(t.instance_id) == 0 for t in DEMO)
    assert summary["mean_steps"] == pytest.approx(sum(len(s) for s in SCRIPTS.values()) / len(DEMO), abs=0.01)
    times = summary["time_seconds"]
    assert times["sandbox"] > 0 and times["grading"] > 0 and times["wall"] >= times["grading"]
    assert json.loads((out / "summary.json").read_text()) == summary


@docker
def test_predictions_and_instance_files_follow_swe_bench(expert_eval):
    out, _, _ = expert_eval
    rows = [json.loads(line) for line in (out / "predictions.jsonl").read_text().splitlines()]
    assert sorted(r["instance_id"] for r in rows) == sorted(BY_ID)
    for row in rows:
        assert set(row) == {"instance_id", "model_name_or_path", "model_patch"}
        assert row["model_name_or_path"] == "expert-script" and row["model_patch"].startswith("diff --git")
        folder = instance_dir(out, row["instance_id"])
        result = json.loads((folder / "result.json").read_text())
        assert result["resolved"] and result["patch"] == row["model_patch"]
        assert result["report"]["fail_to_pass"] == 1.0 and result["report"]["pass_to_pass"] == 1.0
        trajectory = Trajectory.from_dict(json.loads((folder / "trajectory.json").read_text()))
        assert trajectory.final_patch == row["model_patch"] and trajectory.exit_status == "submitted"


def _wrong_script(task) -> list[str]:
    package = task.repo.split("/")[-1]
    if task.instance_id == "swe-srl-demo__pagekit-1":  # plausible, but breaks exact multiples
        edit = _say("Add one page for the remainder.", "str_replace_editor", command="str_replace",
                    path="/testbed/pagekit/pages.py", old_str="    return total // per_page",
                    new_str="    return total // per_page + 1")
    else:  # a patch that applies and changes nothing that matters
        edit = _say("Leave a note.", "bash", command=f"echo '# looked into the issue' >> {package}/__init__.py")
    return [edit, _say("Done.", "submit")]


@docker
def test_wrong_solutions_resolve_nothing(docker_client, base_image, tmp_path):
    tasks = [BY_ID[i] for i in ("swe-srl-demo__pagekit-1", "swe-srl-demo__lrucache-1", "swe-srl-demo__semverlite-1")]
    replay = ExpertReplay({t.instance_id: _wrong_script(t) for t in tasks}, tasks)
    summary = evaluate_tasks(replay.policy(), tasks, tmp_path, EvalConfig(workers=2), thread_safe_policy=True)
    assert summary["graded"] == 3 and summary["resolved"] == 0 and summary["resolved_rate"] == 0.0
    assert summary["infrastructure_failures"] == 0
    for task in tasks:
        report = json.loads((instance_dir(tmp_path, task.instance_id) / "result.json").read_text())["report"]
        assert report["patch_applied"] and not report["resolved"] and report["infra_error"] is None
        assert report["fail_to_pass"] < 1.0 or report["pass_to_pass"] < 1.0
    pagekit = json.loads((instance_dir(tmp_path, "swe-srl-demo__pagekit-1") / "result.json").read_text())["report"]
    assert pagekit["fail_to_pass"] == 1.0 and pagekit["pass_to_pass"] < 1.0  # page_count(20, 10) == 3 now


@docker
def test_killed_container_and_missing_image_are_infra_failures_not_misses(docker_client, base_image, tmp_path):
    from swe_srl.sandbox.images.source import ensure_image
    from swe_srl.sandbox.reaper import LABEL_PID

    killed, fine = BY_ID["swe-srl-demo__pagekit-1"], BY_ID["swe-srl-demo__durations-1"]
    missing = dataclasses.replace(BY_ID["swe-srl-demo__datekit-1"], image="swe-srl/no-such-image:missing",
                                  source="swebench")
    killed_image = ensure_image(killed)
    replay = _replay([killed, fine, missing])

    def completion(conversation, index):
        if replay.task_of(conversation) == killed.instance_id and replay.served[killed.instance_id] == 2:
            # two turns ran: kill the agent's container (via the engine) before the third
            for container in docker_client.containers.list(
                    filters={"label": f"{LABEL_PID}={os.getpid()}", "ancestor": killed_image}):
                container.kill()
        return replay(conversation, index)

    from swe_srl.policy.scripted import ScriptedPolicy

    summary = evaluate_tasks(ScriptedPolicy(completion), [killed, fine, missing], tmp_path, EvalConfig(workers=1))
    assert summary["infrastructure_failures"] == 2
    assert set(summary["infrastructure_errors"]) == {killed.instance_id, missing.instance_id}
    assert "no-such-image" in summary["infrastructure_errors"][missing.instance_id]
    assert summary["graded"] == 1 and summary["resolved"] == 1 and summary["resolved_rate"] == 1.0
    assert summary["exit_reasons"]["infra_error"] == 2
    predicted = [json.loads(line)["instance_id"] for line in (tmp_path / "predictions.jsonl").read_text().splitlines()]
    assert predicted == [fine.instance_id]


@docker
def test_agent_that_kills_its_container_is_a_miss_not_an_infra_failure(docker_client, base_image, tmp_path):
    """`kill -9 -1` takes the agent's container down: the model's result (resolved False,
    reward 0, counted in the resolve rate's denominator), never a masked infra failure. An
    oversized patch (refused, never stored whole) and writing past the disk budget are misses too."""
    crash, huge, full, fine = (BY_ID[i] for i in ("swe-srl-demo__pagekit-1", "swe-srl-demo__lrucache-1",
                                                  "swe-srl-demo__semverlite-1", "swe-srl-demo__durations-1"))
    scripts = {crash.instance_id: [_say("Clean up.", "bash", command="kill -9 -1"), _say("Done.", "submit")],
               huge.instance_id: [_say("Make data.", "bash", command="head -c 3000000 /dev/zero | tr '\\0' x "
                                       "| fold -w 100 > blob.txt && wc -c blob.txt"), _say("Done.", "submit")],
               full.instance_id: [_say("Cache.", "bash", command="head -c 80M /dev/zero > /tmp/cache"),
                                  _say("Done.", "submit")],
               fine.instance_id: [s.completion() for s in SCRIPTS[fine.instance_id]]}
    order = [crash, huge, full, fine]
    config = EvalConfig(workers=1, harness=HarnessConfig(disk_limit="50m"))
    summary = evaluate_tasks(ExpertReplay(scripts, order).policy(), order, tmp_path, config)
    assert summary["infrastructure_failures"] == 0, summary["infrastructure_errors"]
    assert summary["graded"] == 4 and summary["resolved"] == 1 and summary["resolved_rate"] == 0.25
    assert summary["exit_reasons"]["container_died"] == 1 and summary["exit_reasons"]["disk_limit"] == 1
    assert summary["rejected"] == {"the agent's commands killed its container": 1, "patch too large": 1,
                                   "the agent's commands wrote past the disk budget": 1}
    crashed = json.loads((instance_dir(tmp_path, crash.instance_id) / "result.json").read_text())
    assert crashed["infra_error"] is None and not crashed["resolved"] and crashed["exit_reason"] == "container_died"
    big = json.loads((instance_dir(tmp_path, huge.instance_id) / "result.json").read_text())
    assert big["report"]["rejected"].startswith("patch too large") and len(big["patch"]) < 10_000
    stored = (instance_dir(tmp_path, huge.instance_id) / "trajectory.json").stat().st_size
    assert stored < 100_000 and (tmp_path / "predictions.jsonl").stat().st_size < 100_000


@docker
@pytest.mark.parametrize("grading, slow_tests", [
    (GradingConfig(harness_timeout=0.001), False),
    (GradingConfig(test_timeout=1.0, on_test_timeout="infra"), True),
], ids=["harness_timeout", "test_timeout_infra"])
def test_harness_timeouts_are_infra_failures(docker_client, base_image, tmp_path, grading, slow_tests):
    task = BY_ID["swe-srl-demo__lrucache-1"]
    if slow_tests:
        task = dataclasses.replace(task, test_cmd="sleep 30; " + task.test_cmd)
    summary = evaluate_tasks(_replay([task]).policy(), [task], tmp_path,
                             EvalConfig(harness=HarnessConfig(grading=grading)))
    assert summary["infrastructure_failures"] == 1 and summary["graded"] == 0 and summary["resolved_rate"] is None
    assert "timed out" in summary["infrastructure_errors"][task.instance_id]
    result = json.loads((instance_dir(tmp_path, task.instance_id) / "result.json").read_text())
    assert result["exit_reason"] == "submitted" and result["patch"]  # the episode itself was fine


@docker
def test_interrupted_eval_resumes_without_redoing_finished_instances(docker_client, base_image, tmp_path):
    tasks = [BY_ID["swe-srl-demo__mdtable-1"], BY_ID["swe-srl-demo__unitconv-1"]]

    def stop(record):
        raise KeyboardInterrupt

    first = _replay(tasks)
    with pytest.raises(KeyboardInterrupt):
        evaluate_tasks(first.policy(), tasks, tmp_path, EvalConfig(workers=1), on_result=stop)
    done = [t for t in tasks if (instance_dir(tmp_path, t.instance_id) / "result.json").is_file()]
    assert len(done) == 1, "the queued instance must not run after the interrupt"
    left = next(t for t in tasks if t not in done)
    second = _replay(tasks)
    summary = evaluate_tasks(second.policy(), tasks, tmp_path, EvalConfig(workers=1))
    assert second.served[done[0].instance_id] == 0 and second.remaining(left.instance_id) == 0
    assert summary["resumed_from_previous_run"] == 1 and summary["finished"] == 2 and summary["resolved"] == 2


def test_summary_of_nothing_graded_has_no_resolve_rate():
    from swe_srl.evaluate import summarize

    lost = InstanceResult("a", infra_error="image missing")
    assert summarize([], total=0)["resolved_rate"] is None
    assert summarize([lost], total=1)["resolved_rate"] is None and summarize([lost], total=1)["graded"] == 0
    graded = summarize([lost, InstanceResult("b", exit_reason="submitted")], total=2)
    assert graded["resolved_rate"] == 0.0 and graded["graded"] == 1  # graded and unresolved: a real 0


# ---------------------------------------------------------------- CLI


def _cli(args, capsys) -> tuple[int, str, str]:
    try:
        main(["eval", *map(str, args)])
        code = 0
    except SystemExit as exc:
        code = exc.code or 0
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_eval_steps_mode_scores_the_tiny_model_on_expert_step_targets(tiny_model_dir, tmp_path, capsys):
    from swe_srl.dataset import DatasetConfig, build_dataset

    build_dataset([DEFAULT_OUTPUT], tmp_path / "ds", DatasetConfig(val_fraction=0.25), output="jsonl")
    code, out, err = _cli(["--mode", "steps", "--model", tiny_model_dir, "--data", tmp_path / "ds" / "val.jsonl",
                           "--limit", 3, "--max-new-tokens", 16, "-o", tmp_path / "eval",
                           "--set", "reward.compare=call"], capsys)
    assert code == 0, err
    scores = json.loads((tmp_path / "eval" / "steps_summary.json").read_text())
    assert scores["step_targets"] == 3 and "3 step targets" in out
    assert scores["reward"] == {"similarity": "cydifflib", "compare": "call", "tool_mismatch": "text"}
    assert -1.0 <= scores["mean_reward"] <= 1.0 and 0.0 <= scores["mean_similarity"] <= 1.0
    for key in ("format_error_rate", "exact_match_rate"):
        assert 0.0 <= scores[key] <= 1.0
    assert sum(tool["n"] for tool in scores["per_tool"].values()) == 3
    answers = [json.loads(line) for line in (tmp_path / "eval" / "steps_answers.jsonl").read_text().splitlines()]
    assert len(answers) == 3 and all({"id", "completion", "target", "reward"} <= set(a) for a in answers)
    assert scores["distinct_answers"] == len({a["completion"].rsplit("</think>", 1)[-1].strip() for a in answers})
    assert scores["generation"]["temperature"] == 0.0  # --max-new-tokens left decoding greedy
    assert scores["generation"]["max_new_tokens"] == 16


@pytest.mark.parametrize("args, needle", [
    (["--subset", "no-such-subset"], "unknown subset 'no-such-subset'"),
    (["--filter", "demo(["], "not a valid regex"),
    (["--model", "{tmp}/no-model"], "neither a model directory nor a training run"),
    (["--mode", "steps", "--model", "{tmp}", "--data", "{tmp}/none.jsonl"], "none.jsonl"),
    (["--mode", "steps", "--set", "reward.compare=foo"], "reward.compare: 'foo' is not one of"),
], ids=["unknown_subset", "bad_regex", "missing_model", "missing_step_targets", "bad_reward_compare"])
def test_eval_cli_bad_input_is_one_red_line_exit_2(tmp_path, capsys, monkeypatch, args, needle):
    monkeypatch.chdir(tmp_path)  # a default model must not be created on the way to the error
    code, _, err = _cli([a.replace("{tmp}", str(tmp_path)) for a in args], capsys)
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1 and lines[0].startswith("error: ") and needle in lines[0], err
    assert "Traceback" not in err
    assert not (tmp_path / "runs" / "tiny-model").exists()


def test_eval_cli_prints_the_stable_resolve_rate_beside_the_raw_one(tiny_model_dir, tmp_path, capsys):
    """Both instances finished earlier (nothing runs); the calibration calls one stable, one broken."""
    from swe_srl.calibration import Calibration, TaskCalibration
    from swe_srl.schemas import TestReport

    stable, broken = DEMO[:2]
    ok, miss = TestReport(instance_id="x", resolved=True), TestReport(instance_id="x")
    calibration = Calibration().with_entry(TaskCalibration.of(stable, 1, [ok], [miss]))
    calibration.with_entry(TaskCalibration.of(broken, 1, [miss], [miss])).save(tmp_path / "calib.json")
    for task in (stable, broken):
        folder = instance_dir(tmp_path / "eval", task.instance_id)
        folder.mkdir(parents=True)
        result = InstanceResult(task.instance_id, repo=task.repo, resolved=task is broken, exit_reason="submitted")
        (folder / "result.json").write_text(json.dumps(result.to_dict()))
    code, out, err = _cli(["--ids", f"{stable.instance_id},{broken.instance_id}", "--model", tiny_model_dir,
                           "-o", tmp_path / "eval", "--calibration", tmp_path / "calib.json"], capsys)
    assert code == 0, err
    assert f"stable tasks (1 of 2 by {tmp_path / 'calib.json'}): resolved 0/1 (0.0%)" in " ".join(out.split())
    assert "resolved 1/2 (50.0%)" in out


@docker
def test_eval_cli_exits_1_with_a_null_rate_when_nothing_was_graded(docker_client, base_image, tiny_model_dir,
                                                                     tmp_path, capsys):
    """Every instance an infrastructure failure (its image cannot exist): nothing was graded, so
    there is no resolve rate (null, not 0.0) and the exit code says so (1, not 0)."""
    task = BY_ID["swe-srl-demo__datekit-1"]
    row = {"instance_id": "acme__missing-1", "repo": "acme/missing", "base_commit": "0" * 40,
           "problem_statement": task.problem_statement, "patch": task.patch, "test_patch": task.test_patch,
           "FAIL_TO_PASS": list(task.fail_to_pass), "PASS_TO_PASS": list(task.pass_to_pass),
           "image": "swe-srl/no-such-image:missing", "test_cmd": task.test_cmd}
    (tmp_path / "tasks.jsonl").write_text(json.dumps(row) + "\n")
    code, out, err = _cli(["--tasks", tmp_path / "tasks.jsonl", "--model", tiny_model_dir, "--max-steps", 1,
                           "--max-new-tokens", 8, "-o", tmp_path / "eval"], capsys)
    summary = json.loads((tmp_path / "eval" / "summary.json").read_text())
    assert summary["graded"] == 0 and summary["infrastructure_failures"] == 1 and summary["resolved_rate"] is None
    assert code == 1, (out, err)
    lines = [line for line in err.strip().splitlines() if line.startswith("error: ")]
    assert lines == ["error: nothing was graded: 1 of 1 instance(s) ended in an infrastructure failure; "
                     "fix the engine and rerun to retry them"], err
    assert "Traceback" not in err and "resolved 0/0 (-)" in out
