"""How the project's images are defined and built: the base image (offline: debootstrap ->
docker import; or the Dockerfile on machines with a registry) and one task image per demo task
folder.

Tags are content hashes of what defines the image, so a changed definition gives a new tag and
an unchanged one is never rebuilt:

* ``swe-srl/base:<hash of environments/base/{base.toml,gitconfig} + method>``
* ``swe-srl/task-<id>:<hash of the task folder + base tag>``

A task image is the base image with ``repo/`` copied to /testbed and committed once with fixed
author, dates and message (:data:`BASE_COMMIT_ENV`), so the base commit hash depends only on
the files: :func:`compute_base_commit` gives the same hash on the host.

Whether a task's image is built or pulled, and under which tag, is decided in :mod:`.source`.
"""

from __future__ import annotations

import hashlib
import io
import json
import logging
import os
import re
import shlex
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import tomllib

from ...errors import ConfigError, InfrastructureError, InputError
from ...paths import REPO_ROOT, TASKS_DIR
from ..client import docker_client, infra_error
from .commit import LABEL_KIND, commit_image, remove_leftovers, root_owned

log = logging.getLogger(__name__)

BASE_DIR = REPO_ROOT / "environments" / "base"
BASE_REPOSITORY = "swe-srl/base"
BuildMethod = Literal["debootstrap", "dockerfile"]
# Bump when a build procedure changes in a way the definition files do not show.
_RECIPE_VERSION = "1"
_TASK_RECIPE_VERSION = "3"
# A Debian mirror for debootstrap (else: debootstrap's own default).
MIRROR_ENV = "SWE_SRL_DEBIAN_MIRROR"

# Environment of the one commit of a task repository: fixed identity and dates make the commit
# hash a function of the files alone. Global/system config is ignored so that a developer's
# excludesFile or autocrlf cannot change which files are committed or how.
BASE_COMMIT_ENV = {
    "GIT_AUTHOR_NAME": "swe-srl",
    "GIT_AUTHOR_EMAIL": "swe-srl@localhost",
    "GIT_COMMITTER_NAME": "swe-srl",
    "GIT_COMMITTER_EMAIL": "swe-srl@localhost",
    "GIT_AUTHOR_DATE": "2020-01-01T00:00:00Z",
    "GIT_COMMITTER_DATE": "2020-01-01T00:00:00Z",
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_CONFIG_GLOBAL": "/dev/null",
}
BASE_COMMIT_SCRIPT = (
    "rm -rf .git && git init -q -b main && git add -A && "
    "git -c commit.gpgsign=false commit -q --allow-empty --no-verify -m base && rm -rf .git/logs"
)

# What the engine's builder wrote into task images' config (the imported base has no PATH).
_DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

Log = Callable[[str], None]


@dataclass(frozen=True)
class BaseSpec:
    """What environments/base/base.toml defines."""

    suite: str
    variant: str
    packages: tuple[str, ...]
    env: dict
    gitconfig: str
    mirror: str | None = None  # not part of any hash: every mirror of a suite gives the same rootfs

    @classmethod
    def load(cls, base_dir: Path = BASE_DIR) -> BaseSpec:
        toml_path = base_dir / "base.toml"
        try:
            data = tomllib.loads(toml_path.read_text())
            gitconfig = (base_dir / "gitconfig").read_text()
        except FileNotFoundError as exc:
            raise InputError(f"base image definition missing: {exc.filename}") from exc
        except tomllib.TOMLDecodeError as exc:
            raise ConfigError(f"{toml_path}: {exc}") from exc
        return cls(suite=data["suite"], variant=data.get("variant", "minbase"),
                   packages=tuple(data.get("packages", ())), env=dict(data.get("env", {})),
                   gitconfig=gitconfig, mirror=data.get("mirror") or None)

    def rootfs_digest(self) -> str:
        """Hash of what the debootstrap rootfs holds (the image's ENV is not in it)."""
        payload = {"suite": self.suite, "variant": self.variant, "packages": sorted(self.packages),
                   "gitconfig": self.gitconfig, "recipe": _RECIPE_VERSION}
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]

    def digest(self, method: BuildMethod) -> str:
        payload: dict[str, Any]
        if method == "dockerfile":
            payload = {"dockerfile": (BASE_DIR / "Dockerfile").read_text(), "gitconfig": self.gitconfig}
        else:
            payload = {"suite": self.suite, "variant": self.variant, "packages": sorted(self.packages),
                       "env": self.env, "gitconfig": self.gitconfig}
        payload["recipe"] = _RECIPE_VERSION
        payload["method"] = method
        return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()[:12]


def cache_dir() -> Path:
    """Where rootfs tarballs are cached (``$SWE_SRL_CACHE`` or ~/.cache/swe-srl)."""
    return Path(os.environ.get("SWE_SRL_CACHE") or Path.home() / ".cache" / "swe-srl")


