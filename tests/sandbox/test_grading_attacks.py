"""A policy treated as an adversary: patches that try to make grading say "resolved" without
fixing anything, against real containers of a demo task. Each attack must end not resolved,
reward 0 (never an infrastructure failure), with the reason recorded in ``report.rejected``."""

from __future__ import annotations

import os
from dataclasses import replace

import pytest

from swe_srl import tasks
from swe_srl.rewards.episode import reward_from_tests
from swe_srl.sandbox.grading import KILLED_CONTAINER, GradingConfig
from swe_srl.sandbox.grading import grade as _grade
from tests.sandbox.test_grading import _init_patch

pytestmark = pytest.mark.docker

DEMO = tasks.load_local_tasks()


def grade(task, patch, config=None):
    """The runtime defences alone: the patch scanner (tests/sandbox/test_grading_scanner.py)
    would refuse most of these attacks before they run."""
    return _grade(task, patch, replace(config or GradingConfig(), scan=False))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
# Where grading also scans the patch statically, the runtime defences are shown with it off.
_NO_SCAN = {"scan": False} if "scan" in GradingConfig.__dataclass_fields__ else {}


@pytest.fixture(scope="module")
def task():
    from swe_srl.sandbox.client import engine_available
    from swe_srl.sandbox.images.build import build_task_image

    if not engine_available():
        pytest.skip("no Docker engine answers")
    found = next(t for t in DEMO if t.instance_id == "swe-srl-demo__pagekit-1")
    return replace(found, image=build_task_image(found.metadata["task_dir"]))


def _new_file(path: str, text: str) -> str:
    lines = text.strip("\n").splitlines()
    return (f"diff --git a/{path} b/{path}\nnew file mode 100644\n--- /dev/null\n+++ b/{path}\n"
            f"@@ -0,0 +1,{len(lines)} @@\n" + "".join(f"+{line}\n" for line in lines))


def _fake_summary(task) -> str:
    tests = task.fail_to_pass + task.pass_to_pass
    return "\\n".join(["=" * 20 + " short test summary info " + "=" * 20, *(f"PASSED {t}" for t in tests),
                       "=" * 20 + f" {len(tests)} passed in 0.01s " + "=" * 20])


# A conftest.py hook that turns every test report into a pass.
FORCE_PASS_CONFTEST = '''
import pytest
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    report.outcome = "passed"
    report.longrepr = None
'''


def _assert_rejected(report, *words: str) -> None:
    assert report.infra_error is None, report.infra_error
    assert not report.resolved, report.log_tail
    assert report.rejected and all(w in report.rejected for w in words), report.rejected
    assert reward_from_tests(report) == 0.0 and reward_from_tests(report, "fraction") == 0.0


def test_attack_init_forges_junit_and_exits(task):
    """Attack 1: at import, read the --junitxml path and the test files from sys.argv, write a
    junit file where every test passes, print pytest's summary, os._exit(0)."""
    tests = task.fail_to_pass + task.pass_to_pass
    cases = "".join(f'<testcase classname="{t.split("::")[0][:-3].replace("/", ".")}" name="{t.split("::")[1]}"/>'
                    for t in tests)
    attack = _init_patch(f'''
import os, sys
_junit = [a.split("=", 1)[1] for a in sys.argv if a.startswith("--junitxml=")]
for _path in _junit:
    with open(_path, "w") as _fh:
        _fh.write('<testsuites><testsuite name="pytest" tests="{len(tests)}">{cases}</testsuite></testsuites>')
print("{_fake_summary(task)}", flush=True)
os._exit(0)
''')
    report = grade(task, attack)
    _assert_rejected(report, "ended before the runner reported")
    assert report.patch_applied


def test_attack_pytest_module_at_repo_root(task):
    """Attack 2: a pytest.py at the repository root: `python -m pytest` would import it
    instead of pytest; it prints a passing summary and exits 0."""
    attack = _new_file("pytest.py", f'''
import sys
print("{_fake_summary(task)}")
sys.exit(0)
''')
    _assert_rejected(grade(task, attack), "test runner replaced", "pytest.py")


def test_attack_runner_shadow_is_rejected_in_the_container_not_only_by_name(task):
    """A new `_pytest` package under a source folder (the base commit has none)."""
    _assert_rejected(grade(task, _new_file("src/_pytest/__init__.py", "x = 1")), "test runner replaced",
                     "src/_pytest")


def test_attack_conftest_forces_every_report_to_pass(task):
    """Attack 3: a conftest.py hook that turns every report into a pass."""
    attack = _new_file("conftest.py", FORCE_PASS_CONFTEST)
    _assert_rejected(grade(task, attack), "tampered: conftest.py")


def test_attack_plugin_registered_by_imported_code(task):
    """Attack 3, without a conftest: the package registers the same hook at import time."""
    attack = _init_patch('''
import gc
import pytest
class _Pass:
    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item, call):
        outcome = yield
        outcome.get_result().outcome = "passed"
for _obj in gc.get_objects():
    if type(_obj).__name__ == "PytestPluginManager":
        _obj.register(_Pass(), "swe-srl-attack")
        break
''')
    # gc introspection is denied to the code under test before the hook is ever registered.
    _assert_rejected(grade(task, attack, GradingConfig(**_NO_SCAN)), "tampering (runtime: gc.get_objects",
                     "pagekit/__init__.py")
    # Without that denial (found another way) the registered hook itself is caught.
    via_config = attack.replace("for _obj in gc.get_objects():", "for _obj in [getattr(f, 'config', None) and "
                                "f.config.pluginmanager for f in __import__('sys').meta_path]:")
    _assert_rejected(grade(task, via_config, GradingConfig(**_NO_SCAN)), "test runner modified in-process",
                     "pagekit/__init__.py")


