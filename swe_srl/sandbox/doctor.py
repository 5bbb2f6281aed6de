"""`swe-srl doctor`: is this machine ready to train and run sandboxed episodes?

Each check says what it found and, when something is wrong, what to run. Only the Docker
engine and the base image are required (episodes and grading cannot run without them; task
images are built from it when a task needs them); the rest (missing task images, GPU,
optional packages, headroom, image bytes over the budget) are reported as warnings."""

from __future__ import annotations

import importlib.metadata
import os
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from ..errors import InfrastructureError
from ..paths import TASKS_DIR
from .client import docker_client
from .images.build import base_image_tag, image_exists, task_dirs, task_image_tag
from .images.cache import ImageCache
from .images.disk import human_bytes
from .reaper import LABEL_PID, owner_alive

Status = Literal["ok", "warn", "fail"]
PACKAGES = ("torch", "transformers", "trl", "peft", "vllm", "swebench", "docker")
_GIB = 1 << 30


@dataclass(frozen=True)
class Check:
    """One line of the doctor's table; ``fix`` says what to do when status is not ok."""

    name: str
    status: Status
    detail: str
    fix: str = ""


def _engine() -> list[Check]:
    try:
        client = docker_client()
        version = client.version()
    except InfrastructureError as exc:
        return [Check("docker engine", "fail", str(exc), "sudo bash environments/setup-docker.sh")]
    detail = f"{version.get('Version', '?')} (API {version.get('ApiVersion', '?')})"
    return [Check("docker engine", "ok", detail)]


def _images(tasks_dir: Path) -> list[Check]:
    base = base_image_tag()
    if not image_exists(base):
        return [Check("base image", "fail", f"{base} missing", "swe-srl env build")]
    checks = [Check("base image", "ok", base)]
    folders = task_dirs(tasks_dir)
    missing = [f.name for f in folders if not image_exists(task_image_tag(f, base))]
    if not folders:
        checks.append(Check("task images", "warn", f"no task folders under {tasks_dir}"))
    elif missing:  # built from the base image offline when a task needs them (or evicted under a budget)
        checks.append(Check("task images", "warn", f"{len(missing)}/{len(folders)} not built: {', '.join(missing[:3])}"
                            + (" ..." if len(missing) > 3 else "") + " (built when a task needs them)",
                            "swe-srl env build"))
    else:
        checks.append(Check("task images", "ok", f"{len(folders)} built"))
    return checks


def _leftovers() -> list[Check]:
    summaries = docker_client().api.containers(all=True, filters={"label": LABEL_PID})
    dead = [s for s in summaries if not owner_alive(s.get("Labels") or {})]
    if dead:
        return [Check("sandbox containers", "warn", f"{len(summaries)} present, {len(dead)} left by dead runs",
                      "they are removed when the next sandbox starts (or: docker rm -f $(docker ps -aq "
                      "--filter label=swe-srl.owner-pid))")]
    return [Check("sandbox containers", "ok", f"{len(summaries)} running")]


def _image_cache(budget_gb: float | None) -> list[Check]:
    usage = ImageCache.of(budget_gb).usage()
    pinned = sum(1 for i in usage.images if i.pinned)
    detail = (f"{human_bytes(usage.total_bytes)} in {len(usage.images)} project images "
              f"({pinned} pinned: {human_bytes(usage.pinned_bytes)})")
    if usage.budget_bytes is None:
        return [Check("image cache", "ok", detail + ", no budget")]
    detail += f" of a {human_bytes(usage.budget_bytes)} budget"
    if usage.pinned_bytes > usage.budget_bytes:
        return [Check("image cache", "fail", detail, "raise the budget: base images and images in use cannot go")]
    if usage.over_budget:
        return [Check("image cache", "warn", detail,
                      f"swe-srl env prune --budget {budget_gb:g} (or the next run evicts)")]
    return [Check("image cache", "ok", detail)]


def _disk() -> list[Check]:
    root = docker_client().info().get("DockerRootDir", "/var/lib/docker")
    path = root if os.path.exists(root) else "/"
    free = shutil.disk_usage(path).free / _GIB
    if free < 2:
        return [Check("disk headroom", "fail", f"{free:.1f} GiB free at {path}",
                      "free disk space (docker image prune)")]
    status: Status = "warn" if free < 10 else "ok"
    return [Check("disk headroom", status, f"{free:.1f} GiB free at {path}",
                  "keep >= 10 GiB for images" if status == "warn" else "")]


def _machine() -> list[Check]:
    cores = os.cpu_count() or 0
    mem = 0.0
    try:
        with open("/proc/meminfo") as fh:
            mem = int(fh.readline().split()[1]) * 1024 / _GIB
    except (OSError, ValueError, IndexError):
        pass
    return [Check("cpu cores", "ok" if cores >= 2 else "warn", str(cores), "episodes in parallel want >= 2 cores"),
            Check("memory", "ok" if mem >= 8 or not mem else "warn", f"{mem:.1f} GiB" if mem else "unknown",
                  "each sandbox may use its mem_limit (default 2g)")]


def _gpu() -> list[Check]:
    try:
        import torch
    except ImportError:
        return [Check("gpu", "warn", "torch not installed", "pip install 'swe-srl[train]'")]
    if torch.cuda.is_available():
        names = ", ".join(torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count()))
        return [Check("gpu", "ok", names)]
    return [Check("gpu", "warn", "no CUDA device (CPU training only: tiny models)", "")]


def _packages() -> list[Check]:
    found = []
    for name in PACKAGES:
        try:
            found.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            found.append(f"{name} -")
    return [Check("packages", "ok", ", ".join(found))]


def run_checks(tasks_dir: Path | str = TASKS_DIR, budget_gb: float | None = None) -> list[Check]:
    """All checks, in display order; ``budget_gb``: the image budget to report usage against.
    Checks that need the engine are skipped without one."""
    checks = _engine()
    engine_ok = checks[0].status == "ok"
    steps: list[Callable[[], list[Check]]] = [_machine, _gpu, _packages]
    if engine_ok:
        steps = [lambda: _images(Path(tasks_dir)), lambda: _image_cache(budget_gb), _leftovers, _disk, *steps]
    for step in steps:
        try:
            checks.extend(step())
        except InfrastructureError as exc:
            checks.append(Check(step.__name__.strip("_") or "check", "fail", str(exc)))
    return checks
