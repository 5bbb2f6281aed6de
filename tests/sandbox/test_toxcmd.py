"""``tox --current-env`` commands (SWE-bench's sphinx tasks) graded as the pytest run tox stands
for, read from the base commit's tox.ini: guarded like any pytest command, never trusting what
the patch or the tests write, and ungradable in one line where the translation cannot be exact."""

from __future__ import annotations

import os
import subprocess
import uuid
from dataclasses import replace

import pytest

from swe_srl import tasks
from swe_srl.sandbox.testcmd import Ungradable, find_pytest_run
from swe_srl.sandbox.toxcmd import expand_tox, needs_tox_ini

# The shape of sphinx's tox.ini at the SWE-bench Verified base commits (written here, not copied).
SPHINX_LIKE = """\
[tox]
minversion = 2.4.0
envlist = docs,flake8,mypy,twine,coverage,py{36,37,38,39},du{12,13,14,15}

[testenv]
usedevelop = True
passenv =
    https_proxy
    PYTEST_ADDOPTS
description =
    py{36,37,38,39}: Run unit tests against {envname}.
deps =
    du12: docutils==0.12
extras =
    test
setenv =
    PYTHONWARNINGS = all,ignore::ImportWarning:importlib._bootstrap_external,ignore::DeprecationWarning:site
    PYTEST_ADDOPTS = {env:PYTEST_ADDOPTS:} --color yes
commands=
    python -X dev -m pytest --durations 25 {posargs}

[testenv:flake8]
commands=
    flake8 {posargs}
"""
SPHINX_COMMAND = "tox --current-env -epy39 -v -- tests/test_build_html.py tests/test_ext_autodoc.py"


def test_sphinx_command_becomes_the_guarded_pytest_run_tox_stands_for():
    assert needs_tox_ini(SPHINX_COMMAND)
    expanded = expand_tox(SPHINX_COMMAND, SPHINX_LIKE)
    assert "tox" not in expanded.split()[0:3]
    assert expanded.endswith("python -X dev -m pytest --durations 25 "
                             "tests/test_build_html.py tests/test_ext_autodoc.py")
    run = find_pytest_run(expanded)
    assert run is not None and run.mode == "module"
    assert run.after.startswith(" --durations 25 tests/test_build_html.py")


