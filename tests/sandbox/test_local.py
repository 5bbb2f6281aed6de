"""LocalSandbox: the non-isolating fallback still times out, caps, diffs and edits, and says
loudly that it does not isolate."""

from __future__ import annotations

import logging
import os
import shutil
import subprocess

import pytest

from swe_srl.actions import make_action
from swe_srl.errors import ConfigError, InfrastructureError
from swe_srl.sandbox import SandboxConfig, open_sandbox, run_tool
from swe_srl.sandbox.base import hygiene_script
from swe_srl.sandbox.images.build import BASE_COMMIT_ENV, BASE_COMMIT_SCRIPT, compute_base_commit
from tests.sandbox.git_leaks import LEAK_SETUP, leak_check


@pytest.fixture
def local(sample_task_dir, caplog):
    caplog.set_level(logging.WARNING)
    config = SandboxConfig(backend="local", source=str(sample_task_dir / "repo"), exec_output_limit=2000)
    with open_sandbox(config) as sandbox:
        yield sandbox


def test_local_backend_warns_that_it_does_not_isolate(local, caplog):
    assert any("does not isolate" in r.getMessage() for r in caplog.get_records("setup"))


def test_local_base_commit_matches_the_task_image(local, sample_task_dir):
    assert local.base_commit == compute_base_commit(sample_task_dir / "repo")


def test_local_timeout_kills_background_children(local):
    result = local.exec("sleep 30 & echo $! > bg.pid; sleep 30", timeout=1)
    assert result.timed_out and result.duration < 5
    pid = local.read_file("bg.pid").strip()
    state = local.exec(f"ps -o stat= -p {pid} || true").output.strip()
    assert state in ("", "Z")  # gone, or a zombie waiting for its new parent to reap it


def test_local_output_capped_and_exit_code_kept(local):
    result = local.exec("seq 1 100000; exit 4")
    assert result.exit_code == 4 and result.truncated and result.output.endswith("100000\n")


def test_local_editor_maps_the_workdir_and_diff_sees_it(local):
    edit = make_action("str_replace_editor", {"command": "str_replace", "path": "/testbed/calc/ops.py",
                                              "old_str": "return a / b", "new_str": "return a // b"})
    assert run_tool(local, edit).exit_code == 0
    local.write_file("/testbed/calc/extra.py", "E = 1\n")
    patch = local.diff()
    assert "+    return a // b" in patch and "+++ b/calc/extra.py" in patch


def test_local_scrub_leaves_no_object_head_does_not_reach(local):
    setup = local.exec(LEAK_SETUP, env=BASE_COMMIT_ENV)
    assert setup.exit_code == 0, setup.output
    fix, blob = setup.output.split()
    result = local.exec(hygiene_script(str(local.repo), "scrub", str(local.state)))
    assert result.exit_code == 0 and result.output.strip().endswith(f"BASE={local.base_commit}"), result.output
    assert local.exec(leak_check(fix, blob)).output == ""


def test_local_backend_needs_a_source():
    with pytest.raises(ConfigError, match="needs `source`"):
        SandboxConfig(backend="local")


def test_local_scrub_that_cannot_finish_fails_the_start(sample_task_dir, tmp_path):
    source = tmp_path / "repo"
    shutil.copytree(sample_task_dir / "repo", source)
    subprocess.run(["sh", "-c", BASE_COMMIT_SCRIPT], cwd=source, env={**os.environ, **BASE_COMMIT_ENV}, check=True)
    subprocess.run(["git", "branch", "-q", "stuck"], cwd=source, check=True)
    (source / ".git" / "refs" / "heads" / "stuck.lock").write_text("")  # another git holds the ref's lock
    with pytest.raises(InfrastructureError, match="cannot delete refs"):
        open_sandbox(SandboxConfig(backend="local", source=str(source)))