def base_image_tag(method: BuildMethod = "debootstrap") -> str:
    """The tag the current base definition builds to (whether built or not)."""
    return f"{BASE_REPOSITORY}:{BaseSpec.load().digest(method)}"


def image_exists(tag: str) -> bool:
    """True when the engine has an image with this tag."""
    import docker.errors

    try:
        docker_client().images.get(tag)
    except docker.errors.ImageNotFound:
        return False
    except docker.errors.APIError as exc:
        raise infra_error(f"inspecting image {tag}", exc) from exc
    return True


def build_base_image(method: BuildMethod = "debootstrap", *, force: bool = False,
                     mirror: str | None = None, echo: Log = log.info) -> str:
    """Build the base sandbox image unless its tag exists; return the tag.
    ``mirror``: the Debian mirror for debootstrap (see :func:`resolve_mirror`)."""
    spec = BaseSpec.load()
    tag = f"{BASE_REPOSITORY}:{spec.digest(method)}"
    if not force and image_exists(tag):
        return tag
    if method == "dockerfile":
        _docker_build(BASE_DIR, tag, echo)
        return tag
    rootfs_tar = _rootfs_tarball(spec, resolve_mirror(spec, mirror), echo, force=force)
    changes = [f"ENV {k}={json.dumps(str(v))}" for k, v in spec.env.items()]
    changes += ["WORKDIR /testbed", 'CMD ["sleep", "infinity"]', "LABEL swe-srl.kind=base"]
    echo(f"importing {rootfs_tar} as {tag}")
    repository, _, version = tag.partition(":")
    try:
        docker_client().api.import_image_from_file(str(rootfs_tar), repository=repository,
                                                   tag=version, changes=changes)
    except Exception as exc:
        raise infra_error(f"docker import of {rootfs_tar}", exc) from exc
    if not image_exists(tag):
        raise InfrastructureError(f"docker import finished but {tag} is not there")
    return tag


def resolve_mirror(spec: BaseSpec, mirror: str | None = None) -> str | None:
    """The mirror to debootstrap from: ``mirror``, else ``$SWE_SRL_DEBIAN_MIRROR``, else base.toml's,
    else None (debootstrap's own default: no host name of ours anywhere)."""
    return mirror or os.environ.get(MIRROR_ENV) or spec.mirror or None


def debootstrap_argv(spec: BaseSpec, root: Path | str, mirror: str | None = None) -> list[str]:
    """The debootstrap command for ``spec`` into ``root``; without a mirror, debootstrap's default."""
    argv = ["debootstrap", f"--variant={spec.variant}", f"--include={','.join(spec.packages)}",
            spec.suite, str(root)]
    return argv + [mirror] if mirror else argv


def _rootfs_tarball(spec: BaseSpec, mirror: str | None, echo: Log, *, force: bool) -> Path:
    """debootstrap a rootfs and tar it, cached by the definition's hash."""
    target = cache_dir() / f"rootfs-{spec.rootfs_digest()}.tar"
    if target.exists() and not force:
        echo(f"using cached rootfs {target}")
        return target
    if shutil.which("debootstrap") is None:
        raise InfrastructureError("debootstrap is not installed: run `sudo bash environments/setup-docker.sh` "
                                  "(or build environments/base/Dockerfile where a registry is reachable)")
    if os.geteuid() != 0:
        raise InfrastructureError("building the base image offline needs root (debootstrap makes a chroot)")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="swe-srl-rootfs-", dir=target.parent) as tmp:
        root = Path(tmp) / "rootfs"
        cmd = debootstrap_argv(spec, root, mirror)
        echo("running " + " ".join(cmd) + " (~1 min)")
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            tail = (done.stdout + done.stderr).strip().splitlines()[-3:]
            raise InfrastructureError(f"debootstrap failed ({done.returncode}): {' | '.join(tail)}")
        _finish_rootfs(root, spec)
        partial = Path(tmp) / "rootfs.tar"
        subprocess.run(["tar", "-C", str(root), "--numeric-owner", "-cf", str(partial), "."], check=True)
        os.replace(partial, target)  # atomic: a killed build never leaves a half tarball
    return target


def _finish_rootfs(root: Path, spec: BaseSpec) -> None:
    (root / "etc" / "gitconfig").write_text(spec.gitconfig)
    (root / "testbed").mkdir(exist_ok=True)
    for junk in ("var/cache/apt/archives", "var/lib/apt/lists"):
        for item in (root / junk).glob("*"):
            if item.is_file():
                item.unlink()


def _docker_build(context: Path, tag: str, echo: Log) -> None:
    echo(f"building {tag}")
    try:
        docker_client().images.build(path=str(context), tag=tag, rm=True, forcerm=True)
    except Exception as exc:
        raise infra_error(f"building image {tag}", exc) from exc


