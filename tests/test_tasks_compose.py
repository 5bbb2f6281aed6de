"""docker-compose.yml: the base image build, the trainer (docker socket) and the gpu vLLM server."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((ROOT / "docker-compose.yml").read_text())


def test_base_image_service_builds_the_sandbox_dockerfile(compose):
    base = compose["services"]["base-image"]
    context = ROOT / base["build"]["context"]
    assert (context / base["build"].get("dockerfile", "Dockerfile")).is_file()
    assert base["image"].startswith("swe-srl/base:") and "profiles" not in base


def test_trainer_runs_swe_srl_train_with_the_docker_socket(compose):
    trainer = compose["services"]["trainer"]
    assert trainer["command"][:2] == ["swe-srl", "train"]
    assert "/var/run/docker.sock:/var/run/docker.sock" in trainer["volumes"]
    assert trainer["build"]["context"] == "." and "pip install" in trainer["build"]["dockerfile_inline"]
    assert trainer["depends_on"]["base-image"]["condition"] == "service_completed_successfully"
    assert "profiles" not in trainer  # runs without naming a profile
    assert trainer["environment"]["OPENAI_BASE_URL"].endswith("http://vllm:8000/v1}")


def test_vllm_server_is_gpu_only_and_openai_compatible(compose):
    vllm = compose["services"]["vllm"]
    assert vllm["profiles"] == ["gpu"]
    assert vllm["entrypoint"] == ["vllm", "serve"]
    assert "--port=8000" in vllm["command"] and "8000:8000" in vllm["ports"]
    devices = vllm["deploy"]["resources"]["reservations"]["devices"]
    assert devices == [{"driver": "nvidia", "count": "all", "capabilities": ["gpu"]}]
    assert "/health" in " ".join(vllm["healthcheck"]["test"])


def test_compose_config_validates_when_the_cli_is_present():
    if shutil.which("docker") is None:
        pytest.skip("docker CLI not installed")
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, text=True)
    if probe.returncode != 0:
        pytest.skip("the docker compose plugin is not installed")
    done = subprocess.run(["docker", "compose", "--profile", "gpu", "config", "--quiet"], cwd=ROOT,
                          capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


def test_ray_services_match_the_hosts_docs(compose):
    """ray-head / ray-worker: one Ray node per Docker host, each offering the custom resource
    swe_srl.hosts schedules its actor with, and mounting its own engine's socket (never TCP)."""
    from swe_srl.hosts import RESOURCE_PREFIX

    for name in ("ray-head", "ray-worker"):
        service = compose["services"][name]
        assert service["profiles"] == ["ray"] and service["image"] == compose["services"]["trainer"]["image"]
        command = " ".join(service["command"])
        assert "ray start" in command and "--block" in command and RESOURCE_PREFIX in command
        assert "/var/run/docker.sock:/var/run/docker.sock" in service["volumes"]
    assert "--head" in " ".join(compose["services"]["ray-head"]["command"])
    assert "--address=" in " ".join(compose["services"]["ray-worker"]["command"])
    assert "2375" not in (ROOT / "docker-compose.yml").read_text()
