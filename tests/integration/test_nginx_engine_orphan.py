"""A nonstop killed with SIGKILL leaves its nginx running; the next start adopts it."""

from __future__ import annotations

import os
import signal
import time
import urllib.request
from pathlib import Path

import pytest
from tests.support.backends import free_port
from tests.support.proc import NginxProcess, NonstopProcess
from tests.support.restarts import wait_gone

from nonstop.engines.nginx.command import children

pytestmark = pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed")


def site(tmp_path: Path, port: int, answer: str = "ok") -> Path:
    conf = tmp_path / "site.conf"
    conf.write_text(
        "events {}\nhttp {\n  server {\n"
        f"    listen 127.0.0.1:{port};\n"
        f'    location / {{ return 200 "{answer}"; }}\n  }}\n}}\n'
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


def test_the_next_start_adopts_the_nginx_a_killed_nonstop_left_and_reloads_it_if_changed(
    tmp_path: Path,
) -> None:
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
        assert answered(port) == b"ok"  # nginx serves on while no nonstop runs
        site(tmp_path, port, "changed")  # edited meanwhile: the adopted nginx is reloaded
        second = NonstopProcess(conf, [port], ["--engine", "nginx"]).start()
        try:
            deadline = time.monotonic() + 10
            while answered(port) != b"changed" and time.monotonic() < deadline:
                time.sleep(0.05)
            assert answered(port) == b"changed"
            assert alive(master), "the adopted nginx was replaced instead"
            assert f"adopted nginx master {master}" in second.stderr()
        finally:
            assert second.stop() == 0, second.stderr()
        assert wait_gone(master, 10), "a stop of nonstop stops the nginx it adopted"
    finally:
        if alive(master):
            os.kill(master, signal.SIGKILL)
