"""A nonstop daemon with one ``[apps.web]``, and a keep-alive load loop through it.

Used by the deploy integration tests and ``bench/deploy_under_load.py``.  The daemon is a
real ``nonstop run`` subprocess; the CLI is called as a user would; the load is real
HTTP/1.1 keep-alive clients on threads, bounded in time.
"""

from __future__ import annotations

import http.client
import json
import select
import socket
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from tests.support.backends import free_port
from tests.support.proc import NonstopProcess

__all__ = ["AppDaemon", "Load", "app_config"]


def app_config(
    proxy_port: int,
    ports: tuple[int, int],
    command: str,
    *,
    verify: str = "300ms",
    start_timeout: str = "10s",
    interval: str = "50ms",
    drain_timeout: str = "10s",
    stop_timeout: str = "5s",
    keepalive: int = 32,
    engine: str = "embedded",
    workers: int = 1,
    health_path: str = "/infra/health",
    env: dict[str, str] | None = None,
    user: str | None = None,
    worker_user: str | None = None,
    master_process: bool = True,
) -> str:
    env_line = (
        ""
        if env is None
        else "env = { " + ", ".join(f"{k} = {json.dumps(v)}" for k, v in env.items()) + " }\n"
    )
    return f"""
state_dir = "state"
engine = "{engine}"
workers = {workers}
{"" if worker_user is None else f'worker_user = "{worker_user}"'}
{"" if master_process else "master_process = false"}

[apps.web]
command = {json.dumps(command)}
ports = [{ports[0]}, {ports[1]}]
keepalive = {keepalive}
health = {{ path = "{health_path}", expect_body = "UP", interval = "{interval}", \
timeout = "2s", start_timeout = "{start_timeout}" }}
{env_line}{"" if user is None else f'user = "{user}"'}
stop_timeout = "{stop_timeout}"
drain_timeout = "{drain_timeout}"
verify = "{verify}"

[[servers]]
listen = ["127.0.0.1:{proxy_port}"]
locations = [ {{ path = "/", pass = "web" }} ]
"""


