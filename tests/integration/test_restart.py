"""Apps outlive the daemon: a SIGKILL, a crash or `nonstop stop`, then the next start adopts
them (same pids, no restart); a recycled pid is never adopted nor signalled; `stop
--apps` stops them; with systemd socket activation a restart refuses no connection.

Real `nonstop run` subprocesses, real pyapp instances, real sockets; load loops bounded in
count and time (tests/support/apps/harness.py).
"""

from __future__ import annotations

import http.client
import os
import select
import shutil
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, Load, deployed
from tests.support.restarts import (
    SocketActivated,
    app_daemon,
    app_pids,
    kill_daemon,
    pid_alive,
    stop_leftover_apps,
    wait_gone,
)

from nonstop.engines.nginx import find_nginx
from nonstop.supervisor import is_our_process, process_start_ticks
from nonstop.supervisor.logfile import describe_exit
from nonstop.supervisor.process import UNKNOWN_EXIT


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[AppDaemon]:
    yield from app_daemon(tmp_path)


ENGINES = [
    pytest.param({}, id="embedded"),
    pytest.param({"workers": 2}, id="2-workers"),
    pytest.param(
        {"engine": "nginx", "workers": 2},
        id="nginx",
        marks=pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed"),
    ),
]


@pytest.mark.parametrize("options", ENGINES)
def test_a_sigkilled_daemon_restarted_adopts_its_apps_without_restarting_them(
    tmp_path: Path, options: dict[str, Any]
) -> None:
    """With every engine.  nginx is adopted too: it serves on while no nonstop runs."""
    for daemon in app_daemon(tmp_path, **options):
        _killed_and_adopted(daemon, options.get("engine") == "nginx")


def _killed_and_adopted(daemon: AppDaemon, nginx: bool) -> None:
    daemon.start()
    deployed(daemon, "v1")
    before = app_pids(daemon)
    assert len(before) == 1
    master = daemon.status()["nginx"]["master"] if nginx else None
    with Load(daemon.port, clients=4, limit=60, check_reuse=True) as load:
        load.wait_requests(50)
        kill_daemon(daemon, signal.SIGKILL)
        (pid,) = before.values()
        assert pid_alive(pid), "the app died with the daemon"
        if nginx:
            load.wait_requests(50)  # nginx serves while no nonstop runs

        daemon.start()
        daemon.wait_serving("v1", timeout=5)
        load.wait_requests(50)
    assert app_pids(daemon) == before  # adopted: the same process, not restarted
    if nginx:
        assert daemon.status()["nginx"]["master"] == master  # adopted, not restarted
        assert load.failed == [], load.failed[:5]
    log = (daemon.dir / "state" / "logs" / f"web-{next(iter(before))}.log").read_text()
    assert f"adopt app=web release=v1 port={next(iter(before))} pid={pid}" in log
    assert "adopted web release v1" in daemon.process.stderr()

    # the adopted instance is drained and stopped like any other; how it exited is known
    # only to the nonstop that started it, and the deploy says so
    done = daemon.cli("deploy", "web", "--release", "v2")
    assert done.returncode == 0, done.stdout + done.stderr
    said = done.stdout + done.stderr
    assert f"(pid {pid}, {describe_exit(UNKNOWN_EXIT)})" in said, said
    assert "-256" not in said
    daemon.wait_serving("v2")
    assert wait_gone(pid), "the adopted v1 instance was not stopped by the deploy"


def test_an_adopted_instance_that_crashes_is_restarted_as_if_started_here(
    daemon: AppDaemon,
) -> None:
    daemon.start()
    deployed(daemon, "v1")
    ((port, pid),) = app_pids(daemon).items()
    kill_daemon(daemon, signal.SIGKILL)
    daemon.start()
    assert app_pids(daemon) == {port: pid}
    os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        now = app_pids(daemon)
        if now.get(port) not in (None, pid):
            break
        time.sleep(0.05)
    assert app_pids(daemon).get(port) not in (None, pid), "the crash was not restarted"
    daemon.wait_serving("v1")


def test_a_recycled_pid_is_neither_adopted_nor_signalled(daemon: AppDaemon) -> None:
    daemon.start()
    deployed(daemon, "v1")
    ((port, pid),) = app_pids(daemon).items()
    kill_daemon(daemon, signal.SIGKILL)
    os.killpg(pid, signal.SIGKILL)
    assert wait_gone(pid)
    # A stranger now has the recorded pid: it leads its own group, as the app did, but
    # started later.  The store is made to point at it, as a recycled pid would.
    stranger = subprocess.Popen(["sleep", "60"], start_new_session=True)
    try:
        db = sqlite3.connect(daemon.dir / "state" / "state.db")
        with db:
            db.execute("UPDATE instances SET pid = ? WHERE port = ?", (stranger.pid, port))
        db.close()
        daemon.start()
        daemon.wait_serving("v1", timeout=15)
        now = app_pids(daemon)
        assert now[port] not in (pid, stranger.pid)  # a new instance was started
        assert stranger.poll() is None, "the stranger behind the recycled pid was signalled"
        assert "adopted" not in daemon.process.stderr()
    finally:
        stranger.kill()
        stranger.wait()


