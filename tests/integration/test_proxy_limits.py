"""limit_req and limit_conn in a running nonstop: a delay is a timer, limit_conn's count
lives as long as the request (an aborted one, a WebSocket tunnel), zones outlive a reload."""

from __future__ import annotations

import socket
import struct
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess, nginx_conf, raw_request


def config(port: int, prefix: Path, app: str, hang: int, zone_size: str = "1m") -> str:
    return nginx_conf(
        prefix,
        f"""
  upstream app {{ server {app}; }}
  limit_req_zone $binary_remote_addr zone=paced:1m rate=5r/s;
  limit_req_zone $binary_remote_addr zone=kept:{zone_size} rate=1r/m;
  limit_conn_zone $binary_remote_addr zone=addr:1m;
  limit_req_zone $binary_remote_addr zone=upload:1m rate=2r/s;
  limit_req_zone $binary_remote_addr zone=stream:1m rate=2r/s;
  server {{
    listen 127.0.0.1:{port};
    location /paced/ {{ limit_req zone=paced burst=5; proxy_pass http://app; }}
    location /kept/ {{ limit_req zone=kept; proxy_pass http://app; }}
    location /free/ {{ proxy_pass http://app; }}
    location /upload/ {{ limit_req zone=upload burst=9; proxy_pass http://app; }}
    location /stream/ {{
      limit_req zone=stream burst=9;
      proxy_request_buffering off;
      proxy_pass http://app;
    }}
    location /hang/ {{ limit_conn addr 1; proxy_pass http://127.0.0.1:{hang}; }}
    location /fast/ {{ limit_conn addr 1; proxy_pass http://app; }}
    location = /upgrade {{ limit_conn addr 1; proxy_pass http://app; }}
  }}""",
    )


class Daemon:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.app = RecordingBackend(name="app").start()
        # a server that accepts connections and never answers: a request in progress
        self.hang = socket.socket()
        self.hang.bind(("127.0.0.1", 0))
        self.hang.listen(16)
        self.port = free_port()
        self.conf = tmp / "nginx.conf"
        self.write()
        self.proc = NonstopProcess(self.conf, [self.port]).start()

    def write(self, zone_size: str = "1m") -> None:
        hang = self.hang.getsockname()[1]
        self.conf.write_text(config(self.port, self.tmp, self.app.address, hang, zone_size))

    def send(self, data: bytes) -> bytes:
        return raw_request(self.port, data)

    def status(self, target: str) -> int:
        data = raw_request(
            self.port, f"GET {target} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode()
        )
        return int(data.split(b" ", 2)[1])

    def open(self, target: str, upgrade: bool = False) -> socket.socket:
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        extra = "Upgrade: websocket\r\nConnection: Upgrade\r\n" if upgrade else ""
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: t\r\n{extra}\r\n".encode())
        return sock

    def until(self, target: str, status: int, timeout: float = 5.0) -> None:
        deadline = time.monotonic() + timeout
        while self.status(target) != status:
            assert time.monotonic() < deadline, f"{target} never answered {status}"
            time.sleep(0.02)

    def close(self) -> None:
        self.proc.stop()
        self.app.stop()
        self.hang.close()


@pytest.fixture(scope="module")
def daemon(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Daemon]:
    d = Daemon(tmp_path_factory.mktemp("limits"))
    yield d
    d.close()


def test_a_delayed_request_waits_on_a_timer_while_other_requests_are_served(
    daemon: Daemon,
) -> None:
    assert daemon.status("/paced/a") == 200  # the bucket now holds nothing
    start = time.monotonic()
    sockets = [daemon.open("/paced/b"), daemon.open("/paced/c")]  # 200 ms and 400 ms
    sockets[1].settimeout(5)
    assert daemon.status("/free/x") == 200
    served = time.monotonic() - start
    for sock in sockets:
        assert sock.recv(100).startswith(b"HTTP/1.1 200")
        sock.close()
    waited = time.monotonic() - start
    assert served < 0.15, "the loop was blocked by a delayed request"
    assert 0.35 < waited < 2.0, "the second delayed request did not wait its 400 ms"


def test_limit_conn_is_given_back_when_an_aborted_request_ends(daemon: Daemon) -> None:
    held = daemon.open("/hang/x")
    daemon.until("/fast/x", 503)
    # the client gives up: a reset aborts the request (a FIN alone is a half-close,
    # which still waits for its answer)
    held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    held.close()
    daemon.until("/fast/x", 200)


def test_limit_conn_holds_for_a_websocket_tunnel_until_it_closes(daemon: Daemon) -> None:
    tunnel = daemon.open("/upgrade", upgrade=True)
    assert tunnel.recv(200).startswith(b"HTTP/1.1 101")
    tunnel.sendall(b"ping")
    assert tunnel.recv(10) == b"ping"
    assert daemon.status("/fast/x") == 503
    tunnel.close()
    daemon.until("/fast/x", 200)


def test_a_zone_keeps_its_state_across_a_reload_unless_its_definition_changes(
    daemon: Daemon,
) -> None:
    assert daemon.status("/kept/x") == 200
    assert daemon.status("/kept/x") == 503
    assert daemon.proc.cli("reload").returncode == 0
    assert daemon.status("/kept/x") == 503
    daemon.write(zone_size="2m")
    assert daemon.proc.cli("reload").returncode == 0
    assert daemon.status("/kept/x") == 200


@pytest.mark.parametrize("location", ["/upload/", "/stream/"])
def test_a_delayed_request_body_reaches_the_app_whole(daemon: Daemon, location: str) -> None:
    """The body comes with the head while limit_req makes the request wait 500 ms: it is
    kept and sent on after the delay, with and without proxy_request_buffering."""
    sized = f"POST {location}a HTTP/1.1\r\nHost: t\r\nContent-Length: 5\r\n"
    chunked = f"POST {location}b HTTP/1.1\r\nHost: t\r\nTransfer-Encoding: chunked\r\n"
    requests = [
        sized + "Connection: close\r\n\r\nhello",
        chunked + "Connection: close\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    ]
    daemon.app.clear()
    for request in requests:
        assert daemon.status(f"{location}charge") == 200  # the next one waits 500 ms
        start = time.monotonic()
        assert daemon.send(request.encode()).startswith(b"HTTP/1.1 200")
        assert time.monotonic() - start >= 0.25
    bodies = {r.target: r.body for r in daemon.app.received}
    assert bodies[f"{location}a"] == b"hello" and bodies[f"{location}b"] == b"hello world"


def test_refusals_and_delays_are_logged_as_nginx_logs_them(daemon: Daemon) -> None:
    log = (daemon.tmp / "error.log").read_text()
    assert 'limiting requests, excess: 1.000 by zone "kept", client: 127.0.0.1' in log
    assert 'limiting connections by zone "addr", client: 127.0.0.1' in log
