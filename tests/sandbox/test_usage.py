"""What a sandbox reports it used: checked against known workloads in real containers (a
command that burns ~1 CPU-second, one that holds ~200 MB) by both ways of reading it (the
cgroup files on the engine's machine, the engine's stats), and the parsing of both cgroup
versions' files and engine answers."""

from __future__ import annotations

import pytest

from swe_srl.sandbox import SandboxConfig, open_sandbox
from swe_srl.sandbox.usage import cgroup_usage, engine_stats, usage_from_stats
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
def test_engine_stats_and_the_cgroup_files_agree_on_a_known_burn(task_image, docker_client):
    with open_sandbox(SandboxConfig(image=task_image, cpus=1.0)) as sandbox:
        assert sandbox.exec(BURN_ONE_CPU_SECOND, timeout=60).exit_code == 0
        engine = usage_from_stats(engine_stats(docker_client.api, sandbox.container_id))
        pid = docker_client.api.inspect_container(sandbox.container_id)["State"]["Pid"]
        local = cgroup_usage(pid, sandbox.container_id)
    assert 0.7 <= engine.cpu_seconds <= 2.0 and engine.memory_peak_bytes > 2**20, engine
    if local is None:
        pytest.skip("the engine's cgroup files are not visible from this process (another machine or namespace)")
    assert local.cpu_seconds == pytest.approx(engine.cpu_seconds, abs=0.2)
    assert local.memory_source == engine.memory_source or engine.memory_source == "usage_at_close"


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

CID = "4f" * 32


def _tree(root, cgroup_lines: str, files: dict[str, str]):
    (root / "proc" / "42").mkdir(parents=True)
    (root / "proc" / "42" / "cgroup").write_text(cgroup_lines)
    for name, text in files.items():
        path = root / "sys" / "fs" / "cgroup" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def test_cgroup_v1_files_of_the_containers_init_process(tmp_path):
    root = _tree(tmp_path, f"4:memory:/docker/{CID}\n2:cpu,cpuacct:/docker/{CID}\n1:name=systemd:/docker/{CID}\n",
                 {f"cpu,cpuacct/docker/{CID}/cpuacct.usage": "1500000000\n",
                  f"memory/docker/{CID}/memory.max_usage_in_bytes": "262144000\n"})
    assert cgroup_usage(42, CID, root) == ResourceUsage(containers=1, cpu_seconds=1.5, memory_peak_bytes=262144000,
                                                         memory_source="max_usage")


def test_cgroup_v2_files_with_memory_peak_or_else_the_current_usage(tmp_path):
    scope = f"system.slice/docker-{CID}.scope"
    root = _tree(tmp_path, f"0::/{scope}\n", {f"{scope}/cpu.stat": "usage_usec 2250000\nuser_usec 2000000\n",
                                               f"{scope}/memory.current": "5000000\n"})
    assert cgroup_usage(42, CID, root) == ResourceUsage(containers=1, cpu_seconds=2.25, memory_peak_bytes=5000000,
                                                         memory_source="usage_at_close")
    (root / "sys/fs/cgroup" / scope / "memory.peak").write_text("300000000\n")
    assert cgroup_usage(42, CID, root).memory_peak_bytes == 300000000
    assert cgroup_usage(42, CID, root).memory_source == "memory.peak"


def test_a_process_outside_the_container_is_never_read_as_it(tmp_path):
    """A pid from another pid namespace (or a remote engine's) names some other process here."""
    root = _tree(tmp_path, "4:memory:/user.slice\n2:cpuacct:/user.slice\n0::/user.slice\n",
                 {"cpuacct/user.slice/cpuacct.usage": "9", "memory/user.slice/memory.max_usage_in_bytes": "9",
                  "user.slice/cpu.stat": "usage_usec 9\n"})
    assert cgroup_usage(42, CID, root) is None
    assert cgroup_usage(43, CID, root) is None and cgroup_usage(0, CID, root) is None
    escaped = _tree(tmp_path / "ns", f"0::/../../docker-{CID}.scope\n", {})
    assert cgroup_usage(42, CID, escaped) is None  # a path outside this process's cgroup view

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
