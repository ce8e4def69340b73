"""What a new user meets first: -V, a missing daemon, a refused port, completion, an
install on a machine without a C compiler.  Real processes, real sockets."""

from __future__ import annotations

import importlib.machinery
import os
import shutil
import socket
import subprocess
import sys
import sysconfig
from importlib.metadata import version
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port, wait_port

import nonstop.proxy.protocol

ROOT = Path(__file__).resolve().parents[2]
SITE = "events {{}}\nhttp {{ server {{ listen 127.0.0.1:{port}; location / {{ return 200; }} }} }}"


def cli(*args: str, cwd: Path | None = None, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(Path(sys.executable).parent / "nonstop"), *args],
        capture_output=True,
        text=True,
        timeout=60,
        cwd=cwd,
        env={**os.environ, **env},
    )


def test_dash_V_prints_the_version_and_whether_the_data_plane_is_compiled() -> None:
    compiled = nonstop.proxy.protocol.__file__.endswith(
        tuple(importlib.machinery.EXTENSION_SUFFIXES)
    )
    for flag in ("-V", "--version"):
        done = cli(flag)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.splitlines()
        assert lines[0] == f"nonstop {version('nonstop')}"
        expected = "data plane: compiled (mypyc, " if compiled else "data plane: interpreted"
        assert lines[1].startswith(expected), lines


@pytest.mark.parametrize("command", [["status"], ["reload"], ["deploy", "app", "-r", "v2"]])
def test_a_command_without_a_daemon_says_how_to_start_one(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "site.conf"
    config.write_text(SITE.format(port=8080))
    done = cli(*command, "-c", str(config), "-p", str(tmp_path))
    assert done.returncode == 3
    assert "cannot reach the nonstop daemon" in done.stderr
    assert f"Start it with `nonstop run -c {config} -p {tmp_path}`" in done.stderr


def _privileged_ports_need_a_capability() -> bool:
    start = Path("/proc/sys/net/ipv4/ip_unprivileged_port_start")
    return not start.exists() or int(start.read_text()) > 80


@pytest.mark.skipif(not _privileged_ports_need_a_capability(), reason="port 80 is open to all")
@pytest.mark.skipif(shutil.which("setpriv") is None, reason="needs setpriv (util-linux)")
def test_port_80_without_the_capability_names_the_address_and_what_to_do(
    tmp_path: Path,
) -> None:
    config = tmp_path / "site.conf"
    config.write_text(SITE.format(port=80))
    drop = ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    done = subprocess.run(
        [*drop, sys.executable, "-m", "nonstop", "run", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "bind() to 127.0.0.1:80 failed (Permission denied)" in done.stderr
    assert "CAP_NET_BIND_SERVICE" in done.stderr
    assert "a port above 1023" in done.stderr


def test_a_port_in_use_names_the_address(tmp_path: Path) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        config = tmp_path / "site.conf"
        config.write_text(SITE.format(port=port))
        done = cli("run", "-c", str(config))
    assert done.returncode == 1
    assert f"bind() to 127.0.0.1:{port} failed (address in use)" in done.stderr


def test_shell_completion_completes_commands() -> None:
    script = cli(_NONSTOP_COMPLETE="bash_source")
    assert "complete -o nosort -F _nonstop_completion nonstop" in script.stdout
    done = cli(_NONSTOP_COMPLETE="bash_complete", COMP_WORDS="nonstop de", COMP_CWORD="1")
    assert done.stdout.split() == ["plain,deploy"]


@pytest.mark.slow
def test_without_a_c_compiler_the_install_runs_interpreted_and_serves(tmp_path: Path) -> None:
    """pip install with CC naming a compiler that does not exist: one line says so, the
    modules are installed as Python, -V says interpreted, and the proxy serves."""
    project = tmp_path / "project"
    project.mkdir()
    for name in ("pyproject.toml", "setup.py", "README.md"):
        shutil.copy(ROOT / name, project / name)
    shutil.copytree(
        ROOT / "src",
        project / "src",
        ignore=shutil.ignore_patterns("*.so", "__pycache__", "*.egg-info"),
    )
    # A venv that borrows this one's packages (setuptools, mypy, the dependencies), so
    # nothing is downloaded; the package itself is installed into it.
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    python = venv / "bin" / "python"
    site = subprocess.run(
        [python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    Path(site, "borrowed.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    pip = [python, "-m", "pip", "install", "-v", "--no-build-isolation", "--no-deps"]
    install = subprocess.run(
        [*pip, "--no-index", str(project)],
        capture_output=True,
        text=True,
        timeout=600,
        cwd=tmp_path,
        env={**os.environ, "CC": str(tmp_path / "no-such-cc")},
    )
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]
    printed = install.stdout + install.stderr
    said = [line for line in printed.splitlines() if "no working C compiler" in line]
    assert len(said) == 1, printed[-3000:]
    assert not list(Path(site).rglob("*.so")), "a compiled module was installed"

    version_out = subprocess.run(
        [venv / "bin" / "nonstop", "-V"], capture_output=True, text=True, check=True
    ).stdout
    assert "data plane: interpreted" in version_out

    backend = RecordingBackend(name="app").start()
    port = free_port()
    config = tmp_path / "site.conf"
    config.write_text(
        f"events {{}}\nhttp {{ server {{ listen 127.0.0.1:{port}; location / {{ proxy_pass "
        f"http://127.0.0.1:{backend.port}; }} }} }}\n"
    )
    proc = subprocess.Popen(
        [venv / "bin" / "nonstop", "run", "-c", str(config)], stderr=subprocess.PIPE
    )
    try:
        wait_port(port)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
            conn.sendall(b"GET / HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            answer = b""
            while chunk := conn.recv(65536):
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer
        assert answer.endswith(b"app"), answer
    finally:
        proc.terminate()
        proc.wait(30)
        backend.stop()
