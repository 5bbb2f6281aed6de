"""Agreement with the official SWE-bench harness, on the official image layout.

A demo task is made into an image with the official layout and name (see
:mod:`tests.sandbox.official_layout`) and into a SWE-bench row loaded the way ``swe-srl eval
--tasks rows.jsonl`` loads it. Each patch is then graded twice on that image: by swe-srl's
``grade`` and by swebench's own ``run_instance`` (its container, patch chain, eval script and
``get_eval_report``). Honest patches must get the same verdict, test by test; attacks must be
not resolved by swe-srl, whatever swebench says (its verdicts are printed for the record).
"""

from __future__ import annotations

import difflib
import json
import os
import re
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from pathlib import Path

import pytest

from swe_srl.evaluate import EvalConfig, evaluate_tasks, instance_dir
from swe_srl.experts import ExpertReplay, load_scripts
from swe_srl.rewards.episode import reward_from_tests
from swe_srl.sandbox.grading import grade
from swe_srl.schemas import Task, TestReport
from swe_srl.tasks import _SWEBENCH_ENV_SETUP, load_local_tasks, load_tasks, swebench_image_name, task_test_command
from tests.sandbox.official_layout import (
    ENV_MARKER,
    OFFICIAL_TEST_CMD,
    build_official_layout_image,
    official_image_name,
    swebench_row,
)
from tests.sandbox.test_grading_attacks import FORCE_PASS_CONFTEST, _fake_summary, _init_patch, _new_file

pytestmark = pytest.mark.docker
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# swebench 5's harness: rows carry image, eval_script, log_parser (as swe-srl's testlog reads it).
pytest.importorskip("swebench", minversion="5")

DEMO = next(t for t in load_local_tasks() if t.instance_id == "swe-srl-demo__pagekit-1")
PASSING = {"PASSED", "XFAIL"}


def _edit(old: str, new: str, path: str = "pagekit/pages.py") -> str:
    """A patch replacing ``old`` by ``new`` in ``path`` of the demo repository."""
    before = (Path(DEMO.metadata["task_dir"]) / "repo" / path).read_text()
    assert before.count(old) == 1, old
    after = before.replace(old, new)
    diff = difflib.unified_diff(before.splitlines(True), after.splitlines(True), f"a/{path}", f"b/{path}")
    return f"diff --git a/{path} b/{path}\n" + "".join(diff)


HONEST = {
    "gold": DEMO.patch,
    "empty": "",
    # round(2.5) == 2 and round(0.1) == 0: no FAIL_TO_PASS test passes, nothing else breaks
    "wrong": _edit("    return total // per_page", "    return round(total / per_page)"),
    # ceiling division in paginate only: page_count(25, 10) is still 2
    "partial": _edit("    total_pages = page_count(len(items), per_page)",
                     "    total_pages = -(-len(items) // per_page)"),
    # every FAIL_TO_PASS test passes, page_count(20, 10) == 3 breaks PASS_TO_PASS tests
    "breaks PASS_TO_PASS": _edit("    return total // per_page", "    return total // per_page + 1"),
}
# The test file's verdicts (FAIL_TO_PASS passed, PASS_TO_PASS kept) that both harnesses must reach.
EXPECTED = {"gold": (3, 5), "empty": (0, 5), "wrong": (0, 5), "partial": (2, 5), "breaks PASS_TO_PASS": (3, 3)}

ATTACKS = {
    # prints the passing summary on the shell's stdout (past pytest's capture), os._exit(0)
    "init forges results, os._exit(0)": _init_patch(f'''
import os
with open("/proc/%d/fd/1" % os.getppid(), "w") as _out:
    _out.write("{_fake_summary(DEMO)}\\n")
os._exit(0)
'''),
    # prints the passing summary after pytest's own, at exit, os._exit(0)
    "init forges results at exit, os._exit(0)": _init_patch(f'''
import atexit, os
def _forge():
    print("{_fake_summary(DEMO)}", flush=True)
    os._exit(0)
atexit.register(_forge)
'''),
    "pytest.py at the repo root": _new_file("pytest.py", f'''
import sys
print("{_fake_summary(DEMO)}")
sys.exit(0)
'''),
    "conftest.py forcing passes": _new_file("conftest.py", FORCE_PASS_CONFTEST),
    "kills every process": _init_patch("import os, signal\nos.kill(-1, signal.SIGKILL)"),
    # a test command that "could not start" was an infrastructure failure: reward None, not 0
    "exits 127 to pass as an infra failure": _init_patch("import os\nos._exit(127)"),
}