def test_expanded_command_is_shell_that_sets_tox_env_and_passes_the_test_files(tmp_path):
    """Run by bash with a stand-in interpreter: setenv reached the process, {env:X:} kept
    the outer value, the test files arrived as pytest's arguments."""
    fake = tmp_path / "python"
    fake.write_text("#!/bin/sh\necho \"WARN=$PYTHONWARNINGS\"\necho \"ADDOPTS=$PYTEST_ADDOPTS\"\necho \"ARGS=$*\"\n")
    fake.chmod(0o755)
    expanded = expand_tox(f"PATH={tmp_path}:$PATH " + SPHINX_COMMAND, SPHINX_LIKE)
    out = subprocess.run(["bash", "-c", expanded], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTEST_ADDOPTS": "-p no:x"}).stdout
    assert "WARN=all,ignore::ImportWarning:importlib._bootstrap_external,ignore::DeprecationWarning:site" in out
    assert "ADDOPTS=-p no:x --color yes" in out
    assert "ARGS=-X dev -m pytest --durations 25 tests/test_build_html.py tests/test_ext_autodoc.py" in out


def test_named_env_section_and_factor_lines():
    ini = ("[testenv]\ncommands = pytest {posargs}\nsetenv =\n    py38: ONLY38 = 1\n    !py38: NOT38 = 1\n"
           "[testenv:lint]\ncommands = flake8\n")
    py39 = expand_tox("tox --current-env -e py39 -- t.py", ini)
    assert py39 == "NOT38=1 pytest t.py"
    assert expand_tox("tox --current-env -e py38 -- t.py", ini) == "ONLY38=1 pytest t.py"
    with pytest.raises(Ungradable, match="ignores the test files"):
        expand_tox("tox --current-env -e lint -- t.py", ini)


@pytest.mark.parametrize("command, ini, why", [
    ("tox -e py39 -- t.py", SPHINX_LIKE, "without --current-env"),
    (SPHINX_COMMAND, None, "no tox.ini"),
    (SPHINX_COMMAND, "[testenv]\ncommands =\n    pytest {posargs}\n    coverage report\n", "2 commands"),
    (SPHINX_COMMAND, "[testenv]\ncommands = pytest --basetemp={envtmpdir} {posargs}\n", "substitution"),
    (SPHINX_COMMAND, "[tox]\nenvlist = py39\n", "no [testenv]"),
    (SPHINX_COMMAND, "[testenv]\nsetenv = X={envdir}/x\ncommands = pytest {posargs}\n", "substitution"),
    ("tox --current-env -c other.ini -e py39 -- t.py", SPHINX_LIKE, "another config file"),
])
def test_tox_forms_that_cannot_be_read_exactly_are_ungradable_in_one_line(command, ini, why):
    with pytest.raises(Ungradable, match="ungradable") as info:
        expand_tox(command, ini)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_commands_without_tox_are_left_alone():
    assert not needs_tox_ini("python -m pytest t.py")
    assert expand_tox("python -m pytest t.py", None) == "python -m pytest t.py"
    assert not needs_tox_ini("tox -e py311")  # refused by find_pytest_run, never expanded


# ---------------------------------------------------------------------------- graded in Docker

TOX_INI = ("[testenv]\nsetenv =\n    PYTHONWARNINGS = ignore\ncommands =\n"
           "    python -m pytest -rA -p no:cacheprovider {posargs}\n")


@pytest.fixture(scope="module")
def tox_task():
    """The pagekit demo task on an image whose base commit carries a tox.ini, run as SWE-bench
    runs sphinx: ``tox --current-env -epy39 -v --`` (tox itself is not installed: never run)."""
    from swe_srl.sandbox.client import docker_client, engine_available
    from swe_srl.sandbox.images.build import build_task_image

    if not engine_available():
        pytest.skip("no Docker engine answers")
    task = next(t for t in tasks.load_local_tasks() if t.instance_id == "swe-srl-demo__pagekit-1")
    client = docker_client()
    container = client.containers.run(build_task_image(task.metadata["task_dir"]), "sleep 300", detach=True,
                                      network_disabled=True)
    tag = f"swe-srl/test-tox-{uuid.uuid4().hex[:8]}:latest"
    try:
        script = (f"cd {task.workdir} && printf '%s' {_q(TOX_INI)} > tox.ini && git add tox.ini && "
                  "git -c user.name=t -c user.email=t@t commit -q --amend --no-edit")
        ran = container.exec_run(["sh", "-c", script])
        assert ran.exit_code == 0, ran.output
        repository, _, version = tag.rpartition(":")
        container.commit(repository=repository, tag=version)
    finally:
        container.remove(force=True)
    yield replace(task, image=tag, test_cmd="tox --current-env -epy39 -v --")
    client.images.remove(tag, force=True)


def _q(text: str) -> str:
    import shlex

    return shlex.quote(text)


@pytest.mark.docker
def test_tox_task_is_graded_under_the_guard(tox_task):
    from swe_srl.sandbox.grading import grade

    gold = grade(tox_task, tox_task.patch)
    assert gold.infra_error is None, gold.log_tail
    assert gold.resolved and gold.fail_to_pass == 1.0 and gold.pass_to_pass == 1.0
    empty = grade(tox_task, "")
    assert empty.infra_error is None and not empty.resolved and empty.fail_to_pass == 0.0


@pytest.mark.docker
def test_a_patched_tox_ini_does_not_change_what_runs(tox_task):
    """The patch rewrites tox.ini so that its command prints a passing summary instead of
    running the tests: grading reads the base commit's tox.ini, so the tests still run."""
    forged = TOX_INI.replace("python -m pytest -rA -p no:cacheprovider {posargs}",
                             "python -c \"print('tests/test_pages.py::test_x PASSED')\" {posargs}")
    old = "".join(f"-{line}\n" for line in TOX_INI.splitlines())
    new = "".join(f"+{line}\n" for line in forged.splitlines())
    n = len(TOX_INI.splitlines())
    patch = f"diff --git a/tox.ini b/tox.ini\n--- a/tox.ini\n+++ b/tox.ini\n@@ -1,{n} +1,{n} @@\n{old}{new}"
    from swe_srl.sandbox.grading import grade

    report = grade(tox_task, patch)
    assert report.infra_error is None, report.log_tail
    assert not report.resolved and report.fail_to_pass == 0.0
