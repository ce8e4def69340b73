"""A nonstop killed with SIGKILL leaves its nginx running; the next start stops that nginx."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from tests.support.backends import free_port
from tests.support.proc import NginxProcess, NonstopProcess

from nonstop.engines.nginx.command import children

pytestmark = pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed")


def site(tmp_path: Path, port: int) -> Path:
    conf = tmp_path / "site.conf"
    conf.write_text(
        "events {}\nhttp {\n  server {\n"
        f"    listen 127.0.0.1:{port};\n"
        '    location / { return 200 "ok"; }\n  }\n}\n'
    )
    return conf


def answered(port: int, timeout: float = 15.0) -> bytes:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as resp:
                return bytes(resp.read())
        except OSError:
            if time.monotonic() >= deadline:
                raise
            time.sleep(0.05)


def alive(pid: int) -> bool:
    return os.path.exists(f"/proc/{pid}")


def test_the_next_start_stops_the_nginx_a_killed_nonstop_left_running(tmp_path: Path) -> None:
    port = free_port()
    conf = site(tmp_path, port)
    first = NonstopProcess(conf, [port], ["--engine", "nginx"]).start()
    assert first.proc is not None
    try:
        masters = children(first.proc.pid)
        assert len(masters) == 1
    except BaseException:
        first.stop()  # it and its nginx must not outlive a failed test
        raise
    (master,) = masters
    first.proc.send_signal(signal.SIGKILL)
    first.proc.wait(10)
    try:
        assert alive(master), "the orphan should still be there before the next start"
        second = NonstopProcess(conf, [port], ["--engine", "nginx"]).start()
        try:
            deadline = time.monotonic() + 10
            while alive(master) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not alive(master)
            # the new nginx comes up once the orphan has let go of the port
            assert answered(port) == b"ok"
        finally:
            assert second.stop() == 0, second.stderr()
    finally:
        if alive(master):
            os.kill(master, signal.SIGKILL)
