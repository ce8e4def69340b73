"""Restarting a daemon under test: kill it, find its apps' pids, start it the way systemd
starts a socket-activated service, and clean up app instances a killed daemon left.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.apps.harness import AppDaemon
from tests.support.proc import stop_leftover_apps

from nonstop.supervisor import is_gone

__all__ = [
    "SocketActivated",
    "WebSocketLoad",
    "app_daemon",
    "app_pids",
    "echoed",
    "kill_daemon",
    "open_websocket",
    "pid_alive",
    "stop_leftover_apps",
    "wait_gone",
]


def app_daemon(where: Path, **options: Any) -> Iterator[AppDaemon]:
    """A fixture body: a daemon with pyapp as "web" (not started; ``options`` as
    ``app_config`` takes them); afterwards whichever daemon serves then (after an upgrade
    it is not our child) is stopped, apps too."""
    from tests.support.apps import pyapp_command

    d = AppDaemon(where / "d", pyapp_command(), **{"verify": "200ms", **options})
    try:
        yield d
    finally:
        if d.cli("status").returncode == 0:
            d.cli("stop", "--apps", timeout=60)
        d.process.stop()
        stop_leftover_apps(d.dir / "state")


def app_pids(d: AppDaemon) -> dict[int, int]:
    """The live instances of app "web": port -> pid."""
    instances = d.status()["apps"]["web"]["instances"]
    return {int(i["port"]): int(i["pid"]) for i in instances if i["live"]}


def kill_daemon(d: AppDaemon, signum: int) -> None:
    """Signal the daemon that serves now (after an upgrade, not the one we started), by
    the pid it reports, and wait until it has gone."""
    pid = int(d.status()["pid"])
    proc = d.process.proc
    if proc is not None and proc.pid == pid:
        proc.send_signal(signum)
        proc.wait(30)
        return
    os.kill(pid, signum)
    assert wait_gone(pid, 30), f"nonstop {pid} still runs after signal {signum}"


def pid_alive(pid: int) -> bool:
    """Running (a zombie is not)."""
    return not is_gone(pid)


def wait_gone(pid: int, timeout: float = 15.0) -> bool:
    deadline = time.monotonic() + timeout
    while pid_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.02)
    return True


class SocketActivated:
    """``d``'s daemon started as systemd starts a socket-activated service.

    The listening socket is bound here and held across daemon restarts, as systemd's
    .socket unit holds it; each start passes it as fd 3 with ``LISTEN_FDS=1`` to Debian's
    ``systemd-socket-activate``, which passes it on to ``nonstop run`` (it starts the
    daemon once the first connection waits on the socket).
    """

    def __init__(self, d: AppDaemon, reuse_port: bool = False) -> None:
        self.d = d
        # ReusePort=no, a .socket unit's default, unless more than one worker shares it
        self.sock = socket.create_server(("127.0.0.1", d.port), backlog=511, reuse_port=reuse_port)
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self, timeout: float = 20.0) -> None:
        fd = self.sock.fileno()
        place = "" if fd == 3 else f"exec 3<&{fd} {fd}<&-; "
        script = place + 'LISTEN_PID=$$ LISTEN_FDS=1 exec "$@"'
        argv = ["bash", "-c", script, "bash", "systemd-socket-activate"]
        argv += [sys.executable, "-m", "nonstop", "run", "-c", str(self.d.config)]
        argv += ["--shutdown-timeout", "10s"]
        with open(self.d.dir / "nonstop.stderr", "ab") as log:
            self.proc = subprocess.Popen(
                argv, stdout=log, stderr=log, cwd=self.d.dir, pass_fds=(fd,)
            )
        self.d.process.proc = self.proc  # so the harness sees (and stops) this daemon
        self.starts += 1
        # systemd-socket-activate starts the daemon when a connection waits: make one.
        with socket.create_connection(("127.0.0.1", self.d.port), timeout=5):
            pass
        deadline = time.monotonic() + timeout
        while self.d.cli("status").returncode != 0:
            if self.proc.poll() is not None or time.monotonic() >= deadline:
                raise RuntimeError(f"nonstop did not start:\n{self.d.process.stderr()}")
            time.sleep(0.05)

    def kill(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.kill(signal.SIGINT)  # stops the apps too
        self.sock.close()


@dataclass
class WebSocketLoad:
    """``clients`` threads, each opening WebSocket-like sessions through the proxy (the
    app's ``/ws`` echo) one after another: ``messages`` round trips ``pause`` apart, then
    a clean close.  A session that is refused, cut or answered wrong is a failure."""

    port: int
    clients: int = 4
    messages: int = 20
    pause: float = 0.02
    limit: float = 60.0
    sessions: int = 0
    failed: list[str] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _threads: list[threading.Thread] = field(default_factory=list)

    def __enter__(self) -> WebSocketLoad:
        self._threads = [
            threading.Thread(target=self._run, daemon=True) for _ in range(self.clients)
        ]
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(30)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        while not self._stop.is_set() and time.monotonic() < deadline:
            try:
                self._session()
            except (OSError, AssertionError) as exc:
                with self._lock:
                    self.failed.append(repr(exc))
                continue
            with self._lock:
                self.sessions += 1

    def _session(self) -> None:
        with open_websocket(self.port) as sock:
            for n in range(self.messages):
                echoed(sock, f"message {n}\n".encode())
                time.sleep(self.pause)


def open_websocket(port: int, timeout: float = 15.0) -> socket.socket:
    """A session with the app's ``/ws`` echo through the proxy, past its 101 (pyapp sends
    nothing after the head, so the stream holds only echoes from here)."""
    sock = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    try:
        sock.sendall(
            b"GET /ws HTTP/1.1\r\nHost: app\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = sock.recv(4096)
            assert chunk, f"closed before the 101: {head!r}"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head[:80]
        assert head.endswith(b"\r\n\r\n"), f"bytes after the 101: {head!r}"
    except BaseException:
        sock.close()
        raise
    return sock


def echoed(sock: socket.socket, message: bytes) -> None:
    """Send ``message`` on a session and assert it comes back whole."""
    sock.sendall(message)
    got = b""
    while len(got) < len(message):
        chunk = sock.recv(4096)
        assert chunk, f"cut after {got!r} of {message!r}"
        got += chunk
    assert got == message, (got, message)
