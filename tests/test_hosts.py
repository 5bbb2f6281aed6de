"""Episodes over two Docker engines on a local two-node Ray cluster: a second engine (own socket,
data-root, exec-root, pidfile and bridge) is started by the fixture beside the machine's own.
Expert replays spread over both (counted per host, all resolved, nothing left behind); an
engine stopped mid-run turns its episodes into infrastructure failures while the others
finish, and a resume completes the rest."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from swe_srl.errors import ConfigError
from swe_srl.evaluate import EvalConfig, evaluate_tasks, instance_dir
from swe_srl.experts import ExpertReplay, load_scripts
from swe_srl.hosts import RESOURCE_PREFIX, HostsConfig
from swe_srl.tasks import load_tasks

DEMO = load_tasks("demo")
BRIDGE = "swesrl-d2"
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def test_hosts_config_parses_and_refuses_bad_entries():
    assert HostsConfig(hosts=("a=unix:///var/run/docker.sock", "b=ssh://me@box1.example")).entries() == [
        ("a", "unix:///var/run/docker.sock"), ("b", "ssh://me@box1.example")]
    assert HostsConfig().entries() == [("local", "")]
    with pytest.raises(ConfigError, match="plain TCP Docker socket"):
        HostsConfig(hosts=("a=tcp://gpu-box.example:2375",))
    with pytest.raises(ConfigError, match="duplicate"):
        HostsConfig(hosts=("a=", "a=unix:///x"))
    with pytest.raises(ConfigError, match="backend"):
        HostsConfig(backend="k8s")


class Engine:
    """A second dockerd on this machine, started and stopped by the test."""

    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="ssd2-", dir="/tmp"))  # socket paths must stay short
        self.socket = self.root / "docker.sock"
        self.url = f"unix://{self.socket}"
        self.proc: subprocess.Popen | None = None

    def start(self) -> None:
        if subprocess.run(["ip", "link", "show", BRIDGE], capture_output=True).returncode != 0:
            subprocess.run(["ip", "link", "add", BRIDGE, "type", "bridge"], check=True)
            subprocess.run(["ip", "addr", "add", "172.29.77.1/24", "dev", BRIDGE], check=True)
            subprocess.run(["ip", "link", "set", BRIDGE, "up"], check=True)
        log = (self.root / "dockerd.log").open("a")
        self.proc = subprocess.Popen(
            ["dockerd", "--host", self.url, "--data-root", str(self.root / "data"), "--exec-root",
             str(self.root / "exec"), "--pidfile", str(self.root / "docker.pid"), "--bridge", BRIDGE,
             "--iptables=false", "--ip-masq=false"], stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + 60
        while subprocess.run(["docker", "-H", self.url, "info"], capture_output=True).returncode != 0:
            if self.proc.poll() is not None or time.monotonic() > deadline:
                pytest.fail(f"second dockerd did not come up: {(self.root / 'dockerd.log').read_text()[-1500:]}")
            time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def containers(self) -> list[str]:
        return _ray_run_containers(self.url)


def _ray_run_containers(url: str = "unix:///var/run/docker.sock") -> list[str]:
    """Containers a Ray host pool made (run ids ``ray-...``) on the engine at ``url``; other
    tests' and other jobs' sandboxes on the shared engine do not count."""
    out = subprocess.run(["docker", "-H", url, "ps", "-a", "--filter", "label=swe-srl.run-id",
                          "--format", '{{.ID}} {{.Label "swe-srl.run-id"}}'], capture_output=True, text=True,
                          check=True)
    return [line.split()[0] for line in out.stdout.splitlines()
            if line.split()[1:2] and line.split()[1].startswith("ray-")]


@pytest.fixture(scope="module")
def engines(docker_client, base_image):
    if shutil.which("dockerd") is None or os.geteuid() != 0:
        pytest.skip("a second engine needs dockerd and root")
    pytest.importorskip("ray")
    second = Engine()
    second.start()
    yield "unix:///var/run/docker.sock", second
    second.stop()
    subprocess.run(["ip", "link", "delete", BRIDGE], capture_output=True)
    shutil.rmtree(second.root, ignore_errors=True)


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes on this machine, each offering one Docker host's resource."""
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    nodes = Cluster(initialize_head=True, head_node_args={
        "num_cpus": 1, "resources": {RESOURCE_PREFIX + "a": 1}, "include_dashboard": False})
    nodes.add_node(num_cpus=1, resources={RESOURCE_PREFIX + "b": 1})
    ray.init(address=nodes.address, log_to_driver=False)
    yield nodes
    ray.shutdown()
    nodes.shutdown()


