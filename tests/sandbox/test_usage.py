"""What a sandbox reports it used: checked against known workloads in real containers (a
command that burns ~1 CPU-second, one that holds ~200 MB), and the stats parsing of both
cgroup versions' engine answers."""

from __future__ import annotations

import pytest

from swe_srl.sandbox import SandboxConfig, open_sandbox
from swe_srl.sandbox.usage import usage_from_stats
from swe_srl.schemas import ResourceUsage

BURN_ONE_CPU_SECOND = ("python3 -c 'import time\nt = time.process_time()\n"
                       "while time.process_time() - t < 1.0: pass'")
HOLD_200_MB = ("python3 -c 'import time\nx = bytearray(200 * 2**20)\n"
               "for i in range(0, len(x), 4096): x[i] = 1\ntime.sleep(0.2)'")


def _run(config: SandboxConfig, command: str) -> ResourceUsage:
    sandbox = open_sandbox(config)
    with sandbox:
        assert sandbox.usage is None  # read only at close
        result = sandbox.exec(command, timeout=60)
        assert result.exit_code == 0, result.output
    assert sandbox.usage is not None
    return sandbox.usage


@pytest.mark.docker
def test_one_cpu_second_burnt_in_a_container_is_reported_as_one(task_image):
    usage = _run(SandboxConfig(image=task_image, cpus=1.0), BURN_ONE_CPU_SECOND)
    assert usage.containers == 1 and usage.unmeasured == 0
    assert 0.7 <= usage.cpu_seconds <= 2.0, usage  # the burn plus the sandbox's own setup
    assert usage.container_seconds >= 1.0


@pytest.mark.docker
def test_200_mb_held_in_a_container_shows_in_its_memory_peak(task_image):
    usage = _run(SandboxConfig(image=task_image, mem_limit="1g"), HOLD_200_MB)
    assert usage.memory_peak_bytes is not None and usage.memory_peak_bytes >= 200 * 2**20, usage
    assert usage.memory_source in ("max_usage", "memory.peak", "usage_at_close")


@pytest.mark.docker
def test_container_that_died_before_close_counts_as_unmeasured(task_image, docker_client):
    sandbox = open_sandbox(SandboxConfig(image=task_image))
    with sandbox:
        docker_client.api.kill(sandbox.container_id)
    assert sandbox.usage.containers == 1 and sandbox.usage.unmeasured == 1
    assert sandbox.usage.cpu_seconds == 0.0 and sandbox.usage.container_seconds > 0


def test_local_sandbox_reports_its_commands_cpu_and_largest_process(sample_task_dir):
    config = SandboxConfig(backend="local", source=str(sample_task_dir / "repo"))
    usage = _run(config, BURN_ONE_CPU_SECOND + " && " + HOLD_200_MB)
    assert usage.containers == 1 and usage.unmeasured == 0 and usage.memory_source == "max_rss"
    assert 0.7 <= usage.cpu_seconds <= 2.5, usage
    assert usage.memory_peak_bytes >= 200 * 2**20


# ----------------------------------------------------------------------------- parsing

V1 = {"cpu_stats": {"cpu_usage": {"total_usage": 1_234_000_000}},
      "memory_stats": {"usage": 10_000_000, "max_usage": 250_000_000, "limit": 2 << 30, "stats": {"cache": 1}}}
V2 = {"cpu_stats": {"cpu_usage": {"total_usage": 2_500_000_000}},
      "memory_stats": {"usage": 30_000_000, "limit": 2 << 30, "stats": {"anon": 1, "file": 2}}}
STOPPED = {"cpu_stats": {"cpu_usage": {"total_usage": 0}}, "memory_stats": {}}


def test_cgroup_v1_peak_is_the_engines_max_usage():
    assert usage_from_stats(V1) == ResourceUsage(containers=1, cpu_seconds=1.234, memory_peak_bytes=250_000_000,
                                                 memory_source="max_usage")


def test_cgroup_v2_peak_is_memory_peak_or_else_the_usage_at_close():
    assert usage_from_stats(V2, 90_000_000).memory_peak_bytes == 90_000_000
    assert usage_from_stats(V2, 90_000_000).memory_source == "memory.peak"
    fallback = usage_from_stats(V2, None)
    assert (fallback.memory_peak_bytes, fallback.memory_source) == (30_000_000, "usage_at_close")
    assert fallback.cpu_seconds == 2.5


def test_stopped_container_stats_are_unmeasured_not_zero():
    assert usage_from_stats(STOPPED) == ResourceUsage(containers=1, unmeasured=1)
    assert usage_from_stats({}) == ResourceUsage(containers=1, unmeasured=1)
