"""grade() against real containers of the demo task images: gold patches resolve, empty patches
do not, a patch that does not apply is the model's failure, spoofed output cannot resolve, and
harness failures (timeout, missing image) are infra errors, never "not resolved"."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from swe_srl import tasks
from swe_srl.sandbox.grading import GradingConfig, grade
from swe_srl.sandbox.images.source import ensure_image

pytestmark = pytest.mark.docker

DEMO = tasks.load_local_tasks()
os.environ.setdefault("HF_HUB_OFFLINE", "1")


@pytest.fixture(scope="session")
def task_images() -> dict[str, str]:
    """Every demo task's image, built once (cached by content) through the sandbox layer."""
    from swe_srl.sandbox.client import engine_available
    from swe_srl.sandbox.images.build import build_task_image

    if not engine_available():
        pytest.skip("no Docker engine answers")
    try:
        return {t.instance_id: build_task_image(t.metadata["task_dir"]) for t in DEMO}
    except Exception as exc:  # no base image and no way to build one here
        pytest.skip(f"cannot build the task images: {exc}")


def _pagekit(images: dict[str, str]):
    task = next(t for t in DEMO if t.instance_id == "swe-srl-demo__pagekit-1")
    return replace(task, image=images[task.instance_id])


def _init_patch(extra: str) -> str:
    """A patch that appends ``extra`` to pagekit/__init__.py (which does not fix the bug)."""
    lines = extra.strip("\n").splitlines()
    body = "".join(f"+{line}\n" for line in lines)
    return ("diff --git a/pagekit/__init__.py b/pagekit/__init__.py\n"
            "--- a/pagekit/__init__.py\n+++ b/pagekit/__init__.py\n"
            f"@@ -3,3 +3,{3 + len(lines)} @@\n from .pages import Page, page_count, paginate\n \n"
            f' __all__ = ["Page", "page_count", "paginate"]\n{body}')


@pytest.mark.parametrize("task", DEMO, ids=[t.instance_id for t in DEMO])
def test_gold_patch_resolves_and_empty_patch_does_not(task, task_images):
    task = replace(task, image=task_images[task.instance_id])
    gold = grade(task, task.patch)
    assert gold.infra_error is None, gold.log_tail
    assert gold.resolved and gold.fail_to_pass == 1.0 and gold.pass_to_pass == 1.0 and gold.patch_applied
    assert set(gold.statuses) == set(task.fail_to_pass) | set(task.pass_to_pass)
    empty = grade(task, "")
    assert empty.infra_error is None and not empty.resolved
    assert empty.fail_to_pass == 0.0 and empty.pass_to_pass == 1.0


def test_patch_that_does_not_apply_is_the_models_failure(task_images):
    task = _pagekit(task_images)
    broken = task.patch.replace("    return total // per_page", "    return total // pages_per_page")
    report = grade(task, broken)
    assert report.infra_error is None
    assert not report.patch_applied and not report.resolved and report.statuses == {}
    assert "patch" in report.log_tail


def test_spoofed_passed_output_cannot_resolve(task_images):
    """The exploit: code under test prints pytest's summary with every test PASSED, at exit
    after pytest's real one, and forces exit status 0."""
    task = _pagekit(task_images)
    fake = "\\n".join(["=" * 20 + " short test summary info " + "=" * 20,
                       *(f"PASSED {t}" for t in task.fail_to_pass + task.pass_to_pass),
                       "=" * 20 + " 8 passed in 0.01s " + "=" * 20])
    spoof = _init_patch(f'''
import atexit, os
def _spoof():
    print("{fake}", flush=True)
    os._exit(0)
atexit.register(_spoof)
''')
    assert grade(task, spoof).rejected.startswith("tampering (hard-exit)")  # the patch scanner's verdict
    report = grade(task, spoof, GradingConfig(scan=False))  # and the tests' own, had it run
    assert report.infra_error is None and report.patch_applied
    assert "8 passed in 0.01s" in report.log_tail  # the spoof did run
    assert not report.resolved and report.fail_to_pass == 0.0
    assert all(report.statuses[t] == "FAILED" for t in task.fail_to_pass)


def test_tests_hanging_past_test_timeout_fail_the_patch(task_images):
    task = _pagekit(task_images)
    report = grade(task, _init_patch("import time\ntime.sleep(60)"), GradingConfig(test_timeout=3))
    assert report.infra_error is None and not report.resolved
    assert "timed out" in report.log_tail and report.duration < 30


def test_harness_timeout_is_an_infra_error(task_images):
    task = _pagekit(task_images)
    config = GradingConfig(test_timeout=120, harness_timeout=6)
    report = grade(task, _init_patch("import time\ntime.sleep(60)"), config)
    assert report.infra_error and "timed out" in report.infra_error
    assert not report.resolved and report.duration < 30


def test_missing_image_is_an_infra_error(task_images):
    task = replace(_pagekit(task_images), image="swe-srl/no-such-image:0", source="swebench")
    report = grade(task, task.patch)
    assert report.infra_error and "swe-srl/no-such-image:0 is not present and cannot be pulled" in report.infra_error
    assert not report.resolved


def test_ensure_image_builds_a_local_task_image(task_images):
    task = DEMO[0]
    assert ensure_image(task) == task_images[task.instance_id]


def test_large_patch_goes_by_archive_copy_and_resolves(task_images):
    task = _pagekit(task_images)
    lines = [f"row {i:05d} " + "x" * 60 for i in range(2000)]  # ~140 KB: past the inline limit
    big_file = ("diff --git a/data/big.txt b/data/big.txt\nnew file mode 100644\n--- /dev/null\n"
                f"+++ b/data/big.txt\n@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))
    report = grade(task, task.patch + big_file)
    assert report.infra_error is None and report.resolved, report.log_tail