def _config(engines, **overrides) -> EvalConfig:
    first, second = engines
    hosts = HostsConfig(backend="ray", hosts=(f"a={first}", f"b={second.url}"), episodes_per_host=2, **overrides)
    return EvalConfig(hosts=hosts, model_name="expert-script")


def _replay(tasks):
    return ExpertReplay.from_scripts(load_scripts(tasks), tasks).policy()


@pytest.mark.docker
def test_expert_replays_spread_over_two_engines(engines, cluster, tmp_path, docker_client):
    summary = evaluate_tasks(_replay(DEMO), DEMO, tmp_path, _config(engines), thread_safe_policy=True)
    assert summary["resolved"] == summary["graded"] == len(DEMO), summary["infrastructure_errors"]
    assert set(summary["per_host"]) == {"a", "b"} and sum(summary["per_host"].values()) == len(DEMO)
    assert min(summary["per_host"].values()) >= 2  # least-loaded scheduling uses both
    hosts = {json.loads((instance_dir(tmp_path, t.instance_id) / "result.json").read_text())["host"] for t in DEMO}
    assert hosts == {"a", "b"}
    assert engines[1].containers() == [] and _ray_run_containers() == []
    # What every container used came back from its host: the agent's sandbox and the grading one.
    cost = summary["cost"]["graded"]
    assert cost["containers"] == 2 * len(DEMO) and cost["unmeasured_containers"] == 0 and cost["cpu_seconds"] > 0


@pytest.mark.docker
def test_engine_stopped_mid_run_fails_its_episodes_and_resume_completes(engines, cluster, tmp_path, docker_client):
    second = engines[1]
    seen = []

    def stop_second_engine_once(result):
        seen.append(result.instance_id)
        if len(seen) == 1:
            second.stop()

    try:
        summary = evaluate_tasks(_replay(DEMO), DEMO, tmp_path, _config(engines), thread_safe_policy=True,
                                 on_result=stop_second_engine_once)
        lost = summary["infrastructure_failures"]
        assert summary["finished"] == len(DEMO) and summary["resolved"] == len(DEMO) - lost
        assert lost >= 1 and all("host b" in e or "b" in e for e in summary["infrastructure_errors"].values())
        assert summary["per_host"].get("a", 0) >= len(DEMO) - lost - 2  # a took over
        assert _ray_run_containers() == []
    finally:
        second.start()
    resumed = evaluate_tasks(_replay(DEMO), DEMO, tmp_path, _config(engines), thread_safe_policy=True)
    assert resumed["resolved"] == len(DEMO) and resumed["infrastructure_failures"] == 0
    assert resumed["resumed_from_previous_run"] == len(DEMO) - lost
    assert second.containers() == [] and _ray_run_containers() == []


def test_the_actor_and_driver_halves_import_apart_and_without_ray():
    """Ray ships HostWorker to a fresh worker by its import path; the package's names stay where
    ``from swe_srl.hosts import ...`` finds them, and importing it starts no Ray."""
    code = ("import json, sys\nimport swe_srl.hosts as h\n"
            "print(json.dumps([h.HostWorker.__module__, h.HostPool.__module__, h.RemoteSandbox.__module__, "
            "h.HostsConfig.__module__, 'ray' in sys.modules]))")
    out = subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True).stdout
    assert json.loads(out.strip().splitlines()[-1]) == [
        "swe_srl.hosts.actor", "swe_srl.hosts.pool", "swe_srl.hosts.pool", "swe_srl.hosts.config", False]
