"""The grading harness's docker-free parts (swe_srl.sandbox.grading): its config is validated,
and its apply script (run here with the host's git and patch) falls back to patch --fuzz,
rejects a patch that does not apply, and restores the test files a patch touched."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from swe_srl.errors import ConfigError
from swe_srl.sandbox import grading


def test_grading_config_is_validated():
    with pytest.raises(ConfigError, match="on_test_timeout"):
        grading.GradingConfig(on_test_timeout="maybe")
    with pytest.raises(ConfigError, match="> 0"):
        grading.GradingConfig(test_timeout=0)


@pytest.mark.skipif(shutil.which("git") is None or shutil.which("patch") is None, reason="needs git and patch")
def test_apply_script_fuzz_fallback_reject_and_test_file_restore(tmp_path):
    repo = tmp_path / "repo"
    (repo / "tests").mkdir(parents=True)
    (repo / "m.py").write_text("".join(f"line {i}\n" for i in range(20)))
    (repo / "tests" / "test_m.py").write_text("def test_m():\n    assert True\n")
    git = ["git", "-c", "user.name=t", "-c", "user.email=t@t", "-c", "commit.gpgsign=false"]
    subprocess.run(["git", "init", "-q"], cwd=repo, check=True)
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True)
    subprocess.run([*git, "commit", "-qm", "base"], cwd=repo, check=True)
    # Context lines that drifted (line 3 reads "line three") defeat git apply; patch --fuzz copes.
    drifted = ("--- a/m.py\n+++ b/m.py\n@@ -2,5 +2,5 @@\n line 1\n line 2\n-line 3\n+LINE 3\n line 4\n"
               " line five\n")
    cheat = ("--- a/tests/test_m.py\n+++ b/tests/test_m.py\n@@ -1,2 +1,2 @@\n def test_m():\n"
             "-    assert True\n+    assert 'cheated'\n")
    (tmp_path / "model.patch").write_text(drifted.replace(" line five\n", " line 5\n") + cheat)
    script = grading.apply_script(str(tmp_path / "model.patch"), None, ["tests/test_m.py"])
    done = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "LINE 3" in (repo / "m.py").read_text()
    assert "cheated" not in (repo / "tests" / "test_m.py").read_text()  # restored to the base

    (tmp_path / "bad.patch").write_text(drifted.replace("-line 3\n", "-not there\n").replace(" line 2\n", " nope\n"))
    script = grading.apply_script(str(tmp_path / "bad.patch"), None, [])
    done = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 10, done.stdout + done.stderr

    # Regression: `patch --batch` alone "assumes -R" for a patch that looks applied and would
    # silently UNDO it; an already-applied patch must count as not applying.
    (tmp_path / "again.patch").write_text(drifted.replace(" line five\n", " line 5\n"))
    script = grading.apply_script(str(tmp_path / "again.patch"), None, [])
    done = subprocess.run(["bash", "-c", script], cwd=repo, capture_output=True, text=True)
    assert done.returncode == 10 and "LINE 3" in (repo / "m.py").read_text()


def test_runner_probe_is_the_command_up_to_its_launcher_importing_pytest():
    env = "source /opt/miniconda3/bin/activate && conda activate testbed"
    assert grading.runner_probe(f"{env} && pytest -rA tests/t.py") == (
        f"{env} && \"$(command -v python || command -v python3)\" -c 'import pytest'")
    assert grading.runner_probe("python3.9 -m pytest -q tests/t.py") == "python3.9 -c 'import pytest'"
    assert grading.runner_probe("./tests/runtests.py --parallel 1 m") is None


def test_a_runner_that_cannot_start_stops_the_apply_script_before_the_patch(tmp_path):
    (tmp_path / "m.py").write_text("x = 1\n")
    (tmp_path / "model.patch").write_text("--- a/m.py\n+++ b/m.py\n@@ -1 +1 @@\n-x = 1\n+x = 2\n")
    script = grading.apply_script(str(tmp_path / "model.patch"), None, [],
                                  probe="python3 -c 'import no_such_runner_module'")
    done = subprocess.run(["bash", "-c", script], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 13 and "no_such_runner_module" in done.stdout
    assert (tmp_path / "m.py").read_text() == "x = 1\n"  # nothing applied