# --------------------------------------------------------------------------- task images


def _hash_tree(folder: Path, h: hashlib._Hash) -> None:
    for path in sorted(folder.rglob("*")):
        if path.is_symlink():
            h.update(f"L {path.relative_to(folder)} {os.readlink(path)}\n".encode())
        elif path.is_file():
            mode = "x" if os.access(path, os.X_OK) else "f"
            h.update(f"{mode} {path.relative_to(folder)} {path.stat().st_size}\n".encode())
            h.update(path.read_bytes())


def task_image_tag(task_dir: Path, base_tag: str) -> str:
    """``swe-srl/task-<id>:<hash>`` for a task folder on top of ``base_tag``."""
    task_dir = Path(task_dir)
    h = hashlib.sha256(f"{base_tag}\n{_TASK_RECIPE_VERSION}\n".encode())
    _hash_tree(task_dir, h)
    name = re.sub(r"[^a-z0-9_.-]+", "-", task_dir.name.lower()).strip("-.") or "task"
    return f"swe-srl/task-{name}:{h.hexdigest()[:12]}"


def _repo_archive(repo: Path) -> bytes:
    """repo/'s contents (not the folder itself: /testbed keeps its own mode) as root's files."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for child in sorted(repo.iterdir()):
            tar.add(str(child), arcname=child.name, filter=root_owned)
    return buf.getvalue()


def build_task_image(task_dir: Path | str, *, base_tag: str | None = None, force: bool = False,
                     echo: Log = log.info) -> str:
    """Build the image of one task folder (``task.json`` + ``repo/``) unless it exists; return its tag.

    The base image is built first if it is missing. The build runs in a container of our own,
    removed whatever happens (see :mod:`~swe_srl.sandbox.images.commit`)."""
    task_dir = Path(task_dir)
    if not (task_dir / "repo").is_dir():
        raise InputError(f"{task_dir}: not a task folder (no repo/ directory)")
    base_tag = base_tag or build_base_image(echo=echo)
    tag = task_image_tag(task_dir, base_tag)
    if not force and image_exists(tag):
        return tag
    remove_leftovers()
    env = " ".join(f"{k}={shlex.quote(v)}" for k, v in BASE_COMMIT_ENV.items())
    commit_image(base_tag, tag, f"env {env} sh -c {shlex.quote(BASE_COMMIT_SCRIPT)}",
                 files=[("/testbed", _repo_archive(task_dir / "repo"))], workdir="/testbed",
                 labels={LABEL_KIND: "task", "swe-srl.task": task_dir.name},
                 changes=[f"ENV PATH={_DEFAULT_PATH}", 'CMD ["sleep", "infinity"]', "WORKDIR /testbed"],
                 echo=echo)
    return tag


def task_dirs(tasks_dir: Path | str = TASKS_DIR, only: str | None = None) -> list[Path]:
    """Task folders (those with a repo/) under ``tasks_dir``, optionally only the one named ``only``."""
    tasks_dir = Path(tasks_dir)
    found = sorted(p for p in tasks_dir.glob("*") if (p / "repo").is_dir()) if tasks_dir.is_dir() else []
    if only is not None:
        found = [p for p in found if p.name == only]
        if not found:
            raise InputError(f"no task folder {only!r} with a repo/ under {tasks_dir}")
    return found


def build_all(tasks_dir: Path | str = TASKS_DIR, only: str | None = None, *,
              method: BuildMethod = "debootstrap", force: bool = False, mirror: str | None = None,
              echo: Log = log.info) -> dict[str, str]:
    """Build the base image and every task image; return ``{"base": tag, <task id>: tag, ...}``.
    Build containers that killed builds left behind are removed first."""
    remove_leftovers()
    tags = {"base": build_base_image(method, force=force, mirror=mirror, echo=echo)}
    for folder in task_dirs(tasks_dir, only):
        tags[folder.name] = build_task_image(folder, base_tag=tags["base"], force=force, echo=echo)
    return tags


def compute_base_commit(repo_dir: Path | str) -> str:
    """The base commit hash a task image gets for ``repo_dir``, computed on the host."""
    with tempfile.TemporaryDirectory(prefix="swe-srl-commit-") as tmp:
        work = Path(tmp) / "repo"
        shutil.copytree(repo_dir, work, symlinks=True)
        env = {**os.environ, **BASE_COMMIT_ENV}
        try:
            subprocess.run(["sh", "-c", BASE_COMMIT_SCRIPT], cwd=work, env=env, check=True,
                           capture_output=True)
            out = subprocess.run(["git", "rev-parse", "HEAD"], cwd=work, env=env, check=True,
                                 capture_output=True, text=True)
        except (OSError, subprocess.CalledProcessError) as exc:
            raise InfrastructureError(f"git on the host could not commit {repo_dir}: {exc}") from exc
        return out.stdout.strip()
