"""The patch scanner inside grading, against real containers of a demo task: a patch whose code
tampers with the test runner is refused as ``tampering (<rule>)`` with reward 0 (never an
infrastructure failure), counted as such by eval's summary and rlvr's metrics; the gold patch
still resolves; the base texts the scanner compares with are read from the container intact."""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path

import pytest

from swe_srl import tasks
from swe_srl.rewards.episode import reward_from_tests
from swe_srl.sandbox.grading import GradingConfig, grade
from tests.sandbox.test_grading import _init_patch

pytestmark = pytest.mark.docker

DEMO = tasks.load_local_tasks()
os.environ.setdefault("HF_HUB_OFFLINE", "1")

# The 9-line class: library code that marks every test xfail once pytest is loaded.
XFAIL_WHEN_TESTED = '''
import sys as _sys
def _maybe_skip():
    _pt = _sys.modules.get("pytest")
    if _pt is not None:
        _pt.xfail("upstream bug")
'''
# The guard found in memory: walk to the outermost frame and read the launcher's globals.
FIND_THE_GUARD = '''
import inspect as _inspect
_f = _inspect.currentframe()
while _f.f_back is not None:
    _f = _f.f_back
_KEY = _f.f_globals.get("KEY")
'''


@pytest.fixture(scope="module")
def task():
    from swe_srl.sandbox.client import engine_available
    from swe_srl.sandbox.images.build import build_task_image

    if not engine_available():
        pytest.skip("no Docker engine answers")
    found = next(t for t in DEMO if t.instance_id == "swe-srl-demo__pagekit-1")
    return replace(found, image=build_task_image(found.metadata["task_dir"]))


def _pages_patch(task, extra: str) -> str:
    """The gold fix of pagekit/pages.py plus ``extra`` appended to the same file."""
    base = (Path(task.metadata["task_dir"]) / "repo" / "pagekit" / "pages.py").read_text()
    lines = base.splitlines()
    added = extra.strip("\n").splitlines()
    hunk = (f"@@ -{len(lines) - 2},3 +{len(lines) - 2},{3 + len(added)} @@\n"
            + "".join(f" {line}\n" for line in lines[-3:]) + "".join(f"+{line}\n" for line in added))
    return task.patch + "diff --git a/pagekit/pages.py b/pagekit/pages.py\n--- a/pagekit/pages.py\n" \
                        "+++ b/pagekit/pages.py\n" + hunk


def _assert_tampering(report, rule: str, path: str) -> None:
    assert report.infra_error is None, report.infra_error
    assert not report.resolved and not report.patch_applied
    assert report.rejected and report.rejected.startswith(f"tampering ({rule}): {path}:"), report.rejected
    assert reward_from_tests(report) == 0.0 and reward_from_tests(report, "f2p_fraction") == 0.0


def test_library_code_that_xfails_under_pytest_is_refused_with_the_fix_beside_it(task):
    report = grade(task, _pages_patch(task, XFAIL_WHEN_TESTED))
    _assert_tampering(report, "pytest-outcome", "pagekit/pages.py")
    assert report.usage is not None  # it was refused in the grading container, after reading the base


def test_a_frame_walk_to_the_launcher_is_refused(task):
    report = grade(task, task.patch + _init_patch(FIND_THE_GUARD))
    _assert_tampering(report, "frame-walk", "pagekit/__init__.py")


def test_the_gold_patch_still_resolves_and_the_scan_can_be_turned_off(task):
    report = grade(task, task.patch)
    assert report.resolved and report.rejected is None, report.log_tail
    benign = _pages_patch(task, "\n\ndef pages_between(a: int, b: int) -> int:\n    return abs(b - a)\n")
    assert grade(task, benign).resolved
    attack = _pages_patch(task, "import os as _os\n_os.environ.setdefault('PYTEST_ADDOPTS', '-q')\n")
    assert grade(task, attack).rejected.startswith("tampering (pytest-use)")
    assert grade(task, attack, GradingConfig(scan=False)).resolved  # harmless here: only the scan refuses it


def test_base_texts_come_back_intact_from_the_container(task):
    from swe_srl.sandbox import open_sandbox
    from swe_srl.sandbox.config import SandboxConfig
    from swe_srl.sandbox.patch_scan import read_base_texts

    repo = Path(task.metadata["task_dir"]) / "repo"
    with open_sandbox(SandboxConfig(image=task.image, workdir=task.workdir, network=False)) as sandbox:
        sandbox.exec("printf 'x = \"caf\\303\\251\"\\n' > 'odd name.py' && git add -A && "
                     "git -c user.email=a@b -c user.name=a commit -qm odd")
        texts = read_base_texts(sandbox, ["pagekit/pages.py", "pagekit/__init__.py", "odd name.py", "no/such.py"],
                                timeout=60)
    assert texts["pagekit/pages.py"] == (repo / "pagekit" / "pages.py").read_text()
    assert texts["pagekit/__init__.py"] == (repo / "pagekit" / "__init__.py").read_text()
    assert texts["odd name.py"] == 'x = "café"\n' and texts["no/such.py"] is None


def test_tampering_is_counted_in_eval_summaries_and_rlvr_metrics(task):
    from swe_srl.agent import Episode
    from swe_srl.evaluate import InstanceResult, summarize
    from swe_srl.harness import GradedEpisode
    from swe_srl.rl.distributed import Dist
    from swe_srl.rl.sources import EpisodeRollout, episode_totals
    from swe_srl.schemas import EpisodeResult, Trajectory

    report = grade(task, task.patch + _init_patch(FIND_THE_GUARD))
    row = InstanceResult(task.instance_id, repo=task.repo, exit_reason="submitted", report=report.to_dict())
    assert summarize([row], total=1)["rejected"] == {"tampering (frame-walk)": 1}
    trajectory = Trajectory(task_id=task.instance_id, trajectory_id="t.1", problem_statement="", steps=(),
                            source_format="swe-srl")
    result = EpisodeResult(trajectory=trajectory, patch="p", exit_reason="submitted", report=report)
    rollout = EpisodeRollout(GradedEpisode(task, Episode(result), report=report), reward=reward_from_tests(report))
    metrics = episode_totals([rollout]).all_sum(Dist()).metrics()
    assert metrics["episodes/rejected"] == 1 and metrics["episodes/rejected_tampering"] == 1
    assert metrics["reward/tests"] == 0.0 and metrics["episodes/infra_failures"] == 0
