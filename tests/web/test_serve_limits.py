"""The real `run.py web` against clients that connect and then stall: each connection is closed
within the configured time (`CAMPAIGN_WEB_TIMEOUT`, 1 s here), however the client stalls, so
idle or slow connections cannot pile up until the service stops answering.

Each stalled client is a raw socket on 127.0.0.1; waits are bounded by deadlines and by
`select`, never by sleeping.
"""

from __future__ import annotations

import select
import socket
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

from campaign.devtools.catcher import free_port
from harness.engine import open_campaign
from harness.web import wait_listening

TIMEOUT = 1.0  # CAMPAIGN_WEB_TIMEOUT for these tests
MARGIN = 2.5  # a loaded 2-core machine schedules late; still far below "forever"
GIVE_UP = 15.0  # how long a test waits before saying the server kept the connection

STALLED = {
    "connects and says nothing": b"",
    "half a request line": b"GET /u/abc HT",
    "headers without the blank line": b"GET /u/abc HTTP/1.1\r\nHost: clinic.example\r\n",
    "half a body": (
        b"POST /leads HTTP/1.1\r\nHost: clinic.example\r\nContent-Type: application/json\r\n"
        b'Content-Length: 200\r\n\r\n{"email": "stall'
    ),
}


@contextmanager
def web_server(folder: Path, **env: str) -> Iterator[int]:
    """`run.py web` on a free loopback port with a 1 s client timeout; yields the port."""
    with open_campaign(folder) as campaign:
        port = free_port()
        settings = {"CAMPAIGN_WEB_TIMEOUT": "1", **env}
        server = campaign.popen("web", "--port", str(port), env=settings)
        try:
            wait_listening(server, f"http://127.0.0.1:{port}/u/probe")
            yield port
        finally:
            server.terminate()
            server.communicate(timeout=10)


def closed(sock: socket.socket, wait: float) -> bool:
    """Whether the server closed `sock` within `wait` seconds (whatever it sent first)."""
    deadline = time.monotonic() + wait
    while (left := deadline - time.monotonic()) > 0:
        readable, _, _ = select.select([sock], [], [], left)
        if not readable:
            return False
        try:
            if sock.recv(65536) == b"":
                return True
        except ConnectionResetError:
            return True
    return False


def connect(port: int, data: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", port), timeout=5)
    if data:
        sock.sendall(data)
    return sock


@pytest.mark.slow
def test_stalled_clients_are_disconnected_within_the_timeout(tmp_path: Path) -> None:
    """Before: uvicorn armed no timer until a first response was complete, so each of these
    sockets stayed open for as long as the client liked."""
    with web_server(tmp_path) as port:
        started = time.monotonic()
        sockets = {name: connect(port, data) for name, data in STALLED.items()}
        try:
            late = {
                name: round(time.monotonic() - started, 1)
                for name, sock in sockets.items()
                if not closed(sock, max(0.0, started + GIVE_UP - time.monotonic()))
                or time.monotonic() - started > TIMEOUT + MARGIN
            }
        finally:
            for sock in sockets.values():
                sock.close()
        assert late == {}, f"held longer than {TIMEOUT + MARGIN}s: {late}"


@pytest.mark.slow
def test_a_client_trickling_its_headers_is_bounded_too(tmp_path: Path) -> None:
    """Slowloris: one byte of the headers every 0.2 s keeps the connection busy but never
    finishes the request; the time allowed for the headers is counted from their start."""
    request = b"GET /u/abc HTTP/1.1\r\nHost: clinic.example\r\nX-Slow: " + b"a" * 200
    with web_server(tmp_path) as port, connect(port, b"G") as sock:
        started = time.monotonic()
        ended = False
        for byte in request[1:]:
            if time.monotonic() - started > GIVE_UP:
                break
            try:
                sock.sendall(bytes([byte]))
            except (BrokenPipeError, ConnectionResetError):
                ended = True
                break
            if closed(sock, 0.2):
                ended = True
                break
        took = time.monotonic() - started
    assert ended, "the server kept a connection whose headers never ended"
    assert took < TIMEOUT + MARGIN, took


@pytest.mark.slow
def test_requests_still_work_and_idle_keep_alive_connections_close(tmp_path: Path) -> None:
    with web_server(tmp_path) as port:
        assert httpx.get(f"http://127.0.0.1:{port}/u/not-a-token").status_code == 400
        with connect(port, b"GET /u/not-a-token HTTP/1.1\r\nHost: clinic.example\r\n\r\n") as s:
            readable, _, _ = select.select([s], [], [], 5)
            assert readable and s.recv(65536).startswith(b"HTTP/1.1 400")
            started = time.monotonic()
            assert closed(s, GIVE_UP), "an idle keep-alive connection was kept"
            assert time.monotonic() - started < TIMEOUT + MARGIN
        with connect(port, b"GET /u/x HTTP/1.1\r\nHost: a\r\nX-Big: " + b"a" * 20_000) as s:
            readable, _, _ = select.select([s], [], [], 5)
            assert readable and s.recv(65536).startswith(b"HTTP/1.1 400"), "oversized headers"


@pytest.mark.slow
def test_beyond_the_connection_limit_a_request_is_answered_503_at_once(tmp_path: Path) -> None:
    with web_server(tmp_path, CAMPAIGN_WEB_MAX_CONNECTIONS="3") as port:
        held = [connect(port, b"GET /u/abc HTTP/1.1\r\n") for _ in range(3)]
        try:
            answer = httpx.get(f"http://127.0.0.1:{port}/u/not-a-token", timeout=5)
            assert answer.status_code == 503
        finally:
            for sock in held:
                sock.close()
