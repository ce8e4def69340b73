"""docs/operations.md's files work: the systemd unit verifies, the logrotate rule rotates
a running nonstop's logs and nonstop writes on in fresh files (SIGUSR1)."""

from __future__ import annotations

import http.client
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess

ROOT = Path(__file__).resolve().parents[2]
NONSTOP = str(Path(sys.executable).parent / "nonstop")


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="needs systemd-analyze")
def test_the_example_systemd_unit_verifies(tmp_path: Path) -> None:
    unit = (ROOT / "examples" / "systemd" / "nonstop.service").read_text()
    assert "ExecReload=/bin/kill -HUP $MAINPID" in unit
    assert "AmbientCapabilities=CAP_NET_BIND_SERVICE" in unit
    assert "KillMode=process" in unit  # SIGTERM to nonstop alone: the apps keep running
    (tmp_path / "nonstop.service").write_text(unit.replace("/opt/nonstop/bin/nonstop", NONSTOP))
    shutil.copy(ROOT / "examples" / "systemd" / "nonstop.socket", tmp_path)
    done = subprocess.run(
        [
            "systemd-analyze",
            "verify",
            str(tmp_path / "nonstop.service"),
            str(tmp_path / "nonstop.socket"),
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stderr == ""


def _get(port: int, path: str) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


def _wait_for_line(path: Path, text: str, timeout: float = 10.0) -> str:
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() >= deadline:
            return content
        time.sleep(0.05)


@pytest.mark.skipif(shutil.which("logrotate") is None, reason="needs logrotate")
def test_the_example_logrotate_rule_rotates_and_nonstop_reopens_on_usr1(tmp_path: Path) -> None:
    backend = RecordingBackend(name="app").start()
    logs = tmp_path / "log"
    logs.mkdir()
    port = free_port()
    config = tmp_path / "nonstop.toml"
    config.write_text(
        f'error_log = "{logs}/error.log"\n'
        f'[upstreams.app]\nservers = [{{ address = "127.0.0.1:{backend.port}" }}]\n'
        f'[[servers]]\nlisten = ["127.0.0.1:{port}"]\naccess_log = "{logs}/access.log"\n'
        'locations = [ { path = "/", pass = "app" } ]\n'
    )
    daemon = NonstopProcess(config, [port]).start()
    try:
        assert daemon.proc is not None
        assert _get(port, "/before") == 200
        assert "/before" in _wait_for_line(logs / "access.log", "/before")
        # The example rule, for these paths; systemd is not here, so the signal goes
        # straight to the daemon's PID (what `systemctl kill --kill-whom=main` does).
        rule = (ROOT / "examples" / "logrotate" / "nonstop").read_text()
        assert "USR1" in rule
        rule = rule.replace("/var/log/nonstop", str(logs))
        rule = rule.replace("/var/lib/nonstop/.nonstop", str(tmp_path / ".nonstop"))
        rule = "\n".join(
            f"        kill -USR1 {daemon.proc.pid}" if "systemctl kill" in line else line
            for line in rule.splitlines()
        )
        (tmp_path / "logrotate.conf").write_text(rule + "\n")
        rotated = subprocess.run(
            ["logrotate", "-f", "-s", str(tmp_path / "state"), str(tmp_path / "logrotate.conf")],
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert rotated.returncode == 0, rotated.stderr
        assert "/before" in (logs / "access.log.1").read_text()
        assert _get(port, "/after") == 200
        fresh = _wait_for_line(logs / "access.log", "/after")
        assert "/after" in fresh
        assert "/before" not in fresh
        assert "/after" not in (logs / "access.log.1").read_text()
    finally:
        daemon.stop()
        backend.stop()


def _run_once(tmp_path: Path, error_log: str, port: int) -> subprocess.CompletedProcess[str]:
    """``nonstop run`` on a one-server config that logs to ``error_log``, to its end."""
    config = tmp_path / "nonstop.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\nerror_log = "{error_log}"\n'
        f'[[servers]]\nlisten = ["127.0.0.1:{port}"]\nreturn = {{ code = 204 }}\n'
    )
    return subprocess.run(
        [NONSTOP, "run", "-c", str(config)], capture_output=True, text=True, timeout=60
    )


def _refused_start(tmp_path: Path, error_log: str) -> tuple[subprocess.CompletedProcess[str], int]:
    """A start that fails: its port is held by a socket without SO_REUSEPORT."""
    import socket

    with socket.create_server(("127.0.0.1", 0)) as held:
        port = held.getsockname()[1]
        done = _run_once(tmp_path, error_log, port)
    assert done.returncode == 1, done.stdout + done.stderr
    return done, port


def test_a_start_that_fails_says_why_on_stderr_and_in_the_error_log(tmp_path: Path) -> None:
    """As nginx's [emerg]: the operator reading the error log (a service's usual place)
    sees why nonstop did not start, not the last line of the run before."""
    log = tmp_path / "logs" / "error.log"
    done, port = _refused_start(tmp_path, str(log))
    [said] = [line for line in done.stderr.splitlines() if "[emerg]" in line]
    reason = said.split("[emerg] ", 1)[1]
    assert f"127.0.0.1:{port}" in reason
    [logged] = [line for line in log.read_text().splitlines() if "[emerg]" in line]
    assert logged.endswith(f"#0: {reason}")


def test_an_error_log_on_stderr_says_a_failed_start_once(tmp_path: Path) -> None:
    done, _ = _refused_start(tmp_path, "/dev/stderr")
    assert len([line for line in done.stderr.splitlines() if "[emerg]" in line]) == 1, done.stderr


def test_an_error_log_that_cannot_be_opened_is_an_emerg_not_a_traceback(tmp_path: Path) -> None:
    (tmp_path / "file").write_text("")
    log = tmp_path / "file" / "error.log"
    done = _run_once(tmp_path, str(log), free_port())
    assert done.returncode == 1, done.stdout + done.stderr
    assert "Traceback" not in done.stderr
    assert f'[emerg] open() "{log}" failed (20: Not a directory)' in done.stderr


def test_stop_without_apps_does_not_speak_of_apps(tmp_path: Path) -> None:
    port = free_port()
    config = tmp_path / "nonstop.toml"
    config.write_text(
        f'state_dir = "{tmp_path / "state"}"\n'
        f'[[servers]]\nlisten = ["127.0.0.1:{port}"]\nreturn = {{ code = 204 }}\n'
    )
    process = NonstopProcess(config, [port]).start()
    try:
        done = process.cli("stop")
        assert done.returncode == 0, done.stdout + done.stderr
        assert done.stderr.strip().splitlines()[-1].endswith("stopped"), done.stderr
        assert "apps" not in done.stdout + done.stderr
        assert process.proc is not None and process.proc.wait(timeout=20) == 0
        assert "leaving app instances" not in process.stderr()
    finally:
        process.stop()
