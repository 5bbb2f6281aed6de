"""Sandbox images: the base definition names no mirror host and debootstrap gets none unless the
user gives one; `python` is python3 in the base image; building leaves no build container behind,
and `swe-srl env build` removes those that killed builds left."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import time
import uuid
from dataclasses import replace

import pytest

from swe_srl.errors import InfrastructureError
from swe_srl.leaks.fetch import CODE_HOSTS
from swe_srl.paths import REPO_ROOT
from swe_srl.sandbox import SandboxConfig, open_sandbox
from swe_srl.sandbox.images.build import (
    MIRROR_ENV,
    BaseSpec,
    build_all,
    build_task_image,
    debootstrap_argv,
    resolve_mirror,
)
from swe_srl.sandbox.images.commit import BUILD_PREFIX, LABEL_KIND, build_container_name, host_id, is_leftover
from swe_srl.sandbox.reaper import LABEL_RUN

# ------------------------------------------------------------------ no host names, no mirror

# Where the project writes code, docs and tests (the tokenizer corpus is frozen data: left out).
SCANNED = ("swe_srl", "environments", "tests", "benchmarks", ".ci", "README.md", "pyproject.toml",
           "docker-compose.yml")
FROZEN = {REPO_ROOT / "swe_srl" / "data" / "tiny_corpus.txt.gz"}
_URL = re.compile(r"\b[a-z][a-z0-9+.-]*://(?:[^/@\s]*@)?([a-z0-9{$\[][^/:\s'\"`)>\],;]*)", re.IGNORECASE)
_DOMAIN = re.compile(r"\b(?:[a-z0-9-]+\.)+(?:org|com|net|io|dev|edu|gov)\b", re.IGNORECASE)
# Hosts a URL may name: this machine, the compose services, reserved example names.
_LOCAL_HOSTS = {"localhost", "127.0.0.1", "0.0.0.0", "vllm"}
# `docker.io` is the Debian package of the engine (apt-get install docker.io).
_PACKAGE_NAMES = {"docker.io"}
# Code hosts (no registry, no mirror): the leaky-trajectory scan must name them to see an expert
# fetching the fix from one (swe_srl/leaks/fetch.py); nothing downloads from them.
_CODE_HOSTS = tuple(CODE_HOSTS)


def _scanned_files():
    for entry in SCANNED:
        path = REPO_ROOT / entry
        files = [path] if path.is_file() else sorted(path.rglob("*"))
        for file in files:
            if file.is_file() and file not in FROZEN and "__pycache__" not in file.parts:
                data = file.read_bytes()
                if b"\0" not in data:
                    yield file, data.decode("utf-8", errors="replace")


def _foreign_hosts(text: str) -> set[str]:
    found = set()
    for host in _URL.findall(text):
        host = host.lower()
        if host in _LOCAL_HOSTS or host.endswith((".invalid", ".example", ".test")) or "{" in host or "$" in host:
            continue
        found.add(host)
    found |= {d.lower() for d in _DOMAIN.findall(text)} - _PACKAGE_NAMES
    return {h for h in found if not re.fullmatch(r"example\.(com|org|net)", h)
            and not any(h == c or h.endswith("." + c) for c in _CODE_HOSTS)}


def test_no_mirror_or_registry_host_is_named_in_code_docs_or_tests():
    # The Debian mirror's host used to be written into base.toml and images.py.
    hits = {str(path.relative_to(REPO_ROOT)): sorted(hosts) for path, text in _scanned_files()
            if (hosts := _foreign_hosts(text))}
    assert hits == {}


def test_host_scan_sees_urls_and_bare_domains():
    # Made-up hosts, put together here so that this file names none.
    mirror, index, bare = (".".join(parts) for parts in (("ftp", "mirror-host", "org"), ("pkgs", "corp", "net"),
                                                          ("files", "cdn", "com")))
    assert _foreign_hosts(f'mirror = "http://{mirror}/debian"') == {mirror}
    assert _foreign_hosts(f"pip install --index-url https://user@{index}:8443/simple") == {index}
    assert _foreign_hosts(f"fetch from {bare}") == {bare}
    assert _foreign_hosts("http://127.0.0.1:8000/v1 http://vllm:8000 https://example.invalid/r.git "
                          "apt-get install docker.io; must start with http:// or https://, got") == set()


def test_base_definition_sets_no_mirror():
    assert BaseSpec.load().mirror is None


def test_debootstrap_without_a_mirror_gets_no_mirror_argument():
    spec = BaseSpec.load()
    argv = debootstrap_argv(spec, "/tmp/rootfs")
    assert argv == ["debootstrap", f"--variant={spec.variant}", f"--include={','.join(spec.packages)}",
                    spec.suite, "/tmp/rootfs"]
    assert debootstrap_argv(spec, "/tmp/rootfs", "http://mirror.invalid/debian")[-1] == "http://mirror.invalid/debian"


def test_mirror_comes_from_the_user_only(monkeypatch):
    spec = BaseSpec.load()
    monkeypatch.delenv(MIRROR_ENV, raising=False)
    assert resolve_mirror(spec) is None
    monkeypatch.setenv(MIRROR_ENV, "http://env.invalid/debian")
    assert resolve_mirror(spec) == "http://env.invalid/debian"
    assert resolve_mirror(spec, "http://flag.invalid/debian") == "http://flag.invalid/debian"
    monkeypatch.delenv(MIRROR_ENV)
    assert resolve_mirror(replace(spec, mirror="http://toml.invalid/debian")) == "http://toml.invalid/debian"


def test_mirror_argument_reaches_the_rootfs_build(monkeypatch, tmp_path):
    # The user's mirror (flag or environment) is the last debootstrap argument; none means none.
    from swe_srl.sandbox.images import build as images

    seen = []

    def fake_run(cmd, **kwargs):
        if cmd[0] == "debootstrap":
            seen.append(cmd)
            return subprocess.CompletedProcess(cmd, 1, "", "stop here")
        raise AssertionError(cmd)

    monkeypatch.setattr(images.shutil, "which", lambda name: "/usr/sbin/" + name)
    monkeypatch.setattr(images.os, "geteuid", lambda: 0)
    monkeypatch.setattr(images.subprocess, "run", fake_run)
    monkeypatch.setenv("SWE_SRL_CACHE", str(tmp_path))
    spec = BaseSpec.load()
    for mirror in (None, "http://mirror.invalid/debian"):
        with pytest.raises(InfrastructureError, match="debootstrap failed"):
            images._rootfs_tarball(spec, mirror, lambda line: None, force=True)
    assert seen[0][-1].endswith("rootfs") and seen[1][-1] == "http://mirror.invalid/debian"


def test_mirror_is_not_part_of_the_base_tag():
    spec = BaseSpec.load()
    assert replace(spec, mirror="http://other.invalid/debian").digest("debootstrap") == spec.digest("debootstrap")


def test_adding_python_is_python3_gives_the_base_image_a_new_tag():
    # Machines with the old base image build the new one: its tag is a hash of the package list.
    spec = BaseSpec.load()
    assert "python-is-python3" in spec.packages
    without = replace(spec, packages=tuple(p for p in spec.packages if p != "python-is-python3"))
    assert without.digest("debootstrap") != spec.digest("debootstrap")
    assert without.rootfs_digest() != spec.rootfs_digest()


# ------------------------------------------------------------------ build containers (pure)


def _summary(name: str = "", state: str = "exited", labels: dict | None = None, age: float = 0.0) -> dict:
    return {"Id": uuid.uuid4().hex, "Names": [f"/{name or 'eager_turing'}"], "State": state,
            "Labels": labels if labels is not None else {LABEL_KIND: "base"}, "Created": time.time() - age}


def _dead_pid() -> int:
    done = subprocess.Popen(["true"])
    done.wait()
    return done.pid


def test_leftover_rules():
    dead = f"{BUILD_PREFIX}{host_id()}-{_dead_pid()}-1-abcdef"
    assert is_leftover(_summary(dead, labels={LABEL_KIND: "task"}))
    assert not is_leftover(_summary(dead, state="running"))
    assert not is_leftover(_summary(build_container_name()))  # this process builds in it
    assert not is_leftover(_summary(f"{BUILD_PREFIX}{host_id('elsewhere')}-1-1-abcdef"))  # another host's
    # The engine's builder: its containers carry the base image's labels and no run id.
    assert is_leftover(_summary(age=3600))
    assert not is_leftover(_summary(age=5))  # may be a live build of an older swe-srl
    assert not is_leftover(_summary(labels={LABEL_KIND: "task", LABEL_RUN: "r"}, age=3600))  # a sandbox
    assert not is_leftover(_summary(labels={}, age=3600))  # not ours at all


# ------------------------------------------------------------------ against the engine


def _build_containers(client, since: float) -> list[dict]:
    """Stopped containers of swe-srl images that are no sandbox, created since ``since``."""
    found = client.api.containers(all=True, filters={"label": LABEL_KIND})
    return [c for c in found if c["State"] != "running" and LABEL_RUN not in (c.get("Labels") or {})
            and c["Created"] >= int(since) - 1]


@pytest.mark.docker
def test_python_is_python3_in_the_base_image(base_image):
    # A task whose test command says `python -m pytest` was an infrastructure failure.
    with open_sandbox(SandboxConfig(image=base_image)) as box:
        result = box.exec("python -c 'import sys; print(sys.version_info[0])'")
    assert (result.exit_code, result.output) == (0, "3\n")


@pytest.mark.docker
def test_task_image_build_leaves_no_build_container(docker_client, base_image, sample_task_dir):
    before = build_task_image(sample_task_dir, base_tag=base_image)
    replaced = docker_client.images.get(before).id
    started = time.time()
    tag = build_task_image(sample_task_dir, base_tag=base_image, force=True)  # a real build, not a cache hit
    image = docker_client.images.get(tag)
    assert image.id != replaced and image.labels == {LABEL_KIND: "task", "swe-srl.task": sample_task_dir.name}
    assert _build_containers(docker_client, started) == []
    assert docker_client.api.containers(all=True, filters={"name": BUILD_PREFIX}) == []
    try:
        docker_client.images.remove(replaced)  # untagged now: do not leave it behind either
    except Exception:
        pass  # still used by a container of another test


@pytest.mark.docker
def test_failed_task_image_build_leaves_no_build_container(docker_client, base_image, sample_task_dir, tmp_path):
    broken = tmp_path / "broken-task"
    shutil.copytree(sample_task_dir, broken)
    subprocess.run(["git", "init", "-q", str(broken / "repo" / "vendored")], check=True)  # no commit: `git add` fails
    started = time.time()
    with pytest.raises(InfrastructureError, match="exited"):
        build_task_image(broken, base_tag=base_image, force=True)
    assert _build_containers(docker_client, started) == []
    assert docker_client.api.containers(all=True, filters={"name": BUILD_PREFIX}) == []


@pytest.mark.docker
def test_env_build_removes_build_containers_a_killed_build_left(docker_client, base_image, sample_task_dir):
    # Setup left exited build containers labelled swe-srl.kind=base behind.
    def stopped_build_container(name: str) -> str:
        container = docker_client.containers.create(base_image, command=["true"], name=name,
                                                    labels={LABEL_KIND: "task"}, network_mode="none")
        container.start()
        container.wait(timeout=60)
        return container.id

    orphan = stopped_build_container(f"{BUILD_PREFIX}{host_id()}-{_dead_pid()}-1-{uuid.uuid4().hex[:6]}")
    live = stopped_build_container(build_container_name())  # a build of a live process: kept
    try:
        build_all(sample_task_dir.parent, only=sample_task_dir.name)
        remaining = {c["Id"] for c in docker_client.api.containers(all=True, filters={"name": BUILD_PREFIX})}
        assert orphan not in remaining and live in remaining
    finally:
        for cid in (orphan, live):
            subprocess.run(["docker", "rm", "-f", cid], capture_output=True)


@pytest.mark.docker
def test_task_folder_without_base_commit_builds_and_grades(tmp_path):
    from swe_srl.sandbox.grading import grade
    from swe_srl.sandbox.images.source import ensure_image
    from swe_srl.tasks import load_local_task

    source = REPO_ROOT / "environments" / "tasks" / "swe-srl-demo__datekit-1"
    folder = tmp_path / source.name
    shutil.copytree(source, folder)
    record = json.loads((folder / "task.json").read_text())
    expected = record.pop("base_commit")
    (folder / "task.json").write_text(json.dumps(record))
    task = load_local_task(folder)
    assert task.base_commit == expected
    image = ensure_image(task)
    with open_sandbox(SandboxConfig(image=image)) as box:
        assert box.base_commit == task.base_commit
    report = grade(task, task.patch)
    assert report.infra_error is None and report.resolved, report.log_tail


@pytest.mark.docker
def test_a_removed_task_image_named_by_its_tag_is_rebuilt_offline_not_pulled(base_image, docker_client, tmp_path):
    from dataclasses import replace

    from swe_srl.sandbox.images.source import ensure_image, expected_image_tag
    from swe_srl.tasks import load_local_task

    folder = tmp_path / "evicted-datekit"  # a tag of its own: the demo task's image is not touched
    shutil.copytree(REPO_ROOT / "environments" / "tasks" / "swe-srl-demo__datekit-1", folder)
    task = load_local_task(folder)
    tag = expected_image_tag(task)
    assert ensure_image(task) == tag
    try:
        docker_client.images.remove(tag)  # as the image cache evicts it
        assert ensure_image(replace(task, image=tag)) == tag  # grading names the tag: rebuilt, same one
        with open_sandbox(SandboxConfig(image=tag)) as box:
            assert box.base_commit == task.base_commit
    finally:
        if docker_client.images.list(name=tag):
            docker_client.images.remove(tag)
