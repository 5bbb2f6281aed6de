"""LocalSandbox: commands run on THIS machine in a throwaway copy of a repository.

It does not isolate anything (the agent's commands can read and write the whole host, use
the network, exhaust memory): use it only where Docker cannot run and the policy is trusted.
It exists so a laptop without Docker can still walk through an episode.
"""

from __future__ import annotations

import itertools
import logging
import os
import posixpath
import select
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..errors import InfrastructureError, InputError
from ..schemas import ExecResult, ResourceUsage
from .base import (
    KILL_GRACE,
    STATE_DIR,
    OutputCapture,
    SandboxFileNotFound,
    SandboxFileTooLarge,
    check_patch_size,
    diff_script,
    hygiene_script,
)
from .config import SandboxConfig
from .images.build import BASE_COMMIT_ENV, BASE_COMMIT_SCRIPT
from .tools import EDITOR_NAME, EDITOR_SCRIPT

log = logging.getLogger(__name__)
WARNING = ("LocalSandbox does not isolate: the agent's commands run on this machine with your "
           "permissions and network. Use the docker backend for anything but a trusted demo.")


def _warn() -> None:
    log.warning(WARNING)
    try:
        from rich.console import Console

        Console(stderr=True).print(f"[bold yellow]warning:[/] {WARNING}")
    except ImportError:  # rich is a dependency; a stripped install still gets the log line
        print(f"warning: {WARNING}", file=sys.stderr)


