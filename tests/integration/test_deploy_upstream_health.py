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
