"""The pure half of grading's defences: which patches are refused before any container starts,
which need an in-container check, and how a guarded run's signed results channel is read
(every way of forging or cutting it short fails closed)."""

from __future__ import annotations

import hashlib
import hmac
import json

import pytest

from swe_srl.rewards.tamper import (
    cap_patch,
    config_files_to_reset,
    patch_paths,
    read_channel,
    runner_shadows,
    screen_patch,
)

KEY = b"k" * 32


def _diff(path: str, *, new: bool = False, deleted: bool = False, rename_from: str = "") -> str:
    if rename_from:
        return (f"diff --git a/{rename_from} b/{path}\nsimilarity index 90%\nrename from {rename_from}\n"
                f"rename to {path}\n")
    old = "/dev/null" if new else f"a/{path}"
    new_side = "/dev/null" if deleted else f"b/{path}"
    mode = "new file mode 100644\n" if new else ("deleted file mode 100644\n" if deleted else "")
    return f"diff --git a/{path} b/{path}\n{mode}--- {old}\n+++ {new_side}\n@@ -1 +1 @@\n-x\n+y\n"


def test_patch_paths_sees_new_changed_deleted_and_renamed_files():
    patch = (_diff("pkg/a.py") + _diff("pkg/new.py", new=True) + _diff("old.py", deleted=True)
             + _diff("pkg/moved.py", rename_from="pkg/orig.py"))
    found = {p.path: p for p in patch_paths(patch)}
    assert set(found) == {"pkg/a.py", "pkg/new.py", "old.py", "pkg/moved.py", "pkg/orig.py"}
    assert found["pkg/new.py"].new_file and not found["pkg/a.py"].new_file
    assert found["old.py"].deleted and found["pkg/moved.py"].new_file and found["pkg/orig.py"].deleted
    plain = "--- a/x.py\t2020-01-01\n+++ b/x.py\t2020-01-02\n@@ -1 +1 @@\n-a\n+b\n"  # no git header
    assert [p.path for p in patch_paths(plain)] == ["x.py"]


@pytest.mark.parametrize("path, reason", [
    ("conftest.py", "tampered: conftest.py"),
    ("tests/unit/conftest.py", "tampered: tests/unit/conftest.py"),
    ("sitecustomize.py", "tampered: sitecustomize.py"),
    ("src/usercustomize.py", "tampered: src/usercustomize.py"),
    ("evil.pth", "tampered: evil.pth"),
])
def test_screen_rejects_files_that_change_how_tests_run(path, reason):
    assert screen_patch(_diff(path, new=True), max_bytes=10**6) == reason
    assert screen_patch(_diff(path), max_bytes=10**6) == reason  # changing an existing one too


def test_screen_accepts_an_ordinary_fix_and_refuses_an_oversized_patch():
    fix = _diff("pkg/core.py") + _diff("pkg/util.py", new=True)
    assert screen_patch(fix, max_bytes=10**6) is None
    big = fix + "+" + "x" * 5000 + "\n"
    assert screen_patch(big, max_bytes=4096) == f"patch too large: {len(big.encode())} bytes > 4096"


def test_runner_shadows_names_new_modules_that_could_stand_in_for_pytest():
    patch = (_diff("pytest.py", new=True) + _diff("src/_pytest/__init__.py", new=True)
             + _diff("lib/pluggy/hooks.py", new=True) + _diff("pkg/py.py", new=True)
             + _diff("src/_pytest/python.py")  # a change to an existing file: pytest's own repo
             + _diff("pkg/pytest_helpers.py", new=True) + _diff("docs/pytest.rst", new=True))
    assert runner_shadows(patch) == ["lib/pluggy", "pkg/py.py", "pytest.py", "src/_pytest"]


def test_pytest_config_files_are_reset_not_rejected():
    patch = _diff("setup.cfg") + _diff("pyproject.toml") + _diff("sub/tox.ini", new=True) + _diff("pkg/a.py")
    assert screen_patch(patch, max_bytes=10**6) is None
    assert config_files_to_reset(patch) == ["pyproject.toml", "setup.cfg", "sub/tox.ini"]


def test_cap_patch_keeps_small_patches_and_summarises_big_ones():
    assert cap_patch("small", 100) == "small"
    capped = cap_patch("y" * 50_000, 1000)
    assert len(capped) < 1200 and "50000 bytes" in capped and "sha256" in capped


def _line(record: dict, key: bytes = KEY) -> str:
    body = json.dumps(record, sort_keys=True)
    return hmac.new(key, body.encode(), hashlib.sha256).hexdigest() + " " + body


def _run(*records: dict, final: bool = True, tampered=None) -> list[str]:
    lines = [_line(r) for r in records]
    if final:
        lines.append(_line({"final": True, "exitstatus": 1, "lines": len(lines), "tampered": tampered}))
    return lines


PHASES = [
    {"nodeid": "t.py::ok", "when": "setup", "outcome": "passed", "xfail": False},
    {"nodeid": "t.py::ok", "when": "call", "outcome": "passed", "xfail": False},
    {"nodeid": "t.py::bad", "when": "call", "outcome": "failed", "xfail": False},
    {"nodeid": "t.py::err", "when": "setup", "outcome": "failed", "xfail": False},
    {"nodeid": "t.py::skip", "when": "setup", "outcome": "skipped", "xfail": False},
    {"nodeid": "t.py::xf", "when": "call", "outcome": "skipped", "xfail": True},
    {"nodeid": "t.py::td", "when": "call", "outcome": "passed", "xfail": False},
    {"nodeid": "t.py::td", "when": "teardown", "outcome": "failed", "xfail": False},
    {"nodeid": "t_broken.py", "when": "collect", "outcome": "failed", "xfail": False},
]


