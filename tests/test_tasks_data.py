"""Every bundled demo task is valid WITHOUT docker: its base commit is the image's, its gold
patch and test patch apply (through the grading harness's own apply script, run with the host's
bash and git), FAIL_TO_PASS fails before the gold patch and passes after, PASS_TO_PASS passes
both times, and the test files hold no test outside those two lists."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swe_srl import tasks
from swe_srl.rewards import testlog
from swe_srl.sandbox.grading import apply_script
from swe_srl.sandbox.images.build import BASE_COMMIT_ENV, BASE_COMMIT_SCRIPT, compute_base_commit

DEMO = tasks.load_local_tasks()
REQUIRED = {"instance_id", "repo", "base_commit", "problem_statement", "patch", "test_patch",
            "FAIL_TO_PASS", "PASS_TO_PASS", "test_cmd", "difficulty"}

pytestmark = pytest.mark.skipif(shutil.which("git") is None, reason="git is not installed")


def _checkout(task, tmp_path: Path) -> Path:
    """The repository as the task image has it: repo/ committed once, deterministically."""
    work = tmp_path / "testbed"
    shutil.copytree(Path(task.metadata["task_dir"]) / "repo", work)
    subprocess.run(["sh", "-c", BASE_COMMIT_SCRIPT], cwd=work, env={**os.environ, **BASE_COMMIT_ENV},
                   check=True, capture_output=True)
    return work


def _apply_and_test(task, work: Path, gold: bool) -> tuple[dict, int]:
    model_patch = None
    if gold:
        model_patch = str(work.parent / "model.patch")
        Path(model_patch).write_text(task.patch)
    (work.parent / "test.patch").write_text(task.test_patch)
    script = apply_script(model_patch, str(work.parent / "test.patch"), task.test_files)
    applied = subprocess.run(["bash", "-c", script], cwd=work, capture_output=True, text=True)
    assert applied.returncode == 0, applied.stdout + applied.stderr
    junit = work.parent / "junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", f"--junitxml={junit}", *task.test_files]
    ran = subprocess.run(cmd, cwd=work, capture_output=True, text=True,
                         env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1",
                              "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    statuses = testlog.merge_statuses(testlog.parse_junit_xml(junit.read_text(), task.test_files),
                                      testlog.parse_pytest_log(ran.stdout))
    assert statuses == testlog.parse_pytest_log(ran.stdout)  # both sources agree on real output
    return statuses, ran.returncode


@pytest.mark.parametrize("task", DEMO, ids=[t.instance_id for t in DEMO])
def test_task_json_is_a_complete_swebench_record(task):
    record = json.loads((Path(task.metadata["task_dir"]) / "task.json").read_text())
    assert REQUIRED <= set(record)
    assert record["instance_id"] == Path(task.metadata["task_dir"]).name
    assert record["instance_id"].startswith("swe-srl-demo__")
    assert record["repo"].startswith("swe-srl-demo/")
    assert record["difficulty"] in ("<15 min fix", "15 min - 1 hour", "1-4 hours", ">4 hours")
    assert len(task.problem_statement) > 200
    repo = Path(task.metadata["task_dir"]) / "repo"
    assert not list(repo.rglob("__pycache__")) and not (repo / ".git").exists()


@pytest.mark.parametrize("task", DEMO, ids=[t.instance_id for t in DEMO])
def test_base_commit_is_what_the_image_build_makes(task):
    assert compute_base_commit(Path(task.metadata["task_dir"]) / "repo") == task.base_commit


@pytest.mark.parametrize("task", DEMO, ids=[t.instance_id for t in DEMO])
def test_gold_patch_resolves_and_empty_patch_does_not(task, tmp_path):
    work = _checkout(task, tmp_path / "empty")
    statuses, code = _apply_and_test(task, work, gold=False)
    assert set(statuses) == set(task.fail_to_pass) | set(task.pass_to_pass)
    assert all(statuses[t] == "FAILED" for t in task.fail_to_pass) and code == 1
    assert testlog.score(statuses, task.fail_to_pass, task.pass_to_pass) == (False, 0.0, 1.0)

    work = _checkout(task, tmp_path / "gold")
    statuses, code = _apply_and_test(task, work, gold=True)
    assert code == 0
    assert testlog.score(statuses, task.fail_to_pass, task.pass_to_pass) == (True, 1.0, 1.0)


def test_demo_tasks_vary():
    assert len(DEMO) >= 8
    assert len({t.repo for t in DEMO}) == len(DEMO)
    assert {t.difficulty for t in DEMO} == {"<15 min fix", "15 min - 1 hour"}
    multi_file = [t for t in DEMO if t.patch.count("diff --git") > 1]
    assert multi_file, "at least one fix spans several files"
