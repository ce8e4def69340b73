"""What ``nonstop run`` claims before it touches state: the state directory, private file
modes, and the open-files limit — on real processes."""

from __future__ import annotations

import os
import resource
import stat
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.apps.harness import AppDaemon, deployed, pyapp_daemons
from tests.support.backends import free_port
from tests.support.proc import NonstopProcess

Make = Callable[..., AppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, AppDaemon)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_second_daemon_on_the_same_state_exits_1_naming_the_first_and_changes_nothing(
    daemon: Make,
) -> None:
    d = daemon()
    deployed(d, "v1")
    before = d.status()["apps"]["web"]
    assert d.process.proc is not None
    second = subprocess.run(
        [sys.executable, "-m", "nonstop", "run", "-c", str(d.config)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=d.dir,
    )
    assert second.returncode == 1
    assert f"another nonstop (pid {d.process.proc.pid}) uses the state directory" in (second.stderr)
    assert str(d.dir / "state") in second.stderr
    # the first daemon is untouched: its socket, its live release, its history
    after = d.status()["apps"]["web"]
    assert after["live"] == before["live"] and after["history"] == before["history"]
    assert d.get() == (200, "v1")


def test_what_the_daemon_writes_is_private_and_its_apps_keep_the_operators_umask(
    daemon: Make, tmp_path: Path
) -> None:
    marker = tmp_path / "written-by-the-app"
    previous = os.umask(0o022)  # the operator's, inherited by `nonstop run`
    try:
        d = daemon(extra=f"--spawn-child {marker}")
    finally:
        os.umask(previous)
    deployed(d, "v1")
    state = d.dir / "state"
    assert _mode(state) == 0o700
    assert _mode(state / "state.db") == 0o600
    assert _mode(state / "admin.sock") == 0o600
    logs = [p for p in state.rglob("*.log") if p.is_file()]
    assert logs, "the app's log file is in the state directory"
    assert all(_mode(p) == 0o600 for p in logs), [(p, oct(_mode(p))) for p in logs]
    deadline = time.monotonic() + 10
    while not marker.exists():
        assert time.monotonic() < deadline, "the app never wrote its file"
        time.sleep(0.02)
    assert _mode(marker) == 0o644


def test_the_soft_open_files_limit_is_raised_and_too_low_a_hard_one_is_reported(
    tmp_path: Path,
) -> None:
    port = free_port()
    config = tmp_path / "nonstop.toml"
    config.write_text(
        f"""
max_connections = 10000
[upstreams.api]
servers = [ {{ address = "127.0.0.1:9" }} ]
[[servers]]
listen = ["127.0.0.1:{port}"]
locations = [ {{ path = "/", pass = "api" }} ]
"""
    )
    process = NonstopProcess(config, [port])
    process.preexec = lambda: resource.setrlimit(resource.RLIMIT_NOFILE, (256, 2048))
    process.start()
    try:
        assert process.proc is not None
        limits = Path(f"/proc/{process.proc.pid}/limits").read_text()
        [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
        assert line.split()[3:5] == ["2048", "2048"]
        assert "10000 worker_connections exceed open file resource limit: 2048" in (
            process.stderr()
        )
    finally:
        process.stop()