class LocalSandbox:
    """A temp copy of ``config.source`` (its base commit made like a task image's when it is not
    a git repository), with the editor tool on PATH. Same API as DockerSandbox."""

    def __init__(self, config: SandboxConfig) -> None:
        _warn()
        self.config = config
        source = Path(config.source or "")
        if not source.is_dir():
            raise InputError(f"local sandbox source {source} is not a directory")
        self._root = Path(tempfile.mkdtemp(prefix="swe-srl-local-"))
        self._closed = False
        self._serial = itertools.count()
        self._born = time.monotonic()
        self._cpu, self._max_rss = 0.0, 0
        self.usage: ResourceUsage | None = None
        """Set at close: the CPU of every command (as its process reported it when reaped, its
        waited-for children included; what it left running in the background is not counted)
        and the largest resident set of any one process."""
        self.repo = self._root / "repo"
        self.state = self._root / "state"
        try:
            self._setup(source)
        except BaseException:
            self.close()
            raise

    def _setup(self, source: Path) -> None:
        shutil.copytree(source, self.repo, symlinks=True)
        bin_dir = self._root / "bin"
        bin_dir.mkdir()
        shutil.copy2(EDITOR_SCRIPT, bin_dir / EDITOR_NAME)
        self._env = {**os.environ, **self.config.env, "PYTHONDONTWRITEBYTECODE": "1", "PAGER": "cat",
                     "GIT_PAGER": "cat", "PATH": f"{bin_dir}{os.pathsep}{os.environ.get('PATH', '')}",
                     "SWE_SRL_EDITOR_STATE": str(self.state / "editor"),
                     "SWE_SRL_PATH_MAP": f"{self.config.workdir}={self.repo}"}
        if not (self.repo / ".git").exists():
            done = self.exec(BASE_COMMIT_SCRIPT, env=BASE_COMMIT_ENV)
            if done.exit_code != 0:
                raise InfrastructureError(f"local sandbox: git commit of {source} failed: {done.output[-300:]}")
        result = self.exec(hygiene_script(str(self.repo), self.config.git_hygiene, str(self.state)))
        if result.exit_code != 0:  # a scrub that could not finish: never run on a leaky repository
            raise InfrastructureError(f"local sandbox setup failed ({result.exit_code}): {result.output[-300:]}")
        self.base_commit = result.output.rpartition("BASE=")[2].strip()

    def close(self) -> None:
        """Delete the copy (idempotent)."""
        if not self._closed:
            self._closed = True
            shutil.rmtree(self._root, ignore_errors=True)
            self.usage = ResourceUsage(containers=1, container_seconds=round(time.monotonic() - self._born, 3),
                                       cpu_seconds=round(self._cpu, 3), memory_peak_bytes=self._max_rss or None,
                                       memory_source="max_rss" if self._max_rss else "")

    def __enter__(self) -> LocalSandbox:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _abs(self, path: str) -> Path:
        """Sandbox paths to host paths: the workdir and the state dir map into the temp copy."""
        full = posixpath.normpath(posixpath.join(self.config.workdir, path))
        for prefix, host in ((self.config.workdir, self.repo), (STATE_DIR, self.state)):
            if full == prefix or full.startswith(prefix.rstrip("/") + "/"):
                return host / full[len(prefix):].lstrip("/")
        return Path(full)

    def exec(self, command: str, timeout: float | None = None, *, workdir: str | None = None,
             env: dict | None = None) -> ExecResult:
        """Run ``command`` with bash in its own process group; killed as a group on timeout."""
        if self._closed:
            raise InfrastructureError("sandbox is closed")
        limit = float(timeout or self.config.default_timeout)
        start = time.monotonic()
        proc = subprocess.Popen(["bash", "-c", command], cwd=self._abs(workdir or self.config.workdir),
                                env={**self._env, **(env or {})}, stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
        capture = OutputCapture(self.config.exec_output_limit)
        ended = _pump(proc.stdout.fileno(), capture, start + limit)
        if not ended:
            _kill_group(proc.pid)
        proc.stdout.close()
        exit_code = self._reap(proc, KILL_GRACE)
        if exit_code is None:
            _kill_group(proc.pid)
            exit_code = self._reap(proc, None)
        elapsed = time.monotonic() - start
        timed_out = not ended and not capture.runaway
        return ExecResult(output=capture.text(), exit_code=137 if timed_out else _status(exit_code),
                          timed_out=timed_out, duration=elapsed, truncated=capture.truncated)

    def _reap(self, proc: subprocess.Popen, timeout: float | None) -> int | None:
        """Wait for ``proc`` (None when it is still running after ``timeout`` seconds) with
        wait4, which gives its resource usage too (Popen.wait drops it)."""
        deadline = None if timeout is None else time.monotonic() + timeout
        delay = 0.0005
        while True:
            pid, status, rusage = os.wait4(proc.pid, 0 if deadline is None else os.WNOHANG)
            if pid:
                break
            if time.monotonic() >= deadline:
                return None
            time.sleep(delay)
            delay = min(delay * 2, 0.05)
        proc.returncode = os.waitstatus_to_exitcode(status)
        self._cpu += rusage.ru_utime + rusage.ru_stime
        self._max_rss = max(self._max_rss, rusage.ru_maxrss * (1 if sys.platform == "darwin" else 1024))
        return proc.returncode

    def write_file(self, path: str, content: str | bytes) -> None:
        target = self._abs(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(content.encode() if isinstance(content, str) else content)

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        target = self._abs(path)
        if not target.is_file():
            raise SandboxFileNotFound(f"no such file in the sandbox: {path}")
        if limit is not None and target.stat().st_size > limit:
            raise SandboxFileTooLarge(f"{path} holds {target.stat().st_size} bytes > {limit}")
        return target.read_bytes()

    def read_file(self, path: str) -> str:
        target = self._abs(path)
        if not target.is_file():
            raise SandboxFileNotFound(f"no such file in the sandbox: {path}")
        return target.read_bytes().decode("utf-8", errors="replace")

    def copy_in(self, host_path: str, container_path: str) -> None:
        target = self._abs(container_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        if Path(host_path).is_dir():
            shutil.copytree(host_path, target, symlinks=True, dirs_exist_ok=True)
        else:
            shutil.copy2(host_path, target)

    def copy_out(self, container_path: str, host_path: str) -> None:
        source = self._abs(container_path)
        if not source.exists():
            raise SandboxFileNotFound(f"no such file in the sandbox: {container_path}")
        if source.is_dir():
            shutil.copytree(source, host_path, symlinks=True, dirs_exist_ok=True)
        else:
            Path(host_path).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(source, host_path)

    def diff(self) -> str:
        """The copy's working tree (new files included) against its base commit."""
        if not self.base_commit:
            return ""
        out = self.state / "patch.diff"
        result = self.exec(f"{{ {diff_script(self.base_commit, str(self.state))} ; }} > {out} && "
                           f"stat -c 'SIZE=%s' {out}", timeout=max(60.0, self.config.default_timeout))
        if result.exit_code != 0:
            log.warning("local sandbox: git diff failed (%s): %s", result.exit_code, result.output[-200:])
            return ""
        check_patch_size(result.output, self.config.max_patch_bytes)
        return out.read_bytes().decode("utf-8", errors="replace")


def _status(returncode: int) -> int:
    return 128 - returncode if returncode < 0 else returncode  # killed by signal N -> 128+N


def _kill_group(pid: int) -> None:
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def _pump(fd: int, capture: OutputCapture, deadline: float) -> bool:
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or capture.runaway:
            return False
        ready, _, _ = select.select([fd], [], [], min(remaining, 1.0))
        if ready:
            chunk = os.read(fd, 1 << 16)
            if not chunk:
                return True
            capture.feed(chunk)
