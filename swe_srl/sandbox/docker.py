"""DockerSandbox: one container per episode, driven through the Docker Engine API.

The container's PID 1 is docker-init running ``sleep infinity``: it dies at once on
``remove(force=True)`` (no 10 s stop grace). Each command is an engine exec wrapped in
``timeout -s KILL`` (see :data:`~swe_srl.sandbox.base.EXEC_WRAPPER`); its output stream is read
here with a deadline and capped (head + tail), so neither a hung nor a chatty command can hold
the driver.

Isolation: the agent may write anywhere in the container's own root filesystem (a private
copy-on-write layer; nothing of the host is mounted), has no network but loopback unless
``network=True``, and is held by memory (swap included), CPU and pids limits. A background
process that keeps the command's stdout open delays the result by the engine's 2 s drain; one
that redirects its output keeps running between commands, as in a shell.
"""

from __future__ import annotations

import itertools
import logging
import time
import uuid
from dataclasses import replace
from typing import Any

from ..errors import DiskLimitExceeded, InfrastructureError, SandboxDied
from ..schemas import ExecResult, ResourceUsage
from .base import (
    KILL_GRACE,
    RESCUE_COMMAND,
    STATE_DIR,
    OutputCapture,
    check_patch_size,
    diff_script,
    exec_argv,
    hygiene_script,
    is_timeout,
    kill_group_command,
)
from .client import docker_client, infra_error
from .config import SandboxConfig
from .docker_files import ContainerFiles
from .exec_stream import _CannotStart, _could_not_fork, _hang_up, _out_of_pids, _pump_frames
from .reaper import owner_labels, reap
from .tools import tools_archive
from .usage import container_usage

log = logging.getLogger(__name__)

# Capabilities an agent never needs for editing code and running tests.
_CAP_DROP = ["NET_RAW", "MKNOD", "AUDIT_WRITE", "SETFCAP", "SYS_CHROOT"]
BASE_ENV = {"PYTHONDONTWRITEBYTECODE": "1", "PAGER": "cat", "GIT_PAGER": "cat", "LC_ALL": "C.UTF-8"}


