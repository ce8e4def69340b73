"""Active health checks of static ``[upstreams.*]`` inside ``nonstop run``."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.apps import PYAPP
from tests.support.backends import free_port, wait_port
from tests.support.proc import NonstopProcess


def config(proxy: int, ports: list[int]) -> str:
    servers = ", ".join(f'"127.0.0.1:{p}"' for p in ports)
    return f"""
[upstreams.pool]
servers = [{servers}]
health = {{ path = "/infra/health", expect_body = "UP", interval = "100ms", timeout = "1s" }}

[[servers]]
listen = ["127.0.0.1:{proxy}"]
locations = [ {{ path = "/", pass = "pool" }} ]
"""


@pytest.fixture
def apps() -> Iterator[list[subprocess.Popen[bytes]]]:
    started: list[subprocess.Popen[bytes]] = []
    yield started
    for proc in started:
        proc.kill()
        proc.wait(5)


def pyapp(port: int, release: str, *extra: str) -> subprocess.Popen[bytes]:
    argv = [sys.executable, str(PYAPP), str(port), "--release", release, *extra]
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def answers(port: int, count: int) -> list[str]:
    out = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/")
            resp = conn.getresponse()
            out.append(f"{resp.status} {resp.read().decode()}")
        finally:
            conn.close()
    return out


def test_a_server_failing_its_checks_gets_no_traffic_and_a_new_one_waits_for_a_pass(
    tmp_path: Path, apps: list[subprocess.Popen[bytes]]
) -> None:
    good, bad, late = free_port(), free_port(), free_port()
    apps.append(pyapp(good, "good"))
    apps.append(pyapp(bad, "bad", "--unhealthy"))
    wait_port(good)
    wait_port(bad)
    port = free_port()
    path = tmp_path / "nonstop.toml"
    path.write_text(config(port, [good, bad, late]))
    daemon = NonstopProcess(path, [port]).start()
    try:
        deadline = time.monotonic() + 10
        while answers(port, 1) != ["200 good"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(answers(port, 12)) == {"200 good"}  # bad fails its checks, late is not up
        apps.append(pyapp(late, "late"))
        deadline = time.monotonic() + 10
        while "200 late" not in answers(port, 4) and time.monotonic() < deadline:
            time.sleep(0.05)
        assert set(answers(port, 12)) == {"200 good", "200 late"}
    finally:
        daemon.stop()


def slow_first_check(
    apps: list[subprocess.Popen[bytes]], release: str, master_process: bool
) -> tuple[int, str]:
    """An app serving ``release``, and (the proxy's port, its config): the app's check
    takes 3 s and passes; ``master_process = false`` when not ``master_process``."""
    server = free_port()
    apps.append(pyapp(server, release))
    wait_port(server)
    port = free_port()
    text = config(port, [server]).replace('path = "/infra/health"', 'path = "/slow?ms=3000"')
    text = text.replace('timeout = "1s"', 'timeout = "5s"')
    text = text.replace('expect_body = "UP"', f'expect_body = "slept 3000ms on {release}"')
    return port, ("" if master_process else "master_process = false\n") + text


@pytest.mark.parametrize("master_process", [True, False], ids=["worker", "one-process"])
def test_a_server_never_seen_passing_gets_no_traffic_while_its_first_check_runs(
    tmp_path: Path, apps: list[subprocess.Popen[bytes]], master_process: bool
) -> None:
    """Until its first check passes (after 3 s) the server has never passed one, so it
    gets no request, in one process or in workers."""
    port, checked = slow_first_check(apps, "unproven", master_process)
    path = tmp_path / "nonstop.toml"
    path.write_text(checked)
    daemon = NonstopProcess(path, [port]).start()
    try:
        seen = answers(port, 10)  # well within the first check's 3 s
        assert "200 unproven" not in seen, seen
    finally:
        daemon.stop()


@pytest.mark.parametrize("master_process", [True, False], ids=["worker", "one-process"])
def test_a_reload_turning_checks_on_holds_the_servers_until_their_first_pass(
    tmp_path: Path, apps: list[subprocess.Popen[bytes]], master_process: bool
) -> None:
    """As at start: a server the checks have not seen pass gets no traffic, in one
    process and in workers alike (whose control process once marked it healthy)."""
    port, checked = slow_first_check(apps, "live", master_process)
    unchecked = "\n".join(line for line in checked.splitlines() if not line.startswith("health"))
    path = tmp_path / "nonstop.toml"
    path.write_text(unchecked)
    daemon = NonstopProcess(path, [port]).start()
    try:
        assert set(answers(port, 4)) == {"200 live"}
        path.write_text(checked)
        done = daemon.cli("reload")
        assert done.returncode == 0, done.stdout + done.stderr
        held = answers(port, 6)  # well within the first check's 3 s
        assert not [a for a in held if a.startswith("200")], held
        deadline = time.monotonic() + 15  # the check passes after 3 s: traffic again
        while answers(port, 1) != ["200 live"]:
            assert time.monotonic() < deadline, "the server never got traffic back"
            time.sleep(0.1)
    finally:
        daemon.stop()
