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
    assert done.stderr.strip().splitlines() == [
        f"error: no task folder 'nope' with a repo/ under {sample_task_dir.parent}"
    ]


@pytest.mark.docker
def test_env_prune_evicts_down_to_the_budget_and_doctor_reports_usage(base_image, docker_client, tmp_path):
    from swe_srl.sandbox.images.build import build_task_image
    from swe_srl.sandbox.images.cache import ImageCache
    from swe_srl.sandbox.images.disk import take_snapshot

    from ..conftest import write_sample_task

    folder = write_sample_task(tmp_path, "prune-me")
    (folder / "repo" / "VERSION").write_text("prune\n")
    tag = build_task_image(folder, base_tag=base_image)
    mine = docker_client.images.get(tag).id
    others = [i.ref for i in take_snapshot(docker_client).images.values() if i.id != mine]
    try:
        # Held by this process: the prune in another process must leave them (holds are shared).
        with ImageCache().hold(others):
            snap = take_snapshot(docker_client)
            budget = f"{(snap.total_bytes() - snap.own_bytes(mine) // 2) / 1e9:.9f}"
            doctor = _cli("doctor", "--budget", budget, "--tasks", str(tmp_path / "none"))
            assert "image cache" in doctor.stdout and "budget" in doctor.stdout
            assert "swe-srl env prune --budget" in doctor.stdout  # over budget: a warning with its fix
            dry = _cli("env", "prune", "--budget", budget, "--dry-run")
            assert dry.returncode == 0, dry.stderr
            assert tag in dry.stdout.replace("\n", "") or "prune-me" in dry.stdout
            assert docker_client.images.list(name=tag) and "0 evicted" in dry.stdout
            done = _cli("env", "prune", "--budget", budget)
            assert done.returncode == 0, done.stderr
            assert "1 evicted" in done.stdout and not docker_client.images.list(name=tag)
            assert all(docker_client.images.list(name=ref) or docker_client.images.get(ref) for ref in others)
            assert take_snapshot(docker_client).total_bytes() <= float(budget) * 1e9
    finally:
        if docker_client.images.list(name=tag):
            docker_client.images.remove(tag)


def test_env_prune_and_doctor_refuse_a_negative_budget():
    for args in (("env", "prune", "--budget", "-1"), ("doctor", "--budget", "-1")):
        done = _cli(*args)
        assert done.returncode == 2
        assert done.stderr.strip().splitlines() == [
            "error: image budget must be >= 0 GB (or unset for no budget), got -1.0"
        ]
