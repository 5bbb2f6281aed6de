"""Every form of test command that runs pytest is found and rewritten to run swe-srl's launcher,
or refused as ungradable in one line (swe_srl.sandbox.testcmd). Pure: no docker."""

from __future__ import annotations

import subprocess

import pytest

from swe_srl.sandbox.grading import guarded_command, runner_probe
from swe_srl.sandbox.testcmd import ANY_PYTHON, Ungradable, find_pytest_run

L = "/run/L.py"


@pytest.mark.parametrize("command, guarded, mode", [
    ("python3 -m pytest -rA t.py", "python3 /run/L.py -rA t.py", "module"),
    ("pytest -rA t.py", f"{ANY_PYTHON} /run/L.py -rA t.py", "script"),
    ("py.test -q", f"{ANY_PYTHON} /run/L.py -q", "script"),
    ("/usr/bin/python3.11 -m pytest", "/usr/bin/python3.11 /run/L.py", "module"),
    ("PYTHONWARNINGS=ignore python -m pytest -rA", "PYTHONWARNINGS=ignore python /run/L.py -rA", "module"),
    ("A=1 B='x y' pytest t.py", f"A=1 B='x y' {ANY_PYTHON} /run/L.py t.py", "script"),
    ("python -W ignore -m pytest t.py", "python -W ignore /run/L.py t.py", "module"),
    ("python -Wignore -X dev -u -m pytest", "python -Wignore -X dev -u /run/L.py", "module"),
    ("timeout 900 python -m pytest", "timeout 900 python /run/L.py", "module"),
    ("timeout -s KILL -k 5 900 pytest", f"timeout -s KILL -k 5 900 {ANY_PYTHON} /run/L.py", "script"),
    ("xvfb-run -a -s '-screen 0 1x1x24' python -m pytest", "xvfb-run -a -s '-screen 0 1x1x24' python /run/L.py",
     "module"),
    ("env -u HOME X=1 pytest", f"env -u HOME X=1 {ANY_PYTHON} /run/L.py", "script"),
    ("nice -n 5 stdbuf -oL python -m pytest", "nice -n 5 stdbuf -oL python /run/L.py", "module"),
    ("source /opt/env/bin/activate && conda activate testbed && pytest -rA t.py",
     f"source /opt/env/bin/activate && conda activate testbed && {ANY_PYTHON} /run/L.py -rA t.py", "script"),
    ("cd sub; python -m pytest \"$@\" | tee log", "cd sub; python /run/L.py \"$@\" | tee log", "module"),
    ("bash -c 'python -m pytest -rA \"$@\"' _ t.py", "bash -c 'python /run/L.py -rA \"$@\"' _ t.py", "module"),
    ("sh -ec \"PYTHONHASHSEED=0 pytest -q\"", "sh -ec 'PYTHONHASHSEED=0 \"$(command -v python || command -v python3)\" "
     "/run/L.py -q'", "script"),
])
def test_every_pytest_form_is_guarded(command, guarded, mode):
    assert guarded_command(command, L) == (guarded, mode)
    assert runner_probe(command) is not None


@pytest.mark.parametrize("command", [
    "./tests/runtests.py --verbosity 2 --settings=test_sqlite --parallel 1 m",
    "PYTHONWARNINGS='ignore::UserWarning' bin/test -C --verbose",
    "python setup.py test_something",
])
def test_other_runners_are_not_pytest_runs(command):
    assert find_pytest_run(command) is None and guarded_command(command, L) is None


@pytest.mark.parametrize("command, why", [
    ("tox --current-env -epy39 -v --", "through tox"),
    ("tox -e py311", "through tox"),
    ("pytest a.py; pytest b.py", "more than once"),
    ("python -c 'import pytest; pytest.main()'", "cannot tell how"),
    ("coverage run -m pytest", "cannot tell how"),
    ("(cd sub && pytest)", "uses '('"),
    ("pytest $(cat tests.txt)", "uses"),
    ("pytest > log.txt", "uses '>'"),
    ("pytest 'unbalanced", "unbalanced quotes"),
])
def test_forms_the_guard_cannot_take_over_are_ungradable_in_one_line(command, why):
    with pytest.raises(Ungradable, match="ungradable") as info:
        find_pytest_run(command)
    assert why in str(info.value) and "\n" not in str(info.value)


def test_rewritten_commands_are_valid_shell_that_runs_the_launcher(tmp_path):
    """The rewritten command, run by bash, reaches the launcher with pytest's arguments intact."""
    launcher = tmp_path / "L.py"
    launcher.write_text("import sys\nprint('ARGS', sys.argv[1:])\n")
    for command in ["X='a b' python3 -W ignore -m pytest -k 'x and y' t.py",
                    "bash -c 'python3 -m pytest -q \"$@\"' _ 'one two.py'",
                    "timeout 30 env Y=1 python3 -X dev -m pytest --tb=no"]:
        guarded, _ = guarded_command(command, str(launcher))
        out = subprocess.run(["bash", "-c", guarded], capture_output=True, text=True, check=True).stdout
        args = command.split("pytest", 1)[1]
        assert out.startswith("ARGS"), (command, out)
        if "'x and y'" in args:
            assert "'x and y'" in out
        if "one two.py" in args:
            assert "'one two.py'" in out


def test_swebench_verified_commands_are_guarded_other_runners_or_refused():
    """Every SWE-bench Verified repository's test command (real-samples ids): pytest repos are
    guarded, Django's and sympy's own runners are not pytest, sphinx's ``tox --current-env`` is
    guarded as the pytest run of its tox.ini (tests/sandbox/test_toxcmd.py)."""
    import json
    from pathlib import Path

    from swe_srl.sandbox.toxcmd import expand_tox, needs_tox_ini
    from swe_srl.tasks import swebench_test_command

    from .test_toxcmd import SPHINX_LIKE

    rows = Path(__file__).resolve().parents[3] / "shared" / "real-samples" / "swebench" / "verified.repo_commit.jsonl"
    if not rows.is_file():
        pytest.skip("no real samples here")
    kinds: dict[str, set] = {"guarded": set(), "other": set(), "ungradable": set()}
    for line in rows.read_text().splitlines():
        repo = json.loads(line)["repo"]
        try:
            command = swebench_test_command(repo, ["tests/test_x.py"])
            if needs_tox_ini(command):
                command = expand_tox(command, SPHINX_LIKE)
            run = find_pytest_run(command)
        except Ungradable:
            kinds["ungradable"].add(repo)
            continue
        kinds["guarded" if run is not None else "other"].add(repo)
    assert kinds["other"] == {"django/django", "sympy/sympy"}
    assert kinds["ungradable"] == set()
    assert {"astropy/astropy", "pytest-dev/pytest", "scikit-learn/scikit-learn", "sphinx-doc/sphinx"} <= kinds[
        "guarded"
    ]