class DockerSandbox(ContainerFiles):
    """A started container of ``config.image``; use as a context manager (removed on exit).
    Its file methods (``write_file``, ``read_bytes``, ``read_file``, ``copy_in``,
    ``copy_out``) are :class:`~swe_srl.sandbox.docker_files.ContainerFiles`'."""

    def __init__(self, config: SandboxConfig, *, client: Any = None) -> None:
        self.config = config
        self.base_commit = ""
        self._client = client or docker_client()
        self._api = self._client.api
        self._container: Any = None
        self._closed = False
        self._serial = itertools.count()
        self.usage: ResourceUsage | None = None
        """What the container used, set when it is removed (see :mod:`.usage`)."""
        self._start()

    # ------------------------------------------------------------------ lifecycle

    def _start(self) -> None:
        import docker.errors

        reap(self._client)
        cfg = self.config
        name = f"swe-srl-{cfg.run_id}-{uuid.uuid4().hex[:8]}"
        self._created_at = int(time.time()) - 1
        self._born = time.monotonic()
        options = dict(
            command=["sleep", "infinity"], name=name, init=True, detach=True,
            working_dir=cfg.workdir, environment={**BASE_ENV, **cfg.env},
            labels=owner_labels(cfg.run_id),
            network_mode="bridge" if cfg.network else "none",
            mem_limit=cfg.mem_limit, memswap_limit=cfg.mem_limit, nano_cpus=cfg.nano_cpus,
            pids_limit=cfg.pids_limit, cap_drop=_CAP_DROP, security_opt=["no-new-privileges"])
        # A hard quota on the writable layer where the storage driver has one; else checked.
        self._disk_quota = cfg.disk_limit is not None and _storage_quota(self._client)
        try:
            try:
                self._container = self._client.containers.create(
                    cfg.image, **options, **({"storage_opt": {"size": cfg.disk_limit}} if self._disk_quota else {}))
            except docker.errors.APIError as exc:
                if not (self._disk_quota and "storage" in str(exc).lower()):
                    raise
                _QUOTA_SUPPORT[_engine_key(self._client)] = self._disk_quota = False
                log.info("storage quota refused by the engine (%s): checking the disk budget instead", exc)
                self._container = self._client.containers.create(cfg.image, **options)
        except docker.errors.ImageNotFound as exc:
            raise InfrastructureError(f"sandbox image {cfg.image} not found: "
                                      "build it with `swe-srl env build`") from exc
        except Exception as exc:
            raise infra_error(f"creating a container of {cfg.image}", exc) from exc
        try:
            self._container.start()
            self._put_archive("/", tools_archive())
            result = self.exec(hygiene_script(cfg.workdir, cfg.git_hygiene), timeout=cfg.startup_timeout)
            if result.exit_code != 0:
                raise InfrastructureError(f"sandbox setup failed ({result.exit_code}): {result.output[-300:]}")
            self.base_commit = result.output.rpartition("BASE=")[2].strip()
            if not self.base_commit:
                log.warning("sandbox %s: no git repository at %s at the start: %s", name, cfg.workdir,
                            result.output[-300:])
        except BaseException as exc:
            self.close()
            if isinstance(exc, SandboxDied):  # no code of the model ran yet: the infrastructure's
                raise InfrastructureError(str(exc)) from exc
            if isinstance(exc, InfrastructureError) or not isinstance(exc, Exception):
                raise
            raise infra_error(f"starting sandbox {name}", exc) from exc

    @property
    def container_id(self) -> str:
        return self._container.id if self._container is not None else ""

    @property
    def name(self) -> str:
        return self._container.name if self._container is not None else ""

    def close(self) -> None:
        """Read what the container used (``usage``), then remove it (idempotent; never waits
        for a stop grace period)."""
        if self._closed:
            return
        self._closed = True
        if self._container is None:
            return
        usage = container_usage(self._api, self._container.id)
        try:
            self._container.remove(force=True)
        except Exception as exc:  # already gone is fine; anything else the reaper retries
            if getattr(getattr(exc, "response", None), "status_code", None) != 404:
                log.warning("removing sandbox %s failed: %s", self._container.name, exc)
        self.usage = replace(usage, container_seconds=round(time.monotonic() - self._born, 3))

    def __enter__(self) -> DockerSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def reset(self) -> None:
        """Put the repository back to the base commit (tracked and untracked files, editor
        history) so the container can serve another episode. Processes the agent left running
        in the background are not stopped."""
        script = (f"git reset -q --hard {self.base_commit} && git clean -qfdx && "
                  f"rm -rf {STATE_DIR}/editor")
        result = self.exec(script, timeout=self.config.startup_timeout)
        if result.exit_code != 0:
            raise InfrastructureError(f"sandbox reset failed ({result.exit_code}): {result.output[-300:]}")

    # ------------------------------------------------------------------ commands

    def _check_open(self) -> None:
        if self._closed or self._container is None:
            raise InfrastructureError("sandbox is closed")

    def _state(self) -> str:
        """'running', or why the container is not: for InfrastructureError messages."""
        try:
            self._container.reload()
        except Exception as exc:
            return f"gone ({type(exc).__name__})"
        state = self._container.attrs.get("State", {})
        if state.get("Running"):
            return "running"
        return f"{state.get('Status', '?')} (exit {state.get('ExitCode')}, OOMKilled={state.get('OOMKilled')})"

    def _dead(self, what: str, exc: BaseException | None = None, output: str = "") -> InfrastructureError:
        state = self._state()
        if state == "running":
            return InfrastructureError(f"sandbox {self.name}: {what} failed: {type(exc).__name__}: {exc}")
        if state.startswith("gone"):  # removed, or the engine does not answer: not the container's doing
            return InfrastructureError(f"sandbox {self.name}: {what} failed: container is {state}")
        killer = self._engine_kill()
        if killer:  # stopped from outside (an operator, a reaper, the host): not the model's doing
            return InfrastructureError(f"sandbox {self.name}: {what} failed: container is {state}, {killer}")
        return SandboxDied(f"sandbox {self.name}: {what} failed: container is {state}", output)

    def _engine_kill(self) -> str:
        """How the container was stopped through the engine (a kill or stop request), or ''
        when its own processes brought it down. The engine logs a 'kill' event for every
        signal sent through its API; none comes from processes inside the container."""
        try:
            events = self._api.events(since=self._created_at, until=int(time.time()) + 1, decode=True,
                                      filters={"container": self._container.id, "event": ["kill", "stop"]})
            for event in events:
                signal = (event.get("Actor") or {}).get("Attributes", {}).get("signal", "?")
                return f"stopped through the engine ({event.get('Action') or event.get('status')}, signal {signal})"
        except Exception as exc:  # the engine cannot say: do not blame the model
            return f"its engine cannot say why ({type(exc).__name__})"
        return ""

    def exec(self, command: str, timeout: float | None = None, *, workdir: str | None = None,
             env: dict | None = None) -> ExecResult:
        """Run ``command`` with bash in the sandbox; stdout and stderr merged, capped, timed."""
        self._check_open()
        for attempt in range(4):
            try:
                result = self._exec_once(command, timeout, workdir, env)
            except _CannotStart as exc:
                if not _out_of_pids(str(exc)):
                    raise InfrastructureError(f"sandbox {self.name}: cannot start a command: {exc}") from exc
                result, failure = None, str(exc)
            else:
                failure = result.output.strip() if _could_not_fork(result) else ""
            if not failure:
                self._check_disk(result)
                return result
            if attempt < 3:
                # No process could start: the agent's processes hold every pid (a fork bomb
                # left in the background). Kill them all, let PID 1 reap them, try again.
                self._raw_exec(RESCUE_COMMAND, "freeing the pids limit")
                time.sleep(0.2 * 2 ** attempt)
        raise InfrastructureError(
            f"sandbox {self.name}: cannot start processes (pids limit {self.config.pids_limit}): {failure}")

    def _exec_once(self, command: str, timeout: float | None, workdir: str | None,
                   env: dict | None) -> ExecResult:
        limit = float(timeout or self.config.default_timeout)
        pidfile = f"{STATE_DIR}/exec-{next(self._serial)}.pid"
        start = time.monotonic()
        try:
            exec_id = self._api.exec_create(
                self._container.id, exec_argv(pidfile, limit, command), stdout=True, stderr=True,
                stdin=False, tty=False, workdir=workdir or self.config.workdir, environment=env)["Id"]
            sock = self._api.exec_start(exec_id, socket=True)
        except Exception as exc:
            if self._state() != "running":
                raise self._dead("starting a command", exc) from exc
            raise _CannotStart(str(exc)) from exc
        capture = OutputCapture(self.config.exec_output_limit)
        try:
            ended = _pump_frames(sock, capture, deadline=start + limit + KILL_GRACE)
        finally:
            _hang_up(sock)
        if not ended:  # past the deadline, or a runaway printer: kill the command's group
            self._raw_exec(kill_group_command(pidfile), "killing a timed-out command")
        exit_code = self._exit_code(exec_id)
        elapsed = time.monotonic() - start
        output = capture.text()
        if exit_code is None or exit_code == 137:
            self._raise_if_dead(f"command {command[:60]!r}", output)
        if capture.runaway:
            output += f"\n[command killed: it printed more than {capture.total} bytes]"
            exit_code = 137  # killed with its group (the exec wrapper itself reports 126), as locally
        return ExecResult(output=output, exit_code=exit_code, duration=elapsed,
                          timed_out=is_timeout(exit_code, elapsed, limit),
                          truncated=capture.truncated)

    def disk_usage(self) -> int | None:
        """Bytes in the container's writable layer (what its processes wrote), as the engine
        counts them; None when the engine does not say."""
        try:
            rows = self._api.containers(all=True, size=True, filters={"id": self._container.id})
        except Exception as exc:
            raise self._dead("measuring its disk use", exc) from exc
        return rows[0].get("SizeRw") if rows else None

    def _check_disk(self, result: ExecResult) -> None:
        limit = self.config.disk_limit_bytes
        if limit is None or self._disk_quota:
            return
        used = self.disk_usage()
        if used is not None and used > limit:
            raise DiskLimitExceeded(f"sandbox {self.name}: the container wrote {used} bytes, over its disk "
                                    f"budget of {limit} ({self.config.disk_limit})", result.output)

    def _raise_if_dead(self, what: str, output: str = "") -> None:
        # A SIGKILLed exec may be our timeout, an OOM kill, or the container going down; the
        # engine updates the container's state a moment after its processes die.
        for _ in range(10):
            if self._state() != "running":
                raise self._dead(what, output=output)
            time.sleep(0.05)

    def _exit_code(self, exec_id: str) -> int | None:
        # The stream can close a moment before the engine records the exit status.
        for _ in range(50):
            try:
                info = self._api.exec_inspect(exec_id)
            except Exception as exc:
                raise self._dead("inspecting a command", exc) from exc
            if not info.get("Running"):
                return info.get("ExitCode")
            time.sleep(0.02)
        return None

    def _raw_exec(self, script: str, what: str) -> None:
        """Run a bookkeeping script (no wrapper, no timeout) and wait for it."""
        try:
            exec_id = self._api.exec_create(self._container.id, ["sh", "-c", script])["Id"]
            self._api.exec_start(exec_id)
        except Exception as exc:
            raise self._dead(what, exc) from exc

    # ------------------------------------------------------------------ the patch

    def diff(self) -> str:
        """The patch of the working tree (new files included) against the base commit."""
        if not self.base_commit:
            log.warning("sandbox %s: no git repository at %s, empty diff", self.name, self.config.workdir)
            return ""
        out = f"{STATE_DIR}/patch.diff"
        result = self.exec(f"{{ {diff_script(self.base_commit)} ; }} > {out} && stat -c 'SIZE=%s' {out}",
                           timeout=max(60.0, self.config.default_timeout))
        if result.exit_code != 0:
            # The agent can break its own repository (rm -rf .git): that is an empty patch.
            log.warning("sandbox %s: git diff failed (%s): %s", self.name, result.exit_code, result.output[-200:])
            return ""
        check_patch_size(result.output, self.config.max_patch_bytes)
        return self.read_bytes(out).decode("utf-8", errors="replace")


_QUOTA_SUPPORT: dict[str, bool] = {}


def _engine_key(client: Any) -> str:
    return str(getattr(client.api, "base_url", id(client)))


def _storage_quota(client: Any) -> bool:
    """Whether the engine's storage driver can cap a container's writable layer
    (``--storage-opt size``): overlay2 on xfs (with project quotas), btrfs, zfs. Asked once
    per engine; a refusal at create time turns it off for that engine."""
    key = _engine_key(client)
    if key not in _QUOTA_SUPPORT:
        try:
            info = client.info()
        except Exception:
            info = {}
        driver = str(info.get("Driver", ""))
        backing = dict(info.get("DriverStatus") or []).get("Backing Filesystem", "")
        _QUOTA_SUPPORT[key] = driver in ("btrfs", "zfs") or (driver == "overlay2" and backing == "xfs")
    return _QUOTA_SUPPORT[key]
