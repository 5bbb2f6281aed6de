"""DockerSandbox against the real engine: limits hold, failures are reported as what they are.

Each test is named after the failure it prevents. "Outside /testbed" means anywhere else in
the container's own root filesystem (/etc, /root, /tmp, ...): it is a private copy-on-write
layer of the image, writable by the agent, and no host path is mounted into it."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
import uuid

import pytest

from swe_srl.actions import make_action
from swe_srl.errors import InfrastructureError
from swe_srl.sandbox import SandboxConfig, SandboxFileNotFound, open_sandbox, run_tool
from swe_srl.sandbox.base import hygiene_script
from swe_srl.sandbox.images.build import compute_base_commit
from swe_srl.sandbox.reaper import LABEL_RUN, list_sandboxes, reap
from tests.sandbox.git_leaks import LEAK_SETUP, leak_check

pytestmark = pytest.mark.docker


@pytest.fixture
def box(task_image):
    with open_sandbox(SandboxConfig(image=task_image, exec_output_limit=4000)) as sandbox:
        yield sandbox


def test_sleep_forever_times_out_and_sandbox_stays_usable(box):
    result = box.exec("echo started; sleep infinity", timeout=2)
    assert result.timed_out and result.output == "started\n"
    assert 2 <= result.duration < 6
    again = box.exec("echo alive; pgrep -c sleep || true")
    assert again.exit_code == 0 and again.output.startswith("alive\n")
    assert again.output.split()[1] == "1"  # only PID 1's own sleep is left: the timed-out one died


def test_huge_output_is_capped_keeping_head_and_tail(box):
    result = box.exec("echo FIRST; seq 1 200000; echo LAST")
    assert result.exit_code == 0 and result.truncated and not result.timed_out
    assert len(result.output) < 4200
    assert result.output.startswith("FIRST\n1\n2\n") and result.output.endswith("200000\nLAST\n")
    assert "bytes of output elided" in result.output


def test_endless_output_is_stopped_before_the_timeout(box):
    result = box.exec("yes", timeout=60)
    assert result.truncated and not result.timed_out and result.duration < 30
    assert result.exit_code == 137  # killed, like a command killed by the local sandbox
    assert "command killed" in result.output
    assert box.exec("echo ok").output == "ok\n"


def test_exit_codes_and_stderr_come_back(box):
    result = box.exec("echo out; echo err >&2; exit 3")
    assert result.exit_code == 3 and not result.timed_out
    assert result.output == "out\nerr\n"


def test_command_text_is_not_reinterpreted(box):
    tricky = "printf '%s\\n' \"$HOME\" '$HOME' \"a'b\" `echo tick`"
    assert box.exec(tricky).output == "/root\n$HOME\na'b\ntick\n"


def test_fork_bomb_is_held_by_the_pids_limit(task_image):
    config = SandboxConfig(image=task_image, pids_limit=64)
    with open_sandbox(config) as sandbox:
        result = sandbox.exec("bomb() { bomb | bomb & }; bomb; sleep 1", timeout=3)
        assert result.exit_code is not None  # reported, not hung
        time.sleep(0.5)
        assert sandbox.exec("echo survived", timeout=10).output == "survived\n"
    assert subprocess.run(["true"]).returncode == 0  # the host can still fork


def test_memory_hog_is_killed_and_reported(task_image):
    with open_sandbox(SandboxConfig(image=task_image, mem_limit="128m")) as sandbox:
        result = sandbox.exec("python3 -c \"x = b'x' * (1024 * 1024 * 1024); print('survived')\"", timeout=30)
        assert result.exit_code == 137 and not result.timed_out
        assert "survived" not in result.output
        assert sandbox.exec("echo ok").exit_code == 0


def test_network_is_off_by_default(box):
    probe = ("python3 -c \"import socket; socket.create_connection(('1.1.1.1', 53), timeout=3)\"; "
             "echo rc=$?; ls /sys/class/net")
    result = box.exec(probe, timeout=20)
    assert "rc=1" in result.output
    assert result.output.split("\n")[-2] == "lo"


def test_writes_outside_testbed_stay_in_the_container(box, tmp_path):
    marker = f"/etc/swe-srl-probe-{uuid.uuid4().hex}"
    assert box.exec(f"echo pwned > {marker} && cat {marker}").output == "pwned\n"
    assert not os.path.exists(marker)
    assert box.exec("mount | grep -c ' /testbed ' || true").output.strip() == "0"  # no bind mount


def test_container_killed_mid_command_is_an_infrastructure_error(box, docker_client):
    killer = threading.Timer(1.0, lambda: docker_client.containers.get(box.container_id).kill())
    killer.start()
    try:
        with pytest.raises(InfrastructureError, match="container is"):
            box.exec("sleep 20", timeout=30)
    finally:
        killer.cancel()
    with pytest.raises(InfrastructureError):
        box.exec("echo after")


def test_removed_container_is_an_infrastructure_error(box, docker_client):
    docker_client.containers.get(box.container_id).remove(force=True)
    with pytest.raises(InfrastructureError):
        box.exec("echo hi")
    with pytest.raises(InfrastructureError):
        box.diff()


DRIVER = """
import sys, time
from swe_srl.sandbox import SandboxConfig, open_sandbox
box = open_sandbox(SandboxConfig(image=sys.argv[1], run_id=sys.argv[2]))
print(box.container_id, flush=True)
time.sleep(600)
"""


def test_driver_killed_with_sigkill_leaves_a_container_that_reap_removes(task_image, docker_client):
    run_id = f"reap-{uuid.uuid4().hex[:8]}"
    driver = subprocess.Popen([sys.executable, "-c", DRIVER, task_image, run_id], stdout=subprocess.PIPE, text=True)
    try:
        container_id = driver.stdout.readline().strip()
        assert container_id, "driver did not start a sandbox"
    finally:
        driver.kill()
        driver.wait()
    assert list_sandboxes(run_id) == [container_id]  # left behind
    with open_sandbox(SandboxConfig(image=task_image)) as live:  # a new sandbox reaps on start
        assert list_sandboxes(run_id) == []
        assert live.container_id not in reap()  # a live owner's container is kept
        assert docker_client.containers.get(live.container_id).labels[LABEL_RUN]


def test_git_shows_only_the_base_commit(box, sample_task_dir):
    assert box.base_commit == compute_base_commit(sample_task_dir / "repo")
    out = box.exec("git log --all --format=%H; echo --; git remote; git tag; git reflog; "
                   "git branch -a --format='%(refname)'").output
    assert out == f"{box.base_commit}\n--\nrefs/heads/main\n"


def test_scrub_removes_future_commits_remotes_tags_and_reflog(box):
    setup = ("git commit -q --allow-empty -m fix && FIX=$(git rev-parse HEAD) && git tag v1 && "
             "git branch future && git remote add origin https://example.invalid/r.git && "
             f"git update-ref refs/remotes/origin/main $FIX && git reset -q --hard {box.base_commit} && "
             "echo $FIX")
    fix = box.exec(setup).output.strip()
    assert box.exec(f"git cat-file -e {fix}").exit_code == 0
    result = box.exec(hygiene_script("/testbed", "scrub"))
    assert result.output.strip().endswith(f"BASE={box.base_commit}")
    after = box.exec("git log --all --oneline | wc -l; git remote; git tag; git reflog | wc -l").output.split()
    assert after == ["1", "0"]
    assert box.exec(f"git cat-file -e {fix}").exit_code != 0  # the object itself is gone


def test_scrub_leaves_no_object_head_does_not_reach(box):
    # A fix commit with no ref and no reflog (and a dangling blob) was recoverable with
    # `git fsck --lost-found` / `git cat-file --batch-all-objects`: the scrub only ran gc when it
    # had removed a remote, a ref or a log.
    setup = box.exec(LEAK_SETUP)
    assert setup.exit_code == 0, setup.output
    fix, blob = setup.output.split()
    assert box.exec(f"git cat-file -e {fix} && git cat-file -e {blob}").exit_code == 0
    result = box.exec(hygiene_script("/testbed", "scrub"))
    assert result.exit_code == 0 and result.output.strip().endswith(f"BASE={box.base_commit}"), result.output
    assert box.exec(leak_check(fix, blob)).output == ""
    assert box.diff() == ""


def test_diff_has_new_modified_and_deleted_files_and_keeps_the_agent_index(box, task_image):
    box.exec("sed -i 's/a \\/ b/a \\/\\/ b/' calc/ops.py && mkdir -p calc/sub && echo 'X = 1' > calc/sub/new.py "
             "&& git rm -q README.md && echo staged >> tests/test_ops.py && git add tests/test_ops.py")
    index_before = box.exec("git diff --cached --name-only; git status --porcelain").output
    patch = box.diff()
    assert "+++ b/calc/sub/new.py" in patch and "+    return a // b" in patch
    assert "deleted file mode" in patch and "+staged" in patch
    assert box.exec("git diff --cached --name-only; git status --porcelain").output == index_before
    with open_sandbox(SandboxConfig(image=task_image)) as fresh:  # the patch applies to the base
        fresh.write_file("/tmp/p.diff", patch)
        assert fresh.exec("git apply /tmp/p.diff && cat calc/sub/new.py").output == "X = 1\n"
    assert "__pycache__" not in patch and ".pytest_cache" not in patch


def test_files_copy_in_and_out(box, tmp_path):
    box.write_file("notes/a.txt", "hello\n")
    assert box.read_file("/testbed/notes/a.txt") == "hello\n"
    src = tmp_path / "dir"
    (src / "inner").mkdir(parents=True)
    (src / "inner" / "b.txt").write_text("B")
    box.copy_in(str(src), "/opt/data")
    assert box.exec("cat /opt/data/inner/b.txt").output == "B"
    box.copy_out("/opt/data", str(tmp_path / "back"))
    assert (tmp_path / "back" / "inner" / "b.txt").read_text() == "B"
    with pytest.raises(SandboxFileNotFound):
        box.read_file("missing.txt")


def test_tools_run_through_run_tool(box):
    edit = make_action("str_replace_editor", {"command": "str_replace", "path": "/testbed/calc/ops.py",
                                              "old_str": "return a + b", "new_str": "return b + a"})
    result = run_tool(box, edit)
    assert result.exit_code == 0 and "has been edited" in result.output
    big = "".join(f"LINE_{i} = '{'$(rm -rf /)' * 3}'\n" for i in range(4000))  # > 64 KiB: via a file
    created = run_tool(box, make_action("str_replace_editor", {"command": "create", "path": "/testbed/big.py",
                                                               "file_text": big}))
    assert created.exit_code == 0, created.output
    assert box.read_file("big.py") == big
    undo = run_tool(box, make_action("str_replace_editor", {"command": "undo_edit", "path": "/testbed/calc/ops.py"}))
    assert undo.exit_code == 0 and "return a + b" in box.read_file("calc/ops.py")
    assert run_tool(box,
                    make_action("bash", {"command": "python3 -m pytest -q | tail -1"})).output.startswith("1 passed")
    unknown = run_tool(box, make_action("browser", {"url": "x"}))
    assert unknown.exit_code == 127 and "Available tools" in unknown.output
    submitted = run_tool(box, make_action("submit"))
    assert "+++ b/big.py" in submitted.output


def test_reset_returns_to_the_base_commit(box):
    box.exec("echo junk > junk.txt && echo '# x' >> calc/ops.py")
    box.reset()
    assert box.diff() == ""


def test_missing_image_is_an_infrastructure_error(docker_client):
    with pytest.raises(InfrastructureError, match="swe-srl env build"):
        open_sandbox(SandboxConfig(image="swe-srl/task-does-not-exist:0"))


def test_writing_past_the_disk_budget_is_the_models_failure_and_bounded(task_image):
    """No quota on this engine's overlay2-on-ext4: the budget is checked after each command."""
    from swe_srl.errors import DiskLimitExceeded, SweSrlError

    with open_sandbox(SandboxConfig(image=task_image, disk_limit="40m")) as sandbox:
        small = sandbox.exec("head -c 10M /dev/zero > /tmp/ten && echo wrote")
        assert small.exit_code == 0 and small.output == "wrote\n"
        assert 10 * 2**20 <= sandbox.disk_usage() < 40 * 2**20
        with pytest.raises(DiskLimitExceeded, match="over its disk budget") as caught:
            sandbox.exec("head -c 60M /dev/zero > /root/sixty && echo wrote")
        assert caught.value.output == "wrote\n"
        assert not isinstance(caught.value, InfrastructureError) and isinstance(caught.value, SweSrlError)


def test_container_killed_by_its_own_processes_is_not_an_engine_failure(task_image):
    """`kill -9 -1` inside: SandboxDied (the caller's to blame on the model); a kill sent
    through the engine from outside stays a plain infrastructure failure."""
    import docker

    from swe_srl.errors import SandboxDied

    with open_sandbox(SandboxConfig(image=task_image)) as sandbox:
        with pytest.raises(SandboxDied) as caught:
            sandbox.exec("echo bye; kill -9 -1; sleep 5")
        assert "exited" in str(caught.value)
    with open_sandbox(SandboxConfig(image=task_image)) as sandbox:
        threading.Timer(1.0, lambda: docker.from_env().containers.get(sandbox.container_id).kill()).start()
        with pytest.raises(InfrastructureError) as caught:
            sandbox.exec("sleep 10")
        assert not isinstance(caught.value, SandboxDied) and "through the engine" in str(caught.value)
