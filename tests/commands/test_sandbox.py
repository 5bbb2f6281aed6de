"""`swe-srl doctor` and `swe-srl env build` as a user runs them (a subprocess, real engine)."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest


def _cli(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "swe_srl.cli", *args], capture_output=True, text=True,
                          env={**os.environ, "COLUMNS": "200", **(env or {})}, timeout=300)


@pytest.mark.docker
def test_env_build_prints_base_and_task_tags(task_image, sample_task_dir):
    done = _cli("env", "build", "--tasks", str(sample_task_dir.parent), "--only", sample_task_dir.name)
    assert done.returncode == 0, done.stderr
    rows = dict(line.split("\t") for line in done.stdout.strip().splitlines())
    assert rows[sample_task_dir.name] == task_image
    assert rows["base"].startswith("swe-srl/base:")


@pytest.mark.docker
def test_doctor_passes_when_engine_and_images_are_there(task_image, sample_task_dir):
    done = _cli("doctor", "--tasks", str(sample_task_dir.parent))
    assert done.returncode == 0, done.stdout + done.stderr
    assert "docker engine" in done.stdout and "1 built" in done.stdout


def test_doctor_fails_with_a_fix_when_no_engine_answers(tmp_path):
    done = _cli("doctor", env={"DOCKER_HOST": f"unix://{tmp_path}/no.sock"})
    assert done.returncode == 1
    assert "setup-docker.sh" in done.stdout and "not ready: docker engine" in done.stderr


@pytest.mark.docker
def test_env_build_unknown_task_is_one_red_line(sample_task_dir, docker_client):
    done = _cli("env", "build", "--tasks", str(sample_task_dir.parent), "--only", "nope")
    assert done.returncode == 2
    assert done.stderr.strip().splitlines() == [f"error: no task folder 'nope' with a repo/ under {sample_task_dir.parent}"]