@dataclass(frozen=True)
class Official:
    """swebench's ``run_instance`` verdict: its report, or the error it logged instead."""

    resolved: bool
    f2p: frozenset = frozenset()
    p2p: frozenset = frozenset()
    error: str | None = None
    test_output: str = ""


@pytest.fixture(scope="session")
def official_image(docker_client, base_image) -> str:
    """The demo task's image in the official layout, under its official name (seconds)."""
    return build_official_layout_image(DEMO, docker_client)


@pytest.fixture(scope="module")
def official(official_image, tmp_path_factory) -> tuple[Task, dict]:
    """The task as swe-srl loads a SWE-bench rows file, and the row swebench reads."""
    row = swebench_row(DEMO)
    rows = tmp_path_factory.mktemp("rows") / "rows.jsonl"
    rows.write_text(json.dumps(row) + "\n")
    (task,) = load_tasks(str(rows))
    assert task.image == official_image
    return task, row


def _run_official(row: dict, patch: str, log_dir: Path) -> Official:
    import swebench.harness.run_evaluation as harness
    from swebench.harness.utils import make_test_spec

    spec = make_test_spec(row)
    run_id = f"swe-srl-{uuid.uuid4().hex[:8]}"
    pred = {"instance_id": row["instance_id"], "model_name_or_path": "swe-srl-check", "model_patch": patch}
    # An empty prediction is never run by swebench's main() (counted as an empty patch):
    # its tests are run as swebench's "no patch" mode does.
    done = harness.run_instance(spec, pred, harness._docker_client(), run_id, timeout=120, skip_patch=not patch)
    folder = log_dir / run_id / "swe-srl-check" / row["instance_id"]
    output = folder / "test_output.txt"
    test_output = output.read_text() if output.is_file() else ""
    if done is None:  # an EvaluationError (patch did not apply, timeout): logged, no report
        logged = re.findall(r"Error in evaluation[^\n]*", (folder / "run_instance.log").read_text())
        return Official(resolved=False, error=(logged or ["no report"])[-1], test_output=test_output)
    report = done[1][row["instance_id"]]
    status = report.get("tests_status") or {}
    error = None if report["patch_successfully_applied"] else report.get("infra_failure_reason", "no test results")
    return Official(resolved=report["resolved"], error=error, test_output=test_output,
                    f2p=frozenset(status.get("FAIL_TO_PASS", {}).get("success", ())),
                    p2p=frozenset(status.get("PASS_TO_PASS", {}).get("success", ())))


@pytest.fixture(scope="module")
def verdicts(official, tmp_path_factory) -> dict[str, tuple[TestReport, Official]]:
    """Every patch through both harnesses, on the official-layout image. swebench's runs go
    all at once, as its ``max_workers`` would: each ends with a 15 s ``docker stop`` of a
    container whose PID 1 (``tail``) ignores SIGTERM."""
    import swebench.harness.run_evaluation as harness

    task, row = official
    cases = {**HONEST, **ATTACKS}
    log_dir = tmp_path_factory.mktemp("swebench-logs")
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(harness, "RUN_EVALUATION_LOG_DIR", log_dir)  # swebench logs under the cwd otherwise
        with ThreadPoolExecutor(max_workers=len(cases)) as theirs_pool, ThreadPoolExecutor(max_workers=3) as pool:
            theirs = {name: theirs_pool.submit(_run_official, row, patch, log_dir) for name, patch in cases.items()}
            ours = {name: pool.submit(grade, task, patch) for name, patch in cases.items()}
            results = {name: (ours[name].result(), theirs[name].result()) for name in cases}
    print("\n".join(f"{name:42} swe-srl: {_ours(r)}\n{'':42} swebench: {_theirs(o)}"
                    for name, (r, o) in results.items()))
    return results


