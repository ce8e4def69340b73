"""`nonstop upgrade` and SIGUSR2: a new nonstop takes the listening sockets, the admin
socket, the state directory's lock and the running apps; the old one finishes and exits.

Real daemons, real pyapp instances, keep-alive GET/POST/slow load and WebSocket sessions
through the proxy, all bounded in time.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, Load, deployed
from tests.support.backends import free_port
from tests.support.proc import NonstopProcess
from tests.support.restarts import (
    WebSocketLoad,
    app_daemon,
    app_pids,
    echoed,
    open_websocket,
    pid_alive,
    wait_gone,
)

from nonstop.engines.nginx import find_nginx


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[AppDaemon]:
    yield from app_daemon(tmp_path)


def _answers(d: AppDaemon) -> bool:
    return d.cli("status").returncode == 0


def daemon_pid(d: AppDaemon) -> int:
    return int(d.status()["pid"])


def upgraded(d: AppDaemon, how: str = "command", wait: bool = True) -> tuple[int, int]:
    """Upgrade (``nonstop upgrade``, or SIGUSR2); (old pid, new pid) once the new one
    answers and (``wait``) the old one is gone."""
    old = daemon_pid(d)
    if how == "command":
        done = d.cli("upgrade")
        assert done.returncode == 0, done.stderr
        assert "serves now" in done.stderr
    else:
        os.kill(old, signal.SIGUSR2)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _answers(d) and (new := daemon_pid(d)) != old:
            break
        time.sleep(0.05)
    else:
        raise AssertionError(f"no new nonstop after {how}:\n{d.process.stderr()[-3000:]}")
    if wait:
        assert wait_gone(old, 30), "the old nonstop did not exit"
    return old, new


def nothing_failed(load: Load, sessions: WebSocketLoad) -> None:
    assert load.failed == [], load.failed[:5]
    assert sessions.failed == [], sessions.failed[:5]
    assert sessions.sessions > 10


class Upload(threading.Thread):
    """One POST of ``size`` bytes sent in chunks over about ``seconds``, its echo read
    back; ``error`` is what went wrong (None: the whole body came back)."""

    def __init__(self, port: int, size: int = 960 << 10, seconds: float = 3.0) -> None:
        super().__init__(daemon=True)
        self.port, self.size, self.seconds = port, size, seconds
        self.error: str | None = "not finished"

    def run(self) -> None:
        chunk = bytes(range(256)) * 256  # 64 KiB
        count = self.size // len(chunk)
        try:
            with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
                sock.sendall(
                    f"POST / HTTP/1.1\r\nHost: app\r\nContent-Length: {count * len(chunk)}"
                    "\r\nConnection: close\r\n\r\n".encode()
                )
                for _ in range(count):
                    sock.sendall(chunk)
                    time.sleep(self.seconds / count)
                answer = b""
                while data := sock.recv(1 << 16):
                    answer += data
            head, _, body = answer.partition(b"\r\n\r\n")
            if not head.startswith(b"HTTP/1.1 200") or body != chunk * count:
                self.error = f"{head[:60]!r}, {len(body)} of {count * len(chunk)} bytes back"
            else:
                self.error = None
        except OSError as exc:
            self.error = repr(exc)


@pytest.fixture
def two_workers(tmp_path: Path) -> Iterator[AppDaemon]:
    yield from app_daemon(tmp_path, workers=2)


def worker_pids(d: AppDaemon) -> set[int]:
    return {int(w["pid"]) for w in d.status()["workers"]}


def test_upgrades_with_two_workers_hand_over_their_sockets_and_fail_no_request(
    two_workers: AppDaemon,
) -> None:
    """Every worker's SO_REUSEPORT socket goes to the new nonstop's worker of the same
    index: keep-alive GETs and POSTs, WebSocket sessions, a 960 KiB upload (under
    client_max_body_size) and a WebSocket held open across the upgrade all go through,
    the held one until the old nonstop's grace period ends, and no app restarts."""
    d = two_workers
    d.start()
    deployed(d, "v1")
    apps = app_pids(d)
    with (
        Load(d.port, clients=6, limit=90, slow_ms=100, check_reuse=True) as load,
        WebSocketLoad(d.port, clients=2, limit=90) as sessions,
    ):
        load.wait_requests(100)
        held = open_websocket(d.port)
        upload = Upload(d.port)
        upload.start()
        before = worker_pids(d)
        assert len(before) == 2
        old, new = upgraded(d, wait=False)
        after = worker_pids(d)
        assert len(after) == 2 and not after & before  # the new nonstop's own workers
        with held:
            echoed(held, b"still here after the new nonstop took over\n")  # an old worker
            assert wait_gone(old, 30), "the old nonstop did not exit"
            # its grace period (--shutdown-timeout 10s) over, the old worker closed it
            held.settimeout(5)
            try:
                assert held.recv(64) == b""
            except ConnectionResetError:
                pass
        upload.join(30)
        assert upload.error is None, upload.error
        load.wait_requests(100)
        for how in ("SIGUSR2", "command"):
            upgraded(d, how)
            load.wait_requests(100)
    nothing_failed(load, sessions)
    assert app_pids(d) == apps  # no app restarted
    assert len(worker_pids(d)) == 2
    assert new != daemon_pid(d)


