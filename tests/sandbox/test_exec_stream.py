"""The exec stream reader: output the HTTP client read ahead with the upgrade response's
headers is part of the stream (it was lost for ~0.2% of fast commands on a loaded host: a
start script's `BASE=<sha>` vanished and the episode's diff came back empty)."""

from __future__ import annotations

import socket
import time
from types import SimpleNamespace

from swe_srl.sandbox.base import OutputCapture
from swe_srl.sandbox.exec_stream import _pump_frames


def frame(data: bytes, stream: int = 1) -> bytes:
    return bytes([stream, 0, 0, 0]) + len(data).to_bytes(4, "big") + data


def hijacked(wire: bytes):
    """What docker-py hands back for ``exec_start(socket=True)``: the raw socket, with the
    HTTP response (whose buffered reader parsed the headers) hung on it."""
    ours, engine = socket.socketpair()
    engine.sendall(wire)
    engine.close()
    reader = ours.makefile("rb")
    while reader.readline() not in (b"\r\n", b""):  # the headers, as http.client reads them
        pass
    sock = SimpleNamespace(_sock=ours, _response=SimpleNamespace(raw=SimpleNamespace(_fp=SimpleNamespace(fp=reader))))
    return sock, ours


def test_output_that_arrived_with_the_upgrade_headers_is_kept():
    headers = b"HTTP/1.1 101 UPGRADED\r\nConnection: Upgrade\r\nUpgrade: tcp\r\n\r\n"
    sock, ours = hijacked(headers + frame(b"BASE=454e3c44\n"))
    capture = OutputCapture(10_000)
    assert _pump_frames(sock, capture, deadline=time.monotonic() + 5)
    assert capture.text() == "BASE=454e3c44\n"
    ours.close()


def test_a_frame_split_between_the_read_ahead_and_the_socket_is_whole():
    headers = b"HTTP/1.1 101 UPGRADED\r\n\r\n"
    ours, engine = socket.socketpair()
    engine.sendall(headers + frame(b"first\n") + frame(b"second half")[:10])
    reader = ours.makefile("rb")
    while reader.readline() not in (b"\r\n", b""):
        pass
    engine.sendall(frame(b"second half")[10:] + frame(b"\n", stream=2))
    engine.close()
    sock = SimpleNamespace(_sock=ours, _response=SimpleNamespace(raw=SimpleNamespace(_fp=SimpleNamespace(fp=reader))))
    capture = OutputCapture(10_000)
    assert _pump_frames(sock, capture, deadline=time.monotonic() + 5)
    assert capture.text() == "first\nsecond half\n"
    ours.close()


def test_a_plain_socket_without_a_response_still_reads():
    ours, engine = socket.socketpair()
    engine.sendall(frame(b"ok\n"))
    engine.close()
    capture = OutputCapture(10_000)
    assert _pump_frames(ours, capture, deadline=time.monotonic() + 5)
    assert capture.text() == "ok\n"
    ours.close()
