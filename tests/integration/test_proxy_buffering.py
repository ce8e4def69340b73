"""proxy_buffering on real sockets: a slow client does not hold the app's connection.

The app here writes each answer with one ``sendall`` and notes when it returned: that is
when the proxy had read the answer (the kernel's buffers hold far less than it).  With
buffering on (nginx's default) that happens while the client has read nothing yet, the
answer waiting in the proxy's temporary file; with it off, or with ``X-Accel-Buffering:
no``, the app waits on the client.  nginx-tests' proxy_buffering.t, proxy_max_temp_file_size.t
and proxy_xar.t check the same from nginx's side.
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.integration.conftest import Proxy
from tests.integration.test_hostile_input import _stalled_download
from tests.support.backends import free_port, request_heads

SIZE = 8 * 1024 * 1024  # far more than the sockets' buffers on both sides hold


def _body(size: int) -> bytes:
    return (b"0123456789abcdef" * (size // 16 + 1))[:size]


class SendingApp:
    """An HTTP/1.1 app answering ``GET /big/N`` with N bytes, keep-alive; records, per
    answer, the connection it went out on and when its ``sendall`` returned."""

    def __init__(self, accel: str = "") -> None:
        self.port = free_port()
        self.accel = accel
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.sent: list[tuple[int, float]] = []  # (connection number, time)
        self.connections = 0
        self.open = 0
        self.lock = threading.Lock()
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopping:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open += 1
                number = self.connections
            conn.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 256 * 1024)
            threading.Thread(target=self._serve, args=(conn, number), daemon=True).start()

    def _serve(self, conn: socket.socket, number: int) -> None:
        try:
            for head in request_heads(conn):
                size = int(head.split(b" ")[1].rsplit(b"/", 1)[1] or b"0")
                extra = f"X-Accel-Buffering: {self.accel}\r\n" if self.accel else ""
                conn.sendall(
                    f"HTTP/1.1 200 OK\r\nContent-Length: {size}\r\n{extra}\r\n".encode()
                    + _body(size)
                )
                with self.lock:
                    self.sent.append((number, time.monotonic()))
        except OSError:
            return
        finally:
            conn.close()
            with self.lock:
                self.open -= 1

    def wait_sent(self, count: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                if len(self.sent) >= count:
                    return True
            time.sleep(0.02)
        return False

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()


@pytest.fixture
def app() -> Iterator[SendingApp]:
    made = SendingApp()
    yield made
    made.stop()


def _conf(app: SendingApp, location: str = "", upstream: str = "") -> str:
    return f"""
events {{}}
http {{
  access_log off;
  upstream app {{
    server 127.0.0.1:{app.port};
    {upstream}
  }}
  server {{
    listen 127.0.0.1:{{port}};
    send_timeout 60s;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      {location}
    }}
  }}
}}
"""


def _read_answer(sock: socket.socket) -> tuple[bytes, bytes]:
    """The head and the body (as long as its Content-Length says) of one answer."""
    data = b""
    while b"\r\n\r\n" not in data:
        data += sock.recv(65536)
    head, _, body = data.partition(b"\r\n\r\n")
    length = next(
        int(line.split(b":")[1])
        for line in head.split(b"\r\n")
        if line.lower().startswith(b"content-length")
    )
    parts = [body]
    got = len(body)
    while got < length:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return head, b"".join(parts)


def _temp_files(pid: int) -> list[str]:
    fds = Path(f"/proc/{pid}/fd")
    found = []
    for fd in fds.iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if "proxy_temp" in target:
            found.append(target)
    return found


def _rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def test_with_buffering_on_the_app_is_done_while_the_slow_client_has_read_nothing(
    app: SendingApp, proxy
):
    p: Proxy = proxy(_conf(app, upstream="keepalive 4;"))
    serving = p.serving_pid()
    before = _rss_kib(serving)
    sock = _stalled_download(p.port, SIZE)
    try:
        assert app.wait_sent(1, 20), "the app still waits on the slow client"
        # the answer waits in an unlinked file, not in memory
        assert [t for t in _temp_files(serving) if t.endswith("(deleted)")]
        assert _rss_kib(serving) - before < SIZE // 1024 // 2
        # the app's connection went back to the keep-alive pool: the next request uses it
        status, _, body = p.request("GET", "/5")
        assert (status, body) == (200, b"01234")
        assert app.wait_sent(2, 10)
        assert app.sent[1][0] == app.sent[0][0]
        head, body = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert hashlib.sha256(body).digest() == hashlib.sha256(_body(SIZE)).digest()
    finally:
        sock.close()


@pytest.mark.parametrize(
    ("location", "accel", "reads_ahead"),
    [
        ("proxy_buffering off;", "", False),
        ("", "no", False),
        ("proxy_buffering off;", "yes", True),
        ("proxy_ignore_headers X-Accel-Buffering;", "no", True),
    ],
    ids=["buffering-off", "accel-no", "accel-yes-over-buffering-off", "accel-no-ignored"],
)
def test_buffering_off_and_x_accel_buffering_decide_whether_the_app_waits_on_the_client(
    location: str, accel: str, reads_ahead: bool, app: SendingApp, proxy
):
    app.accel = accel
    p: Proxy = proxy(_conf(app, location))
    sock = _stalled_download(p.port, SIZE)
    try:
        assert app.wait_sent(1, 20.0 if reads_ahead else 2.0) == reads_ahead
        head, body = _read_answer(sock)
        assert head.startswith(b"HTTP/1.1 200 ")
        assert b"x-accel-buffering" not in head.lower()  # nginx does not pass it on
        assert len(body) == SIZE
        assert app.wait_sent(1, 10)
    finally:
        sock.close()


def test_past_proxy_max_temp_file_size_the_app_waits_until_the_client_catches_up(
    app: SendingApp, proxy
):
    p: Proxy = proxy(_conf(app, "proxy_max_temp_file_size 1m;"))
    # more than the file and every socket buffer on the way (the kernel grows the
    # proxy's receive buffer while it reads fast) can hold together
    size = 4 * SIZE
    sock = _stalled_download(p.port, size)
    try:
        assert not app.wait_sent(1, 2.0)
        _, body = _read_answer(sock)
        assert hashlib.sha256(body).digest() == hashlib.sha256(_body(size)).digest()
        assert app.wait_sent(1, 10)
    finally:
        sock.close()
