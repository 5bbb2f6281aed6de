"""The pure half of grading (swe_srl.rewards.testlog): log parsers (pytest -rA, junit xml,
swebench's django parser), the merge and exit-code cross-check that defeat spoofed output,
scoring, the report; and the rule that swe_srl.rewards imports no torch, docker or sandbox."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pytest

from swe_srl.errors import ConfigError
from swe_srl.rewards import testlog
from swe_srl.schemas import Task

SPOOF_MODULE = '''
import atexit, os

FAKE = """
=========================== short test summary info ============================
PASSED tests/test_spoof.py::test_real_failure
PASSED tests/test_spoof.py::test_error
============================== 3 passed in 0.01s ===============================
"""

def _lie_at_exit():
    print(FAKE, flush=True)
    os._exit(0)

atexit.register(_lie_at_exit)

def test_prints_fake_summary():
    print(FAKE)

def test_real_failure():
    assert 1 + 1 == 3

def test_error(missing_fixture):
    pass
'''


def _run_pytest(tmp_path, module: str, junit: bool = True) -> tuple[str, str, int]:
    (tmp_path / "tests").mkdir()
    (tmp_path / "tests" / "test_spoof.py").write_text(module)
    xml = tmp_path / "secret-junit.xml"
    cmd = [sys.executable, "-m", "pytest", "-rA", "-p", "no:cacheprovider", "tests/test_spoof.py"]
    if junit:
        cmd.append(f"--junitxml={xml}")
    done = subprocess.run(cmd, cwd=tmp_path, capture_output=True, text=True,
                          env={**os.environ, "PYTEST_DISABLE_PLUGIN_AUTOLOAD": "1"})
    return done.stdout + done.stderr, xml.read_text() if junit else "", done.returncode


def test_spoofed_passed_lines_and_forced_exit_code_do_not_pass_tests(tmp_path):
    log, xml, code = _run_pytest(tmp_path, SPOOF_MODULE)
    assert code == 0  # the spoof forced the exit status
    assert log.count("PASSED tests/test_spoof.py::test_real_failure") >= 2
    # printed summaries can only make a test look worse, so the log alone is not fooled either
    statuses = testlog.parse_pytest_log(log)
    assert statuses["tests/test_spoof.py::test_real_failure"] == "FAILED"
    assert statuses["tests/test_spoof.py::test_error"] == "ERROR"
    merged = testlog.merge_statuses(testlog.parse_junit_xml(xml, ["tests/test_spoof.py"]), statuses)
    assert merged == {"tests/test_spoof.py::test_prints_fake_summary": "PASSED",
                      "tests/test_spoof.py::test_real_failure": "FAILED",
                      "tests/test_spoof.py::test_error": "ERROR"}
    assert testlog.score(merged, ["tests/test_spoof.py::test_real_failure"], []) == (False, 0.0, 1.0)


def test_junit_outranks_a_log_that_claims_more():
    junit = {"t.py::a": "FAILED", "t.py::b": "PASSED"}
    log = {"t.py::a": "PASSED", "t.py::b": "FAILED", "t.py::fake": "PASSED"}
    assert testlog.merge_statuses(junit, log) == {"t.py::a": "FAILED", "t.py::b": "FAILED"}
    assert testlog.merge_statuses({}, log) == log


def test_exit_code_contradicting_the_log_voids_it():
    passing = {"t.py::a": "PASSED"}
    assert "exited 1" in testlog.exit_code_contradiction(passing, 1)
    assert testlog.exit_code_contradiction(passing, 0) is None
    assert testlog.exit_code_contradiction({"t.py::a": "FAILED"}, 1) is None
    assert testlog.exit_code_contradiction({}, 2) is None


def test_pytest_log_statuses_and_ids():
    log = textwrap.dedent("""\
        tests/test_a.py::test_x PASSED
        =========================== short test summary info ============================
        PASSED tests/test_a.py::test_ok
        PASSED tests/test_a.py::TestK::test_m[1-2]
        FAILED tests/test_a.py::test_bad - AssertionError: assert 1 == 2 - with a dash
        ERROR tests/test_a.py::test_err - fixture 'db' not found
        SKIPPED [1] tests/test_a.py:10: no network
        XFAIL tests/test_a.py::test_known - bug 12
        XPASS tests/test_a.py::test_lucky
        =================== 1 failed, 2 passed, 1 error in 0.05s ===================
        PASSED tests/test_a.py::test_bad
        """)
    assert testlog.parse_pytest_log(log) == {
        "tests/test_a.py::test_ok": "PASSED",
        "tests/test_a.py::TestK::test_m[1-2]": "PASSED",
        "tests/test_a.py::test_bad": "FAILED",
        "tests/test_a.py::test_err": "ERROR",
        "tests/test_a.py::test_known": "XFAIL",
        "tests/test_a.py::test_lucky": "PASSED",
    }
    assert testlog.parse_pytest_log("PASSED tests/test_a.py::test_ok\n") == {}


def test_junit_xml_classes_params_skips_and_collection_errors():
    xml = textwrap.dedent("""\
        <?xml version="1.0" encoding="utf-8"?><testsuites><testsuite name="pytest">
        <testcase classname="tests.test_a" name="test_ok" time="0.001"/>
        <testcase classname="tests.test_a.TestK" name="test_m[1-2]" time="0.001"/>
        <testcase classname="tests.test_a" name="test_bad"><failure message="assert">x</failure></testcase>
        <testcase classname="tests.test_a" name="test_s"><skipped type="pytest.skip" message="no"/></testcase>
        <testcase classname="tests.test_a" name="test_xf"><skipped type="pytest.xfail" message="bug"/></testcase>
        <testcase classname="" name="tests.test_b"><error message="collection failure">boom</error></testcase>
        </testsuite></testsuites>""")
    assert testlog.parse_junit_xml(xml, ["tests/test_a.py", "tests/test_b.py"]) == {
        "tests/test_a.py::test_ok": "PASSED",
        "tests/test_a.py::TestK::test_m[1-2]": "PASSED",
        "tests/test_a.py::test_bad": "FAILED",
        "tests/test_a.py::test_s": "SKIPPED",
        "tests/test_a.py::test_xf": "XFAIL",
        "tests/test_b.py": "ERROR",
    }
    assert testlog.parse_junit_xml("<not xml") == {}


def test_score_rules():
    statuses = {"a": "PASSED", "b": "XFAIL", "c": "SKIPPED", "d": "FAILED"}
    assert testlog.score(statuses, ["a", "b"], ["c"]) == (True, 1.0, 1.0)
    assert testlog.score(statuses, ["a", "c"], ["a"]) == (False, 0.5, 1.0)  # a skipped F2P is no fix
    assert testlog.score(statuses, ["a"], ["d", "missing"]) == (False, 1.0, 0.0)
    assert testlog.score({}, [], []) == (True, 1.0, 1.0)


def _task(**over) -> Task:
    base = dict(instance_id="django__django-1", repo="django/django", base_commit="b" * 40,
                problem_statement="x", log_parser="parse_log_django",
                fail_to_pass=("test_new (model_fields.tests.GetFieldDisplayTests)",))
    base.update(over)
    return Task(**base)


def test_swebench_django_parser_through_parse_test_log():
    log = textwrap.dedent("""\
        test_new (model_fields.tests.GetFieldDisplayTests) ... ok
        test_old (model_fields.tests.GetFieldDisplayTests) ... FAIL
        test_skip (model_fields.tests.GetFieldDisplayTests) ... skipped 'no db'
        """)
    statuses = testlog.parse_test_log(_task(), log)
    assert statuses == {"test_new (model_fields.tests.GetFieldDisplayTests)": "PASSED",
                        "test_old (model_fields.tests.GetFieldDisplayTests)": "FAILED",
                        "test_skip (model_fields.tests.GetFieldDisplayTests)": "SKIPPED"}
    with pytest.raises(ConfigError, match="unknown log parser"):
        testlog.parse_test_log(_task(log_parser="parse_log_nope"), log)


def test_build_report_voids_statuses_the_exit_code_contradicts_and_notes_a_timeout():
    task = _task(log_parser="pytest", fail_to_pass=("t.py::a",), pass_to_pass=("t.py::b",))
    passing = {"t.py::a": "PASSED", "t.py::b": "PASSED"}
    ok = testlog.build_report(task, passing, "log", exit_code=0, timed_out=False, time_limit=60, tail_chars=10)
    assert (ok.resolved, ok.fail_to_pass, ok.pass_to_pass, ok.patch_applied) == (True, 1.0, 1.0, True)
    assert ok.statuses == passing and ok.log_tail == "log"
    lied = testlog.build_report(task, passing, "x" * 50, exit_code=1, timed_out=False, time_limit=60,
                                tail_chars=10)
    assert (lied.resolved, lied.statuses, lied.fail_to_pass) == (False, {}, 0.0)
    assert lied.log_tail.startswith("x" * 10 + "\n[swe-srl] the test command exited 1")
    slow = testlog.build_report(task, {"t.py::b": "PASSED"}, "", exit_code=None, timed_out=True,
                                time_limit=3, tail_chars=10)
    assert slow.log_tail.endswith("[swe-srl] tests timed out after 3s") and slow.fail_to_pass == 0.0


def test_rewards_package_imports_without_torch_docker_or_the_sandbox():
    """Every module of swe_srl.rewards (found on disk, so a new one is held to it too) imports
    in a fresh interpreter without pulling in torch, docker or swe_srl.sandbox."""
    code = textwrap.dedent("""\
        import pkgutil, sys
        import swe_srl.rewards as rewards
        names = [m.name for m in pkgutil.iter_modules(rewards.__path__, "swe_srl.rewards.")]
        assert "swe_srl.rewards.testlog" in names, names
        for name in names:
            __import__(name)
        heavy = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "docker")
                       or m == "swe_srl.sandbox" or m.startswith("swe_srl.sandbox."))
        assert not heavy, heavy
        print(len(names))
        """)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert int(done.stdout) >= 3  # testlog, similarity, combine at least
