"""``[nginx] pid``: nonstop drives an nginx the system runs, found through its pid file.

The test plays the part of systemd: it starts nginx itself, daemonized, on the config
nonstop wrote, and stops it by the pid in that file at the end.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_nginx_engine import NginxAppDaemon
from tests.support.apps.harness import Load, deployed, pyapp_daemons
from tests.support.backends import free_port, wait_port

from nonstop.engines.nginx import find_nginx
from nonstop.engines.nginx.command import AttachFailed, SystemNginx

pytestmark = pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed")


class SystemNginxDaemon(NginxAppDaemon):
    """nonstop with ``[nginx] pid``; nginx itself is started by the test."""

    def write(self, command: str, **options: Any) -> None:
        super().write(command, **options)
        with self.config.open("a") as handle:
            handle.write('\n[nginx]\npid = "run/nginx.pid"\n')

    def start(self) -> SystemNginxDaemon:
        self.process.ports = []  # nginx is not up yet: nothing listens until the test starts it
        self.process.start()
        return self

    @property
    def pid_file(self) -> Path:
        return self.dir / "run" / "nginx.pid"


def start_system_nginx(conf: Path, pid_file: Path) -> int:
    """nginx as an init system starts it: daemonized, its master's pid in ``pid_file``."""
    binary = find_nginx()
    assert binary is not None
    deadline = time.monotonic() + 15
    while not conf.exists():
        assert time.monotonic() < deadline, "nonstop wrote no nginx.conf"
        time.sleep(0.05)
    pid_file.parent.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(
        [binary, "-c", str(conf), "-e", str(pid_file.parent / "early.log")],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert done.returncode == 0, done.stderr
    while not (pid_file.exists() and pid_file.read_text().strip()):  # `nginx -t` made it empty
        assert time.monotonic() < deadline, "nginx wrote no pid file"
        time.sleep(0.05)
    return int(pid_file.read_text())


def stop_system_nginx(pid: int) -> None:
    try:
        os.kill(pid, signal.SIGQUIT)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + 10
    while os.path.exists(f"/proc/{pid}") and time.monotonic() < deadline:
        time.sleep(0.05)


@pytest.fixture
def system_nginx() -> Iterator[list[int]]:
    masters: list[int] = []
    yield masters
    for pid in masters:
        stop_system_nginx(pid)


def test_deploys_through_a_system_nginx_and_leave_it_running(
    tmp_path: Path, system_nginx: list[int]
) -> None:
    for make in pyapp_daemons(tmp_path, SystemNginxDaemon):
        d = make(verify="200ms")
        conf = d.dir / "state" / "nginx" / "conf" / "nginx.conf"
        master = start_system_nginx(conf, d.pid_file)
        system_nginx.append(master)
        wait_port(d.port)
        deadline = time.monotonic() + 10
        while d.nginx()["nginx"]["master"] != master:
            assert time.monotonic() < deadline, d.process.stderr()
            time.sleep(0.05)
        assert d.nginx()["nginx"]["mode"] == "system"
        deployed(d, "v1")
        with Load(d.port, clients=8, limit=30) as load:
            load.wait_requests(50)
            deployed(d, "v2")
            load.wait_requests(50)
        assert load.failed == [], load.failed[:5]
        assert d.get() == (200, "v2")
        status = d.nginx()["nginx"]
        assert status["master"] == master and status["draining_workers"] == []
        assert d.stop() == 0
        title = Path(f"/proc/{master}/cmdline").read_bytes()
        assert title.startswith(b"nginx: master process"), "nonstop stopped the system's nginx"
        break


def test_a_master_running_another_config_is_refused_with_the_reason(
    tmp_path: Path, system_nginx: list[int]
) -> None:
    binary = find_nginx()
    assert binary is not None
    other = tmp_path / "other.conf"
    pid_file = tmp_path / "other.pid"
    other.write_text(
        f"pid {pid_file};\nerror_log {tmp_path}/error.log;\nevents {{}}\n"
        f"http {{ access_log off; server {{ listen 127.0.0.1:{free_port()}; }} }}\n"
    )
    system_nginx.append(start_system_nginx(other, pid_file))
    ours = tmp_path / "state" / "nginx" / "conf" / "nginx.conf"
    with pytest.raises(AttachFailed, match=f"runs {other}, not nonstop's {ours}"):
        SystemNginx(binary).attach(str(pid_file), str(ours))
    assert SystemNginx(binary).attach(str(pid_file), str(other)).returncode is None
    with pytest.raises(AttachFailed, match="cannot read"):
        SystemNginx(binary).attach(str(tmp_path / "missing.pid"), str(other))
