"""The Docker engine's exec stream, read here rather than by the client: the multiplexed frames
of a hijacked exec connection pumped under a deadline (including bytes the HTTP client already
buffered with the upgrade response), the connection really closed afterwards, and the two ways a
pids limit shows when an exec cannot even start. Used by :mod:`swe_srl.sandbox.docker`."""

from __future__ import annotations

import select
import socket
import time
from typing import Any

from ..schemas import ExecResult
from .base import OutputCapture


def _out_of_pids(message: str) -> bool:
    return "resource temporarily unavailable" in message.lower()


def _could_not_fork(result: ExecResult) -> bool:
    """The command never started for want of a pid: the wrapper's `timeout` could not fork
    (status 125), or the runtime could not start the exec's first process (126)."""
    if result.exit_code == 125:
        return result.output.startswith("timeout: fork")
    # runc reports a pids limit hit while it starts the exec either way: EAGAIN from clone, or
    # its init child dying before it reports back ("read init-p: connection reset by peer").
    return (result.exit_code == 126 and result.output.startswith("OCI runtime exec failed")
            and (_out_of_pids(result.output) or "init-p: connection reset by peer" in result.output))


def _hang_up(sock: Any) -> None:
    """Really close a hijacked exec connection: a half-read one must never go back to the
    client's pool (the next request would read the old command's output, or hang)."""
    raw = getattr(sock, "_sock", sock)
    try:
        raw.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass  # already closed by the engine
    raw.close()
    sock.close()


class _CannotStart(Exception):
    """The engine could not start a process in a running container."""


def _pump_frames(sock: Any, capture: OutputCapture, deadline: float) -> bool:
    """Read the engine's multiplexed exec stream (8-byte frame headers) into ``capture``
    until it ends (True) or the deadline passes / the output runs away (False)."""
    raw = getattr(sock, "_sock", sock)
    buf = bytearray(_read_ahead(sock, raw))
    _feed_frames(buf, capture)
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0 or capture.runaway:
            return False
        ready, _, _ = select.select([raw], [], [], min(remaining, 1.0))
        if not ready:
            continue
        chunk = raw.recv(1 << 16)
        if not chunk:
            return True
        buf += chunk
        _feed_frames(buf, capture)


def _feed_frames(buf: bytearray, capture: OutputCapture) -> None:
    """Move every whole frame at the start of ``buf`` into ``capture``."""
    pos = 0
    while len(buf) - pos >= 8:
        size = int.from_bytes(buf[pos + 4:pos + 8], "big")
        if len(buf) - pos - 8 < size:
            break
        capture.feed(bytes(buf[pos + 8:pos + 8 + size]))
        pos += 8 + size
    del buf[:pos]


def _read_ahead(sock: Any, raw: Any) -> bytes:
    """The start of the stream that the HTTP client already read with the upgrade response's
    headers: its buffered reader takes whatever one recv returns, and when the command's
    output arrived with the headers (a fast command on a loaded host) those bytes sit there,
    not on the socket. Reading the socket alone lost them: a start script's output came back
    empty, so the sandbox saw no repository and the episode's diff was empty."""
    reader = getattr(getattr(getattr(getattr(sock, "_response", None), "raw", None), "_fp", None), "fp", None)
    if reader is None or not hasattr(reader, "read1"):
        return b""
    timeout = raw.gettimeout()
    raw.setblocking(False)  # only what is buffered (or already on the socket): never wait here
    try:
        return reader.read1(1 << 16) or b""
    except (BlockingIOError, OSError, ValueError):
        return b""
    finally:
        raw.settimeout(timeout)