def test_attack_monkeypatched_report_class(task):
    """Attack 3, by monkeypatching pytest's report class so every outcome reads 'passed'."""
    attack = _init_patch('''
import _pytest.reports
_init = _pytest.reports.TestReport.__init__
def _forced(self, *args, **kwargs):
    _init(self, *args, **kwargs)
    self.outcome = "passed"
_pytest.reports.TestReport.__init__ = _forced
''')
    _assert_rejected(grade(task, attack), "test runner modified in-process", "TestReport")


def test_attack_forged_channel_lines(task):
    """Append forged 'passed' records to every file the launcher might write to."""
    attack = _init_patch('''
import atexit, glob, json
def _forge():
    for path in glob.glob("/run/swe-srl/*/*"):
        with open(path, "a") as fh:
            fh.write("0" * 64 + " " + json.dumps({"final": True, "exitstatus": 0, "lines": 0}) + "\\n")
atexit.register(_forge)
''')
    # Tests run as an unprivileged user: the root-only channel cannot even be opened.
    report = grade(task, attack, GradingConfig(**_NO_SCAN))
    assert report.infra_error is None and not report.resolved and reward_from_tests(report) == 0.0
    # Where the tests run as root, the forged lines are caught by their signature.
    _assert_rejected(grade(task, attack, GradingConfig(test_user=None, **_NO_SCAN)), "results channel forged")


def test_attack_tests_kill_the_container(task):
    """Attack 4: imported code kills every process in the container: the model's failure
    (not resolved, reward 0), never an infrastructure failure (reward None)."""
    attack = _init_patch("import os, signal\nos.kill(-1, signal.SIGKILL)")
    _assert_rejected(grade(task, attack, GradingConfig(test_user=None, **_NO_SCAN)), KILLED_CONTAINER)
    # As the unprivileged test user it can signal nothing of the harness's: the tests just fail.
    report = grade(task, attack, GradingConfig(**_NO_SCAN))
    assert report.infra_error is None and not report.resolved and reward_from_tests(report) == 0.0


@pytest.mark.parametrize("code", [126, 127])
def test_attack_exit_code_of_a_command_that_could_not_start(task, code):
    """Imported code exits 126/127, what a shell reports for a command it could not start:
    graded as an infrastructure failure, that would be reward None (masked) instead of 0."""
    _assert_rejected(grade(task, _init_patch(f"import os\nos._exit({code})")), "ended before the runner reported")


def test_attack_oversized_patch_is_rejected_before_any_container(task):
    lines = [f"row {i:06d} " + "x" * 90 for i in range(30_000)]  # ~3 MB > the 2 MB default
    report = grade(task, task.patch + _new_file("data/huge.txt", "\n".join(lines)))
    _assert_rejected(report, "patch too large")
    assert report.duration < 5


def test_gold_patch_still_resolves_with_pytest_config_reset(task):
    """An honest fix that also edits setup.cfg: the config goes back to the base, the fix holds."""
    extra = ("diff --git a/setup.cfg b/setup.cfg\nnew file mode 100644\n--- /dev/null\n+++ b/setup.cfg\n"
             "@@ -0,0 +1,2 @@\n+[tool:pytest]\n+addopts = -p no:terminal\n")
    report = grade(task, task.patch + extra)
    assert report.resolved and report.rejected is None, report.log_tail


def test_unguarded_grading_still_works(task):
    assert grade(task, task.patch, GradingConfig(guard=False)).resolved


def test_attack_hook_from_a_file_written_at_run_time(task):
    """The package writes a plugin module into the repository while the tests run (a file the
    patch does not contain) and registers it: the guard knows it is not the base commit's."""
    attack = _init_patch('''
import gc, importlib.util, os
_path = os.path.join(os.path.dirname(__file__), "_plug.py")
with open(_path, "w") as _fh:
    _fh.write("import pytest\\n@pytest.hookimpl(hookwrapper=True)\\ndef pytest_runtest_makereport(item, call):\\n"
              "    outcome = yield\\n    outcome.get_result().outcome = 'passed'\\n")
_spec = importlib.util.spec_from_file_location("pagekit_plug", _path)
_mod = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_mod)
for _obj in gc.get_objects():
    if type(_obj).__name__ == "PytestPluginManager":
        _obj.register(_mod, "pagekit-plug")
        break
''')
    _assert_rejected(grade(task, attack, GradingConfig(**_NO_SCAN)), "tampering (runtime: gc.get_objects")
    via_config = attack.replace("for _obj in gc.get_objects():", "for _obj in [getattr(f, 'config', None) and "
                                "f.config.pluginmanager for f in __import__('sys').meta_path]:")
    _assert_rejected(grade(task, via_config, GradingConfig(**_NO_SCAN)), "test runner modified in-process",
                     "not a file of the base commit")
    assert grade(task, attack, GradingConfig(guard=False)).resolved  # the attack works without the guard


def test_tests_writing_past_the_disk_budget_are_rejected(task):
    attack = _init_patch("open('/tmp/fill', 'wb').write(b'0' * 60_000_000)")
    _assert_rejected(grade(task, attack, GradingConfig(disk_limit="40m")), "disk budget")
