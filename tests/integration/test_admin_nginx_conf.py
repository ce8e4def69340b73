"""The HTTP admin listener set from an nginx.conf: ``env NONSTOP_ADMIN_*`` lines that a
real nginx accepts as they are, and that a real nonstop daemon serves the admin API on."""

from __future__ import annotations

import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import free_port
from tests.support.proc import NginxProcess, NonstopProcess, admin_api, nginx_conf

TOKEN = "nginx-conf-admin-token-0123456789"


@pytest.fixture
def conf(tmp_path: Path) -> tuple[Path, int, int]:
    port, admin_port = free_port(), free_port()
    (tmp_path / "admin.token").write_text(TOKEN + "\n")
    text = nginx_conf(
        tmp_path,
        f"server {{ listen 127.0.0.1:{port}; location / {{ return 200 'hello'; }} }}",
    )
    path = tmp_path / "nginx.conf"
    path.write_text(
        f"env NONSTOP_ADMIN_LISTEN=127.0.0.1:{admin_port};\n"
        "env NONSTOP_ADMIN_TOKEN_FILE=admin.token;\n" + text
    )
    return path, port, admin_port


@pytest.fixture
def daemon(conf: tuple[Path, int, int]) -> Iterator[NonstopProcess]:
    path, port, _ = conf
    proc = NonstopProcess(path, [port]).start()
    try:
        yield proc
    finally:
        proc.stop()


def _get(admin_port: int, token: str | None) -> tuple[int, dict[str, object]]:
    return admin_api(admin_port, "/api/status", token)


def test_the_daemon_serves_the_admin_api_where_the_env_lines_say_with_their_token(
    conf: tuple[Path, int, int], daemon: NonstopProcess
) -> None:
    _, port, admin_port = conf
    status, answer = _get(admin_port, TOKEN)
    assert status == 200 and answer["ok"] is True
    assert answer["listen"] == [f"127.0.0.1:{port}"]
    assert _get(admin_port, None)[0] == 401
    assert _get(admin_port, "a-wrong-token-of-enough-length")[0] == 401


@pytest.mark.skipif(NginxProcess.binary() is None, reason="needs nginx")
def test_nginx_accepts_the_same_file_as_it_is(conf: tuple[Path, int, int]) -> None:
    path, _, _ = conf
    binary = NginxProcess.binary()
    assert binary is not None
    checked = subprocess.run(
        [binary, "-t", "-p", str(path.parent), "-c", str(path)],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