def test_upgrades_under_get_post_and_websocket_load_fail_no_request(
    daemon: AppDaemon,
) -> None:
    daemon.start()
    deployed(daemon, "v1")
    apps = app_pids(daemon)
    first = daemon.process.proc
    assert first is not None
    with (
        Load(daemon.port, clients=6, limit=90, slow_ms=100, check_reuse=True) as load,
        WebSocketLoad(daemon.port, clients=3, limit=90) as sessions,
    ):
        load.wait_requests(100)
        upgraded(daemon)
        assert first.wait(10) == 0  # the old one exits cleanly, leaving the apps
        load.wait_requests(100)
        for how in ("command", "SIGUSR2", "command"):
            upgraded(daemon, how)
            load.wait_requests(100)
    nothing_failed(load, sessions)
    assert app_pids(daemon) == apps  # no app restarted
    deployed(daemon, "v2")  # the apps are the new daemon's: deployable
    daemon.wait_serving("v2")
    log = daemon.process.stderr()
    assert "took over from the previous nonstop" in log
    # The state directory stays locked throughout: a second daemon is refused.
    second = subprocess.run(
        [sys.executable, "-m", "nonstop", "run", "-c", str(daemon.config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=daemon.dir,
    )
    assert second.returncode == 1
    assert f"pid {daemon_pid(daemon)}" in second.stderr


def test_a_new_daemon_that_fails_leaves_the_old_one_serving(daemon: AppDaemon) -> None:
    daemon.start()
    deployed(daemon, "v1")
    old = daemon_pid(daemon)
    good = daemon.config.read_text()
    # The new one reads a config that adds a listener on a port something else holds.
    taken = socket.create_server(("127.0.0.1", 0))
    busy = taken.getsockname()[1]
    added = good.replace(
        f'listen = ["127.0.0.1:{daemon.port}"]',
        f'listen = ["127.0.0.1:{daemon.port}", "127.0.0.1:{busy}"]',
    )
    assert added != good
    with (
        taken,
        Load(daemon.port, clients=6, limit=60, slow_ms=50, check_reuse=True) as load,
    ):
        load.wait_requests(50)
        daemon.config.write_text(added)
        done = daemon.cli("upgrade")
        load.wait_requests(50)
    assert done.returncode == 1
    assert "the new nonstop failed to start" in done.stderr, done.stderr
    assert f"bind() to 127.0.0.1:{busy} failed (address in use)" in done.stderr
    assert load.failed == [], load.failed[:5]
    assert daemon_pid(daemon) == old
    # The old one supervises its apps again: a crash is restarted.
    ((port, pid),) = app_pids(daemon).items()
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while app_pids(daemon).get(port) in (None, pid) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert app_pids(daemon).get(port) not in (None, pid)
    daemon.wait_serving("v1")
    # Fixed, the next upgrade goes through.
    daemon.config.write_text(good)
    _, new = upgraded(daemon)
    assert pid_alive(new)


def test_an_upgrade_during_a_deploy_is_refused(daemon: AppDaemon) -> None:
    daemon.start()
    deployed(daemon, "v1")
    held = daemon.cli("deploy", "web", "--release", "v2", "--hold", "--hold-timeout", "2m")
    assert held.returncode == 0, held.stderr
    done = daemon.cli("upgrade")
    assert done.returncode == 1
    assert "upgrade refused: deploy #2 of web is running (hold)" in done.stderr, done.stderr
    assert daemon.cli("abort", "web").returncode == 0
    daemon.wait_serving("v1")


def test_systemd_hears_ready_and_then_the_new_main_pid(
    daemon: AppDaemon, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """``Type=notify`` with ``NotifyAccess=all``: READY=1 once serving, and after an
    upgrade the new daemon names itself the main process."""
    path = tmp_path / "notify.sock"
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as notify:
        notify.bind(str(path))
        notify.settimeout(30)
        monkeypatch.setenv("NOTIFY_SOCKET", str(path))
        daemon.start()
        first = daemon_pid(daemon)
        assert notify.recv(4096).decode() == f"READY=1\nMAINPID={first}"
        _, new = upgraded(daemon)
        assert notify.recv(4096).decode() == f"READY=1\nMAINPID={new}"


@pytest.fixture
def nginx_daemon(tmp_path: Path) -> Iterator[AppDaemon]:
    if find_nginx() is None:
        pytest.skip("nginx is not installed")
    yield from app_daemon(tmp_path, engine="nginx", workers=2)


def test_an_upgrade_with_the_nginx_engine_leaves_nginx_serving_and_adopted(
    nginx_daemon: AppDaemon,
) -> None:
    """nginx keeps its listeners and its workers: the new nonstop adopts the master (no
    reload, no restart) and drives it; ``workers = 2`` runs two nginx workers."""
    d = nginx_daemon
    d.start()
    deployed(d, "v1")
    apps = app_pids(d)
    nginx = d.status()["nginx"]
    assert len(nginx["workers"]) == 2
    assert "worker_processes 2;" in Path(nginx["conf"]).read_text()
    with Load(d.port, clients=6, limit=60, check_reuse=True) as load:
        load.wait_requests(100)
        for how in ("command", "SIGUSR2"):
            upgraded(d, how)
            load.wait_requests(100)
    assert load.failed == [], load.failed[:5]
    assert app_pids(d) == apps
    after = d.status()["nginx"]
    assert (after["master"], after["workers"], after["reloads"]) == (
        nginx["master"],
        nginx["workers"],
        0,
    )
    deployed(d, "v2")  # the new nonstop drives the adopted nginx
    d.wait_serving("v2")


def test_an_upgrade_hands_over_more_sockets_than_one_sendmsg_carries(tmp_path: Path) -> None:
    """2 workers on 130 addresses are 260 listening sockets, with the lock and the admin
    socket 262 descriptors: more than the kernel takes in one call (253).  All reach the
    new nonstop, and every address still answers."""
    port = free_port()
    addresses = ["127.0.0.1", *(f"127.0.1.{n}" for n in range(1, 130))]
    listens = "".join(f"    listen {address}:{port};\n" for address in addresses)
    conf = tmp_path / "nginx.conf"
    conf.write_text(
        f"worker_processes 2;\nevents {{}}\nhttp {{\n  server {{\n{listens}"
        '    return 200 "up\\n";\n  }\n}\n'
    )
    process = NonstopProcess(conf, [port], ["--shutdown-timeout", "5s"]).start()
    new = 0
    try:
        old = int(json.loads(process.cli("status", "--json").stdout)["pid"])
        done = process.cli("upgrade")
        assert done.returncode == 0, done.stderr
        new = int(json.loads(process.cli("status", "--json").stdout)["pid"])
        assert new != old and wait_gone(old, 30)
        for address in addresses:
            with socket.create_connection((address, port), timeout=5) as sock:
                sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                answer = b""
                while data := sock.recv(4096):
                    answer += data
            assert answer.startswith(b"HTTP/1.1 200") and answer.endswith(b"\r\n\r\nup\n")
    finally:
        process.stop()
        if new:
            os.kill(new, signal.SIGINT)
            if not wait_gone(new, 20):
                os.kill(new, signal.SIGKILL)


@pytest.fixture
def one_process(tmp_path: Path) -> Iterator[AppDaemon]:
    yield from app_daemon(tmp_path, master_process=False)


def test_upgrades_of_a_one_process_nonstop_fail_no_request(one_process: AppDaemon) -> None:
    """``master_process = false``: the proxy is nonstop's own process, and its listening
    sockets go to the new nonstop as they are."""
    d = one_process
    d.start()
    deployed(d, "v1")
    apps = app_pids(d)
    assert not json.loads(d.cli("status", "--json").stdout).get("workers")
    with (
        Load(d.port, clients=6, limit=60, slow_ms=100, check_reuse=True) as load,
        WebSocketLoad(d.port, clients=2, limit=60) as sessions,
    ):
        load.wait_requests(100)
        for how in ("command", "SIGUSR2"):
            upgraded(d, how)
            load.wait_requests(100)
    nothing_failed(load, sessions)
    assert app_pids(d) == apps
    assert not json.loads(d.cli("status", "--json").stdout).get("workers")


def test_an_upgrade_from_two_workers_into_one_process_is_refused_and_they_serve_on(
    two_workers: AppDaemon,
) -> None:
    """One process would take worker 0's sockets only, and the connections the kernel
    queued on worker 1's would be cut: the new nonstop refuses, the old one serves on."""
    d = two_workers
    d.start()
    deployed(d, "v1")
    before = worker_pids(d)
    d.write(pyapp_command(), workers=2, master_process=False)
    done = d.cli("upgrade")
    assert done.returncode == 1, done.stdout + done.stderr
    assert "with master_process off, one process would take the first one's sockets" in (
        done.stderr
    )
    assert worker_pids(d) == before and d.get() == (200, "v1")
