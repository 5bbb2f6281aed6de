"""Files into and out of a Docker sandbox, through the engine's archive endpoint.

:class:`ContainerFiles` is the file half of :class:`~swe_srl.sandbox.docker.DockerSandbox`:
writes and copies go in as tar archives (``put_archive``; a missing parent directory is made
with ``mkdir -p`` and the copy retried), reads come out as one (``get_archive``), and a read
with a byte limit asks the engine's stat of the file first, so an oversized file is refused
before any of it moves. Relative paths are under the sandbox's workdir. A failure while the
container is not running is reported as the sandbox's death (``_dead``), as for commands.
"""

from __future__ import annotations

import io
import posixpath
import shutil
import tarfile
import tempfile
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..errors import InfrastructureError
from .base import SandboxFileNotFound, SandboxFileTooLarge

if TYPE_CHECKING:
    from ..schemas import ExecResult
    from .config import SandboxConfig


class ContainerFiles:
    """File methods of a sandbox whose container is ``self._container`` (a docker SDK
    container; ``self._api`` its low-level client). The sandbox provides its name and the
    checks it shares with commands: ``_check_open``, ``_state``, ``_dead`` and ``exec``."""

    config: SandboxConfig
    _container: Any
    _api: Any

    if TYPE_CHECKING:
        @property
        def name(self) -> str: ...

        def _check_open(self) -> None: ...

        def _state(self) -> str: ...

        def _dead(self, what: str, exc: BaseException | None = None, output: str = "") -> InfrastructureError: ...

        def exec(self, command: str, timeout: float | None = None, *, workdir: str | None = None,
                 env: dict | None = None) -> ExecResult: ...

    def _abs(self, path: str) -> str:
        return posixpath.normpath(posixpath.join(self.config.workdir, path))

    def _put_archive(self, directory: str, data: bytes) -> None:
        if not self._container.put_archive(directory, data):
            raise InfrastructureError(f"sandbox {self.name}: copying into {directory} failed")

    def write_file(self, path: str, content: str | bytes) -> None:
        """Create or overwrite a file (parents created); relative paths are under workdir."""
        self._check_open()
        target = self._abs(path)
        data = content.encode() if isinstance(content, str) else content
        info = tarfile.TarInfo(posixpath.basename(target))
        info.size, info.mode, info.mtime = len(data), 0o644, int(time.time())
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.addfile(info, io.BytesIO(data))
        self._put_into(posixpath.dirname(target), buf.getvalue())

    def _put_into(self, directory: str, archive: bytes) -> None:
        import docker.errors

        try:
            try:
                self._put_archive(directory, archive)
            except docker.errors.NotFound:
                if self._state() != "running":
                    raise
                self.exec(f"mkdir -p '{directory}'")
                self._put_archive(directory, archive)
        except InfrastructureError:
            raise
        except Exception as exc:
            raise self._dead(f"copying into {directory}", exc) from exc

    def _stat_size(self, path: str) -> int:
        import docker.errors

        self._check_open()
        try:
            stat = self._head_archive(path)
        except docker.errors.NotFound as exc:
            raise SandboxFileNotFound(f"no such file in the sandbox: {self._abs(path)}") from exc
        except Exception as exc:
            raise self._dead(f"reading {path}", exc) from exc
        return int(stat.get("size", 0))

    def _head_archive(self, path: str) -> dict:
        """The engine's stat of ``path`` (HEAD /containers/ID/archive): no file content moves."""
        import base64
        import json as _json

        api = self._api
        res = api.head(api._url("/containers/{0}/archive", self._container.id), params={"path": self._abs(path)})
        api._raise_for_status(res)
        return _json.loads(base64.b64decode(res.headers.get("x-docker-container-path-stat", "e30=")))

    def _get_archive(self, path: str) -> bytes:
        import docker.errors

        self._check_open()
        try:
            stream, _ = self._container.get_archive(self._abs(path))
            return b"".join(stream)
        except docker.errors.NotFound as exc:
            if self._state() != "running":
                raise self._dead(f"reading {path}", exc) from exc
            raise SandboxFileNotFound(f"no such file in the sandbox: {self._abs(path)}") from exc
        except Exception as exc:
            raise self._dead(f"reading {path}", exc) from exc

    def read_bytes(self, path: str, limit: int | None = None) -> bytes:
        """The bytes of a file in the sandbox; past ``limit`` bytes SandboxFileTooLarge, decided
        from the engine's stat of the file before any of it is transferred."""
        if limit is not None:
            size = self._stat_size(path)
            if size > limit:
                raise SandboxFileTooLarge(f"{self._abs(path)} holds {size} bytes > {limit}")
        with tarfile.open(fileobj=io.BytesIO(self._get_archive(path))) as tar:
            member = tar.next()
            handle = tar.extractfile(member) if member is not None else None
            if handle is None:
                raise SandboxFileNotFound(f"not a regular file in the sandbox: {self._abs(path)}")
            return handle.read()

    def read_file(self, path: str) -> str:
        """A file's text (undecodable bytes replaced)."""
        return self.read_bytes(path).decode("utf-8", errors="replace")

    def copy_in(self, host_path: str, container_path: str) -> None:
        """Copy a host file or directory to ``container_path`` (its parent is created)."""
        self._check_open()
        target = self._abs(container_path)
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            tar.add(str(host_path), arcname=posixpath.basename(target))
        self._put_into(posixpath.dirname(target), buf.getvalue())

    def copy_out(self, container_path: str, host_path: str) -> None:
        """Copy a sandbox file or directory to ``host_path`` on the host."""
        data = self._get_archive(container_path)
        dest = Path(host_path)
        with tempfile.TemporaryDirectory(prefix="swe-srl-copy-") as tmp:
            with tarfile.open(fileobj=io.BytesIO(data)) as tar:
                top = tar.getnames()[0].split("/")[0]
                tar.extractall(tmp, filter="data")  # no absolute paths, links out, devices
            dest.parent.mkdir(parents=True, exist_ok=True)
            if dest.is_dir() and not (Path(tmp) / top).is_dir():
                dest = dest / top
            shutil.move(str(Path(tmp) / top), str(dest))