def test_read_channel_turns_signed_reports_into_statuses():
    result = read_channel("\n".join(_run(*PHASES)) + "\n", KEY)
    assert result.problem is None and result.exitstatus == 1
    assert result.statuses == {"t.py::ok": "PASSED", "t.py::bad": "FAILED", "t.py::err": "ERROR",
                               "t.py::skip": "SKIPPED", "t.py::xf": "XFAIL", "t.py::td": "ERROR",
                               "t_broken.py": "ERROR"}


@pytest.mark.parametrize("lines, problem", [
    (_run(*PHASES, final=False), "ended before the runner reported"),
    ([], "ended before the runner reported"),
    (_run(*PHASES) + [_line({"nodeid": "t.py::bad", "when": "call", "outcome": "passed"})], "lines after the final"),
    ([_line(PHASES[0], b"x" * 32)] + _run(), "without the run's signature"),
    (_run(*PHASES)[1:], "lines missing before the final"),
    (["0" * 64 + ' {"final": true, "exitstatus": 0, "lines": 0}'], "without the run's signature"),
    (["garbage"], "without the run's signature"),
    (_run(*PHASES, tampered="hook pytest_runtest_makereport in pkg/x.py"), "modified in-process"),
], ids=["no-final", "empty", "after-final", "wrong-key", "dropped-line", "unsigned-final", "garbage", "tampered"])
def test_read_channel_fails_closed(lines, problem):
    result = read_channel("\n".join(lines), KEY)
    assert result.problem and problem in result.problem and result.statuses == {}


@pytest.mark.parametrize("header, path", [
    ('"a/tests/conf\\164est.py" "b/tests/conf\\164est.py"', "tests/conftest.py"),  # octal escape
    ('"a/sp ace/conftest.py" "b/sp ace/conftest.py"', "sp ace/conftest.py"),  # quoted, with a space
    ("a/my dir/conftest.py b/my dir/conftest.py", "my dir/conftest.py"),  # unquoted, with a space
    ('"a/caf\\303\\251/conftest.py" "b/caf\\303\\251/conftest.py"', "café/conftest.py"),  # UTF-8 as octal bytes
    ('a/x.py "b/tests/conf\\164est.py"', "tests/conftest.py"),  # one side quoted
])
def test_patch_paths_are_read_as_git_reads_them(header, path):
    patch = f"diff --git {header}\nnew file mode 100644\nindex 0000000..1111111\n"  # no ---/+++ (empty file)
    assert path in {p.path for p in patch_paths(patch)}
    assert screen_patch(patch, max_bytes=10**6) == f"tampered: {path}"


@pytest.mark.parametrize("patch, path", [
    ('--- /dev/null\n+++ "b/tests/conf\\164est.py"\n@@ -0,0 +1 @@\n+x\n', "tests/conftest.py"),
    ("--- x/pkg/conftest.py\n+++ y/pkg/conftest.py\n@@ -1 +1 @@\n-a\n+b\n", "pkg/conftest.py"),  # any -p1 prefix
    ("--- a/evil.pth\t2020-01-01 00:00\n+++ b/evil.pth\t2020-01-01 00:00\n@@ -1 +1 @@\n-a\n+b\n", "evil.pth"),
    ("*** a/conftest.py\n--- b/conftest.py\n***************\n*** 1 ****\n! a\n--- 1 ----\n! b\n", "conftest.py"),
    ("Index: sitecustomize.py\n===\n--- sitecustomize.py\n+++ sitecustomize.py\n@@ -1 +1 @@\n-a\n+b\n",
     "sitecustomize.py"),
    ("diff --git a/ok.py b/tests/conftest.py\nsimilarity index 100%\nrename from ok.py\nrename to tests/conftest.py\n",
     "tests/conftest.py"),
    ('diff --git a/x b/x\ncopy from x\ncopy to "tests/conf\\164est.py"\n', "tests/conftest.py"),
    ("diff --git a/blob.bin b/usercustomize.py\nnew file mode 100644\nGIT binary patch\nliteral 3\nKcmZ?wfB*mj0RR91\n",
     "usercustomize.py"),
    ("Binary files a/x.bin and b/lib/conftest.py differ\n", "lib/conftest.py"),
])
def test_every_header_form_is_screened(patch, path):
    assert screen_patch(patch, max_bytes=10**6) == f"tampered: {path}"


def test_renamed_away_and_deleted_paths_are_marked_deleted_and_c_quoted_config_is_reset():
    patch = ("diff --git a/conftest_helpers.py b/helpers.py\nrename from conftest_helpers.py\nrename to helpers.py\n"
             '--- "a/set\\165p.cfg"\n+++ "b/set\\165p.cfg"\n@@ -1 +1 @@\n-a\n+b\n')
    found = {p.path: p for p in patch_paths(patch)}
    assert found["conftest_helpers.py"].deleted and found["helpers.py"].new_file
    assert config_files_to_reset(patch) == ["setup.cfg"]
