"""What ``nonstop run`` claims before it touches state: the state directory, private file
modes, and the open-files limit — on real processes."""

from __future__ import annotations

import grp
import os
import resource
import signal
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


def _other_group() -> grp.struct_group:
    """A group of this machine that is not the daemon's own (so its gid shows it was set)."""
    return next(g for g in grp.getgrall() if g.gr_gid != os.getegid())


def _wait_for(path: Path, d: AppDaemon) -> None:
    """Requests until ``path`` exists (a worker flushes its access log lines within a
    second)."""
    deadline = time.monotonic() + 15
    while not path.exists() or not path.stat().st_size:
        assert time.monotonic() < deadline, f"{path} was never written"
        d.get()
        time.sleep(0.05)


@pytest.mark.parametrize("with_group", [False, True], ids=["private", "group"])
def test_state_and_logs_are_0600_or_0640_with_the_group_at_start_and_after_a_reopen(
    tmp_path: Path, with_group: bool
) -> None:
    """With two workers writing the access log, and logs outside the state directory
    too, in a directory nonstop makes; after logrotate's ``create 0644`` and SIGUSR1 the
    new files get the same modes."""
    from tests.support.apps import pyapp_command

    group = _other_group() if with_group else None
    d = AppDaemon(tmp_path / "d", pyapp_command(), verify="0s", workers=2)
    logs = tmp_path / "var-log"
    access, error = logs / "access.log", logs / "error.log"
    text = d.config.read_text().replace(
        f'listen = ["127.0.0.1:{d.port}"]',
        f'listen = ["127.0.0.1:{d.port}"]\naccess_log = "{access}"',
    )
    head = f'error_log = "{error}"\nerror_log_level = "info"\n'
    if group is not None:
        head += f'group = "{group.gr_name}"\n'
    d.config.write_text(head + text)
    dir_mode, file_mode = (0o750, 0o640) if group is not None else (0o700, 0o600)
    gid = group.gr_gid if group is not None else os.getegid()

    def claimed(path: Path, mode: int) -> None:
        st = path.stat()
        assert (oct(stat.S_IMODE(st.st_mode) & 0o777), st.st_gid) == (oct(mode), gid), path

    d.start()
    try:
        deployed(d, "v1")
        state = d.dir / "state"
        _wait_for(access, d)
        claimed(state, dir_mode)
        claimed(logs, dir_mode)  # made by nonstop for its logs: the group reaches them
        # and what is made in it later gets the group (set-group-id, as the state dir)
        assert bool(logs.stat().st_mode & stat.S_ISGID) == (group is not None)
        for path in (state / "state.db", access, error):
            claimed(path, file_mode)
        # logrotate: move the logs away, create empty ones 0644 root:root, then USR1
        for path in (access, error):
            path.rename(path.with_suffix(".log.1"))
            path.touch(mode=0o644)
            os.chown(path, -1, os.getegid())
            path.chmod(0o644)
        assert d.process.proc is not None
        d.process.proc.send_signal(signal.SIGUSR1)
        deadline = time.monotonic() + 15
        while stat.S_IMODE(access.stat().st_mode) == 0o644 or not access.stat().st_size:
            assert time.monotonic() < deadline, "the access log was not reopened"
            d.get()
            time.sleep(0.05)
        for path in (access, error):
            claimed(path, file_mode)
    finally:
        d.stop()