class AppDaemon:
    """``nonstop run`` with an app; ``deploy``/``rollback``/``status`` through the CLI."""

    def __init__(self, where: Path, command: str, **options: Any) -> None:
        where.mkdir(parents=True, exist_ok=True)
        self.dir = where
        self.port = free_port()
        self.app_ports = (free_port(), free_port())
        self.config = where / "nonstop.toml"
        self.options = options
        self.write(command, **options)
        self.process = NonstopProcess(self.config, [self.port], ["--shutdown-timeout", "10s"])

    def write(self, command: str, **options: Any) -> None:
        merged = {**self.options, **options}
        self.config.write_text(app_config(self.port, self.app_ports, command, **merged))

    def start(self) -> AppDaemon:
        self.process = NonstopProcess(self.config, [self.port], ["--shutdown-timeout", "10s"])
        self.process.start()
        return self

    def stop(self) -> int:
        return self.process.stop()

    def cli(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        return self.process.cli(*args, timeout=timeout)

    def deploy_async(self, release: str, *extra: str) -> subprocess.Popen[str]:
        argv = [sys.executable, "-m", "nonstop", "deploy", "web", "--release", release]
        return subprocess.Popen(
            [*argv, *extra, "-c", str(self.config)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            cwd=self.dir,
        )

    def status(self) -> dict[str, Any]:
        done = self.cli("status", "web", "--json")
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def get(self, path: str = "/") -> tuple[int, str]:
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
        try:
            conn.request("GET", path)
            resp = conn.getresponse()
            return resp.status, resp.read().decode(errors="replace")
        finally:
            conn.close()

    def wait_serving(self, release: str, timeout: float = 15.0) -> None:
        deadline = time.monotonic() + timeout
        last: tuple[int, str] | None = None
        while time.monotonic() < deadline:
            try:
                last = self.get()
            except OSError:
                last = None
            if last == (200, release):
                return
            time.sleep(0.05)
        raise AssertionError(f"{release} not served after {timeout}s (last answer {last})")


def _closed_by_peer(sock: socket.socket) -> bool:
    """An idle kept-alive connection that is readable has been closed (or reset)."""
    readable, _, _ = select.select([sock], [], [], 0)
    return bool(readable)


@dataclass
class Load:
    """``clients`` keep-alive connections sending GETs, POSTs and slow GETs until stopped.

    Every answer that is not a 200 with the expected body, and every connection error,
    is a failed request.  ``first_seen`` maps a release to when it first answered.

    ``check_reuse``: before reusing a kept-alive connection, look whether the server has
    closed it, and open a new one if so -- as urllib3, Go's net/http and browsers do.
    Without it a client writes its next request into a connection the server already
    closed (http.client's way), and that request fails.
    """

    port: int
    clients: int = 20
    limit: float = 60.0
    slow_ms: int = 150
    check_reuse: bool = False
    ok: int = 0
    reconnects: int = 0
    failed: list[str] = field(default_factory=list)
    releases: Counter[str] = field(default_factory=Counter)
    first_seen: dict[str, float] = field(default_factory=dict)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> Load:
        self._threads = [
            threading.Thread(target=self._run, args=(i,), daemon=True) for i in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def wait_requests(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        start = self.ok
        while self.ok - start < count and time.monotonic() < deadline:
            time.sleep(0.01)
        assert self.ok - start >= count, f"only {self.ok - start} answers in {timeout}s"

    def _one(self, conn: http.client.HTTPConnection, index: int, n: int) -> None:
        kind = (index + n) % 4
        method = "POST" if kind == 0 else "GET"
        if kind == 0:
            payload = f"client {index} request {n}".encode()
            conn.request("POST", "/", body=payload)
            expect: str | None = payload.decode()
        elif kind == 1 and self.slow_ms:
            conn.request("GET", f"/slow?ms={self.slow_ms}")
            expect = None
        else:
            conn.request("GET", "/")
            expect = None
        resp = conn.getresponse()
        body = resp.read().decode(errors="replace")
        with self._lock:
            if resp.status != 200 or (expect is not None and body != expect):
                self.failed.append(f"status {resp.status} to {method}: {body[:80]!r}")
                return
            self.ok += 1
            if kind not in (0, 1):
                self.releases[body] += 1
                self.first_seen.setdefault(body, time.monotonic())

    def _run(self, index: int) -> None:
        deadline = time.monotonic() + self.limit
        conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        n = 0
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            if self.check_reuse and conn.sock is not None and _closed_by_peer(conn.sock):
                conn.close()
                with self._lock:
                    self.reconnects += 1
            try:
                self._one(conn, index, n)
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failed.append(repr(exc))
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=15)
        conn.close()


D = TypeVar("D", bound=AppDaemon)


def pyapp_daemons(tmp_path: Path, kind: type[D]) -> Iterator[Callable[..., D]]:
    """A fixture body: make daemons running pyapp (``make(extra, **options)``), stop them all."""
    from tests.support.apps import pyapp_command

    running: list[D] = []

    def make(extra: str = "", **options: Any) -> D:
        d = kind(tmp_path / f"d{len(running)}", pyapp_command(extra), **options)
        running.append(d)
        d.start()
        return d

    yield make
    for d in running:
        d.stop()


def deployed(d: AppDaemon, release: str) -> None:
    """Deploy ``release`` of the test app "web" and insist that it worked."""
    done = d.cli("deploy", "web", "--release", release)
    assert done.returncode == 0, done.stdout + done.stderr


def assert_a_5xx_release_is_rolled_back(d: AppDaemon) -> dict[str, Any]:
    """Deploy a v2 that answers 500 under load: verify must roll back to v1.

    Returns the app's status afterwards.
    """
    from tests.support.apps import pyapp_command

    deployed(d, "v1")
    d.write(pyapp_command("--error-status 500"))
    assert d.cli("reload").returncode == 0
    with Load(d.port, clients=8, limit=30, slow_ms=0) as load:
        load.wait_requests(20)
        done = d.cli("deploy", "web", "--release", "v2")
        load.wait_requests(20)
    assert done.returncode == 1, done.stdout + done.stderr
    assert "rolled back" in done.stderr and "5xx ratio" in done.stderr
    assert d.get() == (200, "v1")
    app: dict[str, Any] = d.status()["apps"]["web"]
    assert app["live"]["release"] == "v1"
    assert app["history"][0]["outcome"] == "rolled_back"
    return app


def assert_a_rollback_moves_traffic_back(d: AppDaemon) -> None:
    """Deploy v1 then v2, and ``nonstop rollback`` under load: v1 serves, nothing fails."""
    deployed(d, "v1")
    deployed(d, "v2")
    with Load(d.port, clients=10, limit=30) as load:
        load.wait_requests(50)
        done = d.cli("rollback", "web")
        load.wait_requests(50)
    assert done.returncode == 0, done.stdout + done.stderr
    assert load.failed == [], load.failed[:5]
    assert d.get() == (200, "v1")
