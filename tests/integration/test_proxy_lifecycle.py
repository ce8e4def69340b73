"""Reload and shutdown of a running nonstop: nothing dropped, bad configs refused."""

from __future__ import annotations

import contextlib
import http.client
import signal
import socket
import threading
import time
from collections.abc import Iterator

from tests.integration.test_proxy_http import conf


class LoadLoop:
    """Keep-alive clients sending GETs and POSTs until stopped (bounded in time)."""

    def __init__(self, port: int, clients: int = 4, limit: float = 30.0) -> None:
        self.port = port
        self.ok = 0
        self.failed: list[str] = []
        self.bodies: list[bytes] = []
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._limit = limit
        self._threads = [threading.Thread(target=self._run, args=(i,)) for i in range(clients)]

    def __enter__(self) -> LoadLoop:
        for t in self._threads:
            t.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for t in self._threads:
            t.join(15)

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self._limit
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                if n % 3 == 0:
                    conn.request("POST", "/", body=b"payload")
                else:
                    conn.request("GET", "/")
                resp = conn.getresponse()
                body = resp.read()
                with self._lock:
                    if resp.status == 200:
                        self.ok += 1
                        self.bodies.append(body)
                    else:
                        self.failed.append(f"status {resp.status}")
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failed.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        conn.close()


def seed_conf(include: str) -> str:
    """The seed's blue-green nginx.conf: an included file sets $service_port."""
    return f"""
events {{}}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{{port}};
    location / {{
      include {include};
      proxy_pass $service_port;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header Host $http_host;
    }}
  }}
}}
"""


def test_seed_switch_rewrite_include_and_reload_moves_traffic_without_failures(
    backends, proxy, tmp_path
):
    blue, green = backends(2)
    inc = tmp_path / "service-url.inc"
    inc.write_text(f"set $service_port http://{blue.address};\n")
    p = proxy(seed_conf(str(inc)))
    with LoadLoop(p.port) as load:
        time.sleep(0.5)
        inc.write_text(f"set $service_port http://{green.address};\n")
        result = p.process.cli("reload")
        assert result.returncode == 0, result.stderr
        time.sleep(0.5)
        inc.write_text(f"set $service_port http://{blue.address};\n")
        p.process.signal(signal.SIGHUP)
        time.sleep(0.5)
    assert load.failed == []
    assert load.ok > 50
    assert b"b2" in load.bodies and load.bodies[-1] == b"b1"


def test_reload_with_invalid_config_is_refused_and_old_config_keeps_serving(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(f"server {b1.address};"))
    p.rewrite("events {}\nhttp { server { listen 127.0.0.1:{port}; bogus_directive on; } }\n")
    result = p.process.cli("reload")
    assert result.returncode == 2
    assert "bogus_directive" in result.stderr
    assert str(p.path) in result.stderr
    assert p.request("GET", "/")[2] == b"b1"


def test_reload_keeps_passive_failure_state_of_unchanged_servers(backends, proxy):
    from tests.support.backends import free_port

    (b1,) = backends(1)
    dead = free_port()
    up = f"server 127.0.0.1:{dead}; server {b1.address};"
    p = proxy(conf(up))
    p.request("GET", "/")  # the dead server fails once: disabled for fail_timeout
    p.rewrite(conf(up + f" server {b1.address.replace('127.0.0.1', '127.0.0.2')} down;"))
    assert p.process.cli("reload").returncode == 0
    status = p.process.cli("status", "--json")
    assert status.returncode == 0, status.stderr
    import json

    peers = {s["address"]: s for s in json.loads(status.stdout)["upstreams"]["app"]}
    assert peers[f"127.0.0.1:{dead}"]["fails"] == 1


def websocket_proxy(backends, proxy):
    """A proxy in front of one backend, passing the Upgrade headers on."""
    (b1,) = backends(1)
    return proxy(
        conf(
            f"server {b1.address};",
            "proxy_set_header Upgrade $http_upgrade; proxy_set_header Connection upgrade;",
        )
    )


@contextlib.contextmanager
def open_tunnel(port: int) -> Iterator[socket.socket]:
    """A connection upgraded through the proxy (its 101 read), closed on exit."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(
            b"GET /upgrade HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1024)
        assert head.startswith(b"HTTP/1.1 101")
        yield sock


def test_reload_does_not_drop_an_open_websocket(backends, proxy):
    p = websocket_proxy(backends, proxy)
    with open_tunnel(p.port) as sock:
        assert p.process.cli("reload").returncode == 0
        sock.sendall(b"after reload")
        assert sock.recv(1024) == b"after reload"


def test_a_websocket_the_client_closes_ends_on_both_sides_at_once(backends, proxy):
    """As nginx's upgraded connections: the client's end ends the tunnel, so a stop (or
    an upgrade of nonstop) does not wait its grace period for it."""
    p = websocket_proxy(backends, proxy)
    with open_tunnel(p.port) as sock:
        sock.sendall(b"one message")
        assert sock.recv(1024) == b"one message"
    started = time.monotonic()
    p.process.signal(signal.SIGTERM)
    assert p.process.proc is not None
    assert p.process.proc.wait(10) == 0
    assert time.monotonic() - started < 5  # not the 10 s --shutdown-timeout of the harness


def test_sigterm_lets_in_flight_requests_finish(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(f"server {b1.address};"))
    result: list[int] = []
    t = threading.Thread(target=lambda: result.append(p.request("GET", "/sleep/1.5")[0]))
    t.start()
    deadline = time.monotonic() + 5
    while not b1.received and time.monotonic() < deadline:
        time.sleep(0.01)
    p.process.signal(signal.SIGTERM)
    t.join(10)
    assert result == [200]
    assert p.process.proc is not None
    assert p.process.proc.wait(10) == 0
