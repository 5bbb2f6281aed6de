"""swe-srl's pytest launcher and its audit hook run on the host (no docker): a tiny repository,
its test file fingerprinted by ``guard/fingerprint.py`` in a separate interpreter, the tests run
through ``guard/run_pytest.py``, the signed channel read back and checked against the
fingerprints (swe_srl.rewards.facts)."""

from __future__ import annotations

import hashlib
import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from swe_srl.rewards.facts import Reference, check_facts
from swe_srl.rewards.tamper import read_channel

GUARD = Path(__file__).resolve().parents[2] / "swe_srl" / "sandbox" / "guard"
TEST = '''
import pytest
from pkg import add

def test_add():
    assert add(1, 2) == 3

class TestMore:
    def test_zero(self):
        assert add(0, 0) == 0

@pytest.mark.xfail(reason="known")
def test_marked_xfail():
    assert add(1, 1) == 3

@pytest.mark.parametrize("a", [1, 2])
def test_param(a):
    assert add(a, 0) == a
'''
EXPECTED = ["tests/test_x.py::test_add", "tests/test_x.py::TestMore::test_zero", "tests/test_x.py::test_marked_xfail",
            "tests/test_x.py::test_param[1]", "tests/test_x.py::test_param[2]"]


def _run(tmp_path: Path, extra: str = "", test: str = TEST, conftest: str = "", conftest_touched: bool = False):
    repo, scratch = tmp_path / "repo", tmp_path / "scratch"
    (repo / "pkg").mkdir(parents=True)
    (repo / "tests").mkdir()
    scratch.mkdir()
    (repo / "pkg" / "__init__.py").write_text("def add(a, b):\n    return a + b\n" + extra)
    (repo / "tests" / "test_x.py").write_text(test)
    subprocess.run([sys.executable, "-s", str(GUARD / "fingerprint.py"), str(repo), str(scratch / "reference.json"),
                    "tests/test_x.py"], check=True, cwd="/")
    key = secrets.token_bytes(32)
    tracked = ""
    if conftest:
        (repo / "tests" / "conftest.py").write_text(conftest)
        data = conftest.encode()
        blob = hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()
        tracked = f"100644 blob {blob}\ttests/conftest.py\n"
    (scratch / "tracked").write_text(tracked)
    (scratch / "launcher.json").write_text(json.dumps({
        "key": key.hex(), "channel": str(scratch / "results"), "mode": "module", "tracked": str(scratch / "tracked"),
        "reference": str(scratch / "reference.json"), "tests": ["tests/test_x.py"],
        "touched": ["pkg/__init__.py"] + (["tests/conftest.py"] if conftest_touched else []),
        "user": None}))
    launcher = (GUARD / "run_pytest.py").read_text().replace('"@CONFIG@"', repr(str(scratch / "launcher.json")), 1)
    (scratch / "run_pytest.py").write_text(launcher)
    shutil.copy(GUARD / "guard_hook.py", scratch / "guard_hook.py")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTEST", "PYTHONPATH"))}
    ran = subprocess.run([sys.executable, str(scratch / "run_pytest.py"), "-q", "-p", "no:cacheprovider",
                          "tests/test_x.py"], cwd=repo, capture_output=True, text=True, env=env, timeout=120)
    assert not (scratch / "launcher.json").exists() and not (scratch / "run_pytest.py").exists()
    result = read_channel((scratch / "results").read_text() if (scratch / "results").exists() else "", key)
    reference = Reference.from_json(json.loads((scratch / "reference.json").read_text()))
    return result, reference, ran.stdout + ran.stderr


def test_honest_run_reports_every_test_with_the_test_files_own_code(tmp_path):
    result, reference, log = _run(tmp_path)
    assert result.problem is None, log
    assert result.final["hardened"] and result.final["denied"] is None
    assert result.statuses == {**{t: "PASSED" for t in EXPECTED}, "tests/test_x.py::test_marked_xfail": "XFAIL"}
    statuses, notes = check_facts(result.statuses, result.calls, reference, EXPECTED)
    assert statuses == result.statuses and notes == []  # assertion-rewritten code matches the reference
    assert all(result.calls[t]["ran"] for t in EXPECTED if t != "tests/test_x.py::test_marked_xfail")