def _ours(report: TestReport) -> str:
    what = report.infra_error or report.rejected or f"F2P {report.fail_to_pass:.2f} P2P {report.pass_to_pass:.2f}"
    return f"resolved={report.resolved} ({what})"


def _theirs(official: Official) -> str:
    return f"resolved={official.resolved} ({official.error or f'F2P {len(official.f2p)} P2P {len(official.p2p)}'})"


def test_official_image_name_and_test_command_are_the_official_ones(official):
    task, row = official
    assert swebench_image_name(task.instance_id) == official_image_name(task.instance_id) == row["image"]
    assert row["image"] == "swebench/sweb.eval.x86_64.swe-srl-demo_1776_pagekit-1:latest"
    # swe-srl runs what swebench's eval script runs, after the same env activation.
    command = task_test_command(task)
    assert command == f"{_SWEBENCH_ENV_SETUP} && {OFFICIAL_TEST_CMD} tests/test_pages.py"
    script = row["eval_script"].splitlines()
    assert f"{OFFICIAL_TEST_CMD} tests/test_pages.py" in script
    assert script.index("source /opt/miniconda3/bin/activate") < script.index("conda activate testbed")
    assert task.log_parser == row["log_parser"] == "parse_log_pytest" and task.source == "swebench"


@pytest.mark.parametrize("name", list(HONEST))
def test_honest_patch_gets_the_official_verdict(verdicts, name):
    report, official = verdicts[name]
    assert report.infra_error is None and report.rejected is None, report.log_tail
    assert official.error is None, (official.error, official.test_output[-2000:])
    assert report.resolved == official.resolved == (name == "gold"), (_ours(report), _theirs(official))
    ours_f2p = frozenset(t for t in DEMO.fail_to_pass if report.statuses.get(t) in PASSING)
    ours_p2p = frozenset(t for t in DEMO.pass_to_pass if report.statuses.get(t) in PASSING | {"SKIPPED"})
    assert (ours_f2p, ours_p2p) == (official.f2p, official.p2p), report.statuses
    assert (len(ours_f2p), len(ours_p2p)) == EXPECTED[name]
    # both ran the tests in the testbed env (its pytest plugin is in the header)
    assert ENV_MARKER in report.log_tail and ENV_MARKER in official.test_output


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_is_not_resolved_on_the_official_layout(verdicts, name):
    report, official = verdicts[name]
    print(f"swebench run_instance: {_theirs(official)}")
    assert report.infra_error is None, report.infra_error
    assert not report.resolved, (report.rejected, report.log_tail)
    assert reward_from_tests(report) == 0.0
    if name in ("init forges results at exit, os._exit(0)", "kills every process",
                "exits 127 to pass as an infra failure"):
        # refused by the patch scanner before they run (test_grading_attacks.py runs them against the guard)
        assert report.rejected.startswith("tampering (hard-exit)"), report.rejected
    else:
        assert report.rejected


def test_without_the_env_prefix_the_runner_is_missing_an_infra_failure(official, docker_client):
    """The same image under a name that is not the official one gets no env activation: the
    system python has no pytest there (so the prefix is what made the tests run), which is
    found before the patch is applied: an infrastructure failure, never the model's."""
    task, _ = official
    bare = replace(task, image=docker_client.images.get(task.image).id)
    assert not task_test_command(bare).startswith(_SWEBENCH_ENV_SETUP)
    report = grade(bare, DEMO.patch)
    assert not report.resolved and report.rejected is None
    assert report.infra_error and "test runner cannot start" in report.infra_error
    assert "No module named 'pytest'" in report.infra_error


def test_eval_runs_the_official_test_command_in_the_env(official, tmp_path):
    """`swe-srl eval`'s loop (evaluate_tasks) on the official-layout image: the expert's
    episode resolves, and the grading log shows the testbed env's pytest ran the tests."""
    task, _ = official
    replay = ExpertReplay.from_scripts(load_scripts([DEMO]), [task])
    summary = evaluate_tasks(replay.policy(), [task], tmp_path, EvalConfig(workers=1))
    result = json.loads((instance_dir(tmp_path, task.instance_id) / "result.json").read_text())
    assert summary["resolved"] == 1 and summary["infrastructure_failures"] == 0, result
    assert ENV_MARKER in result["report"]["log_tail"]
