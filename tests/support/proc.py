"""Start real nonstop and nginx processes for integration tests, stop them by PID."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.support.backends import wait_port

from nonstop.supervisor import is_our_process

__all__ = [
    "NginxProcess",
    "NonstopProcess",
    "admin_api",
    "nginx_conf",
    "raw_request",
    "start_engine",
    "stop_leftover_apps",
]


class NonstopProcess:
    """``nonstop run -c CONFIG`` as a subprocess; the config is written by the test."""

    def __init__(self, config: Path, ports: list[int], extra: list[str] | None = None) -> None:
        self.config = config
        self.ports = ports
        self.extra = extra or []
        self.proc: subprocess.Popen[bytes] | None = None
        self.log = config.parent / "nonstop.stderr"
        self.preexec: Callable[[], None] | None = None  # runs in the child before exec

    def start(self) -> NonstopProcess:
        handle = open(self.log, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "nonstop", "run", "-c", str(self.config), *self.extra],
            stdout=handle,
            stderr=handle,
            cwd=self.config.parent,
            preexec_fn=self.preexec,
        )
        handle.close()
        try:
            for port in self.ports:
                wait_port(port)
            self._wait_admin()
        except TimeoutError:
            self.stop()
            raise RuntimeError(f"nonstop did not start:\n{self.stderr()}") from None
        return self

    def _option(self, *flags: str) -> str | None:
        """The value of an option given to ``nonstop run`` (``-p``, ``--engine``), if any."""
        for flag in flags:
            if flag in self.extra:
                return self.extra[self.extra.index(flag) + 1]
        return None

    def _wait_admin(self, timeout: float = 15.0) -> None:
        """Until the admin socket answers: nonstop opens it once everything is up.

        An open port alone is no proof: with the nginx engine, the ``nginx -t`` run
        before nginx starts binds and listens on the ports for a moment, and a
        connection it accepts is reset when it exits.
        """
        from nonstop.config import load
        from nonstop.daemon import admin_socket_path

        prefix = self._option("-p", "--prefix")
        config = load(str(self.config), prefix, engine=self._option("--engine"))
        path = admin_socket_path(config)
        deadline = time.monotonic() + timeout
        while True:
            assert self.proc is not None
            if self.proc.poll() is not None:
                raise TimeoutError
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as probe:
                try:
                    probe.connect(path)
                    return
                except OSError:
                    pass
            if time.monotonic() >= deadline:
                raise TimeoutError
            time.sleep(0.02)

    def stderr(self) -> str:
        return self.log.read_text(errors="replace") if self.log.exists() else ""

    def cli(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nonstop", *args, "-c", str(self.config)],
            capture_output=True,
            text=True,
            timeout=timeout,
            cwd=self.config.parent,
        )

    def signal(self, signum: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    def stop(self, timeout: float = 20, apps: bool = True) -> int:
        """SIGINT (Ctrl-C) stops the daemon and its apps; ``apps=False``: SIGTERM, which
        leaves them running (their next start adopts them)."""
        if self.proc is None:
            return 0
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT if apps else signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
                if apps:
                    self.kill_recorded_apps()
        return self.proc.returncode

    def kill_recorded_apps(self) -> None:
        """What a daemon killed before it could stop its apps left running: see
        ``stop_leftover_apps``."""
        from nonstop.config import load

        prefix = self._option("-p", "--prefix")
        stop_leftover_apps(Path(load(str(self.config), prefix).state_dir))


def stop_leftover_apps(state_dir: Path) -> None:
    """SIGKILL the process group of every recorded instance that is still that process,
    and the nginx master of the nginx engine if it still runs under ``state_dir``."""
    from nonstop.engines.nginx.engine import _orphan_master

    home = state_dir / "nginx"
    master = _orphan_master(str(home / "nginx.pid"), str(home))
    if master is not None:
        os.kill(master, signal.SIGKILL)  # its workers exit when they see it gone
    path = state_dir / "state.db"
    if not path.exists():
        return
    db = sqlite3.connect(path)
    try:
        rows = db.execute("SELECT pid, pid_start FROM instances").fetchall()
    finally:
        db.close()
    for pid, start in rows:
        if pid is not None and is_our_process(pid, start):
            os.killpg(pid, signal.SIGKILL)


def admin_api(port: int, path: str, token: str | None) -> tuple[int, dict[str, Any]]:
    """GET ``path`` of the HTTP admin listener on ``port``: its status and JSON answer."""
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}")
    if token is not None:
        request.add_header("Authorization", f"Bearer {token}")
    try:
        with urllib.request.urlopen(request, timeout=10) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


class NginxProcess:
    """A real nginx with its own prefix, run in the foreground, stopped by PID."""

    def __init__(self, prefix: Path, conf: Path, ports: list[int]) -> None:
        self.prefix = prefix
        self.conf = conf
        self.ports = ports
        self.proc: subprocess.Popen[bytes] | None = None

    @staticmethod
    def binary() -> str | None:
        return shutil.which("nginx") or (
            "/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None
        )

    def start(self) -> NginxProcess:
        nginx = self.binary()
        assert nginx is not None
        (self.prefix / "logs").mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [nginx, "-p", str(self.prefix), "-c", str(self.conf), "-g", "daemon off;"],
            stdout=subprocess.DEVNULL,
            stderr=open(self.prefix / "logs" / "stderr", "ab"),  # noqa: SIM115
        )
        for port in self.ports:
            wait_port(port)
        return self

    def reload(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGHUP)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGQUIT)
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)


def raw_request(port: int, data: bytes, timeout: float = 5.0, host: str = "127.0.0.1") -> bytes:
    """Send bytes, read until the server closes or ``timeout`` passes."""
    with socket.create_connection((host, port), timeout=timeout) as sock:
        sock.sendall(data)
        chunks = []
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
        return b"".join(chunks)


def nginx_conf(prefix: Path, http: str) -> str:
    """An nginx.conf that a real nginx (in ``prefix``) and nonstop both run: one worker,
    its pid, logs and temporary files under ``prefix``, and ``http`` in the http block."""
    return f"""
worker_processes 1;
pid {prefix}/nginx.pid;
error_log {prefix}/error.log;
events {{ worker_connections 256; }}
http {{
  access_log off;
  client_body_temp_path {prefix}/tmp_body;
  proxy_temp_path {prefix}/tmp_proxy;
{http}
}}
"""


def start_engine(engine: str, prefix: Path, conf: Path, port: int) -> NginxProcess | NonstopProcess:
    """Start ``conf`` with a real nginx ("nginx") or with nonstop, serving on ``port``."""
    proc: NginxProcess | NonstopProcess
    proc = NginxProcess(prefix, conf, [port]) if engine == "nginx" else NonstopProcess(conf, [port])
    return proc.start()


def differences(nginx: dict[str, Any], nonstop: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The cases whose outcome differs between the two engines, both sides shown."""
    return {
        name: {"nginx": nginx[name], "nonstop": nonstop.get(name)}
        for name in nginx
        if nginx[name] != nonstop.get(name)
    }