def test_xfail_injected_at_run_time_is_a_failure_unless_the_file_marks_it(tmp_path):
    attack = ("import sys, pytest\nfor _m in list(sys.modules.values()):\n"
              "    if (getattr(_m, '__file__', None) or '').endswith('test_x.py'):\n"
              "        _m.pytestmark = [pytest.mark.xfail(reason='x')]\n")
    result, reference, log = _run(tmp_path, attack)
    statuses, notes = check_facts(result.statuses, result.calls, reference, EXPECTED)
    assert statuses["tests/test_x.py::test_add"] == "FAILED"  # XPASS, not marked by the file
    assert statuses["tests/test_x.py::test_marked_xfail"] == "XFAIL"  # the file's own mark
    assert any("not marked" in n for n in notes)


@pytest.mark.parametrize("attack, denied", [
    ("import gc\ngc.get_objects()", "gc.get_objects from"),
    ("import gc\ngc.get_referrers(object)", "gc.get_referrers from"),
    ("import ctypes", "ctypes."),
    ("import inspect\n[f.frame for f in inspect.stack()]", "f_code of a runner frame"),
    ("import sys\nsys._getframe(20)", "sys._getframe from"),
    ("import sys\nsys.settrace(lambda *a: None)", "sys.settrace from"),
    ("import os\ncompile('x = 1', os.path.join(os.path.dirname(__file__), '..', 'tests', 'test_x.py'), 'exec')",
     "compile from"),
    ("def _f(): pass\n_f.__code__ = (lambda: None).__code__", "setting __code__"),
    ("open('/proc/self/mem', 'rb')", "open from"),
    ("open('/tmp/x.pyc', 'wb')", "open from"),
    ("import marshal\nmarshal.loads(marshal.dumps(compile('1', 'x', 'exec')))", "marshal.loads from"),
])
def test_the_code_under_test_is_denied_runner_introspection(tmp_path, attack, denied):
    result, _, log = _run(tmp_path, "try:\n" + "".join(f"    {line}\n" for line in attack.splitlines())
                          + "except Exception:\n    pass\n")
    assert result.problem and "tampering (runtime: " in result.problem and denied in result.problem, (result, log)


def test_ordinary_library_frame_use_is_not_a_false_alarm(tmp_path):
    """What honest libraries do with frames: their own frame, logging, typing, namedtuple, enum,
    tracebacks of their own exceptions, warnings."""
    honest = '''
import collections, enum, logging, sys, traceback, typing, warnings
import email.mime.text, xml.dom.minidom, wsgiref.simple_server  # cached bytecode loaded for repo code
_here = sys._getframe().f_globals["__name__"]
T = typing.TypeVar("T")
Point = collections.namedtuple("Point", "x y")
Color = enum.Enum("Color", "RED GREEN")
logging.getLogger("pkg").warning("loaded")
try:
    raise ValueError("x")
except ValueError:
    _text = traceback.format_exc()
warnings.warn("deprecated", DeprecationWarning)
def _gen():
    yield 1
_g = _gen()
_g.gi_frame
'''
    result, reference, log = _run(tmp_path, honest)
    assert result.problem is None, (result.problem, log)
    statuses, notes = check_facts(result.statuses, result.calls, reference, EXPECTED)
    assert notes == [] and statuses["tests/test_x.py::test_add"] == "PASSED"


PROTOCOL_CONFTEST = """
from _pytest.runner import runtestprotocol

def pytest_runtest_protocol(item, nextitem):
    item.ihook.pytest_runtest_logstart(nodeid=item.nodeid, location=item.location)
    runtestprotocol(item, nextitem=nextitem)
    item.ihook.pytest_runtest_logfinish(nodeid=item.nodeid, location=item.location)
    return True
"""


def test_a_base_commit_conftest_driving_the_protocol_is_no_false_alarm(tmp_path):
    """Repositories whose own conftest runs each test's protocol (as rerun plugins do): its frames
    sit under the runner's reporting, and are trusted as unchanged base-commit code."""
    result, reference, log = _run(tmp_path, conftest=PROTOCOL_CONFTEST)
    assert result.problem is None, (result.problem, log)
    assert result.statuses["tests/test_x.py::test_add"] == "PASSED"


def test_the_same_conftest_changed_by_the_patch_is_tampering(tmp_path):
    result, _, log = _run(tmp_path, conftest=PROTOCOL_CONFTEST, conftest_touched=True)
    assert result.problem and "test runner modified in-process" in result.problem, (result, log)