def test_stop_leaves_the_apps_serving_and_stop_apps_stops_them(daemon: AppDaemon) -> None:
    daemon.start()
    deployed(daemon, "v1")
    ((port, pid),) = app_pids(daemon).items()

    done = daemon.cli("stop")
    assert done.returncode == 0, done.stderr
    assert "its apps keep running" in done.stderr
    assert daemon.process.proc is not None and daemon.process.proc.wait(5) == 0
    assert is_our_process(pid, process_start_ticks(pid))
    assert _direct_get(port) == "v1"  # still serving on its own port

    daemon.start()
    assert app_pids(daemon) == {port: pid}

    done = daemon.cli("stop", "--apps")
    assert done.returncode == 0, done.stderr
    assert "its apps are stopped too" in done.stderr
    assert wait_gone(pid), "stop --apps left the app running"


def test_sigterm_leaves_the_apps_and_sigint_stops_them(daemon: AppDaemon) -> None:
    daemon.start()
    deployed(daemon, "v1")
    ((port, pid),) = app_pids(daemon).items()
    assert daemon.process.stop(apps=False) == 0  # SIGTERM: what systemd sends
    assert pid_alive(pid)
    daemon.start()
    assert app_pids(daemon) == {port: pid}
    assert daemon.process.stop() == 0  # SIGINT: Ctrl-C in the daemon's terminal
    assert wait_gone(pid)


@pytest.mark.parametrize("master_process", [True, False], ids=["workers", "one-process"])
def test_a_restart_under_socket_activation_refuses_no_connection(
    tmp_path: Path, master_process: bool
) -> None:
    """A graceful stop and start fails no request, and neither does a SIGKILL of nonstop:
    its worker finishes what it holds and leaves, while new connections wait in the
    kernel's queue for the next nonstop.  With ``master_process = false`` the proxy dies
    with nonstop, and a SIGKILL fails the requests in flight on the connections it held
    (at most one per client).  No connection is refused while no nonstop runs, and the
    app is never restarted."""
    d = AppDaemon(tmp_path / "d", pyapp_command(), verify="200ms", master_process=master_process)
    activated = SocketActivated(d)
    clients = 8
    try:
        activated.start()
        deployed(d, "v1")
        ((port, pid),) = app_pids(d).items()
        failed = {}
        for how in (signal.SIGTERM, signal.SIGKILL):
            with Load(d.port, clients=clients, limit=60, slow_ms=50, check_reuse=True) as load:
                load.wait_requests(100)
                activated.kill(how)
                time.sleep(0.3)  # no daemon for a while: connections queue in the kernel
                activated.start()
                load.wait_requests(100)
            failed[how] = load.failed
        assert failed[signal.SIGTERM] == [], failed[signal.SIGTERM][:5]
        if master_process:
            assert failed[signal.SIGKILL] == [], failed[signal.SIGKILL][:5]
        assert len(failed[signal.SIGKILL]) <= clients, failed[signal.SIGKILL]
        assert not [f for f in failed[signal.SIGKILL] if "Refused" in f]
        assert app_pids(d) == {port: pid}  # 0 app restarts across both
        assert activated.starts == 3
    finally:
        activated.stop()
        stop_leftover_apps(d.dir / "state")


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
def test_a_stop_on_systemd_sockets_closes_no_idle_connection_under_a_request(
    tmp_path: Path,
) -> None:
    """systemd keeps the listening socket for the next nonstop, so a stop need not close
    an idle keep-alive connection at once, under a request its client may be sending:
    as after an upgrade, the next answer on it says Connection: close."""
    d = AppDaemon(tmp_path / "d", pyapp_command(), verify="200ms")
    activated = SocketActivated(d)
    try:
        activated.start()
        deployed(d, "v1")
        conn = http.client.HTTPConnection("127.0.0.1", d.port, timeout=10)
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"v1"
        assert activated.proc is not None and conn.sock is not None
        activated.proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 10
        while "shutting down" not in d.process.stderr():
            assert time.monotonic() < deadline, "the stop did not begin"
            time.sleep(0.02)
        # closed at once, as before, the connection would show its EOF well within this
        readable, _, _ = select.select([conn.sock], [], [], 0.5)
        assert not readable, "the idle connection was closed under its client"
        conn.request("GET", "/")
        answer = conn.getresponse()
        assert (answer.status, answer.read()) == (200, b"v1")
        assert answer.getheader("Connection") == "close"
        activated.proc.wait(30)
        activated.start()  # the next nonstop, on the same socket
        assert d.get() == (200, "v1")
    finally:
        activated.stop()
        stop_leftover_apps(d.dir / "state")


def _direct_get(port: int) -> str:
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", "/")
        return conn.getresponse().read().decode()
    finally:
        conn.close()
