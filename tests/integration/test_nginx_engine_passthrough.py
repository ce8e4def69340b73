"""The nginx engine passes what nonstop does not model to nginx as written.

The same nginx.conf, with directives outside nonstop's own proxy (proxy_cache, sub_filter,
real_ip_header), is served through them by ``nonstop run --engine nginx``, accepted by
``nonstop check --engine nginx``, and refused with file and line without ``--engine nginx``;
a directive nginx itself refuses is reported in nginx's words.
"""

from __future__ import annotations

import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import free_port
from tests.support.proc import NginxProcess, NonstopProcess
from tests.support.scripted import ScriptedBackend, response

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]


def _conf(port: int, backend: str) -> str:
    return f"""worker_processes 1;
events {{ worker_connections 128; }}
http {{
    proxy_cache_path cache keys_zone=one:1m;
    set_real_ip_from 127.0.0.1;
    real_ip_header X-Real-IP;
    server {{
        listen 127.0.0.1:{port};
        location /sub/ {{
            proxy_pass http://{backend};
            sub_filter hello bye;
            sub_filter_once off;
        }}
        location /cached/ {{
            proxy_pass http://{backend};
            proxy_cache one;
            proxy_cache_valid 200 1m;
            add_header X-Cache $upstream_cache_status;
        }}
        location /ip {{
            return 200 "$remote_addr";
        }}
    }}
}}
"""


def _check(conf: Path, *engine: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "nonstop", "check", "-c", str(conf), *engine],
        capture_output=True,
        text=True,
        timeout=60,
    )


def _get(port: int, path: str, headers: dict[str, str] | None = None) -> tuple[str, str]:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers=headers or {})
    with urllib.request.urlopen(request, timeout=10) as answer:
        return answer.read().decode(), answer.headers.get("X-Cache", "")


@pytest.fixture
def backend() -> Iterator[ScriptedBackend]:
    page = response(200, b"hello world, hello again")
    scripted = ScriptedBackend({"/sub/page": page, "/cached/page": page}).start()
    yield scripted
    scripted.stop()


def test_check_with_engine_nginx_accepts_what_nginx_accepts(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(_conf(free_port(), "127.0.0.1:9"))
    result = _check(conf, "--engine", "nginx")
    assert result.returncode == 0, result.stderr
    assert "[nginx] nginx: configuration file" in result.stderr


def test_check_without_engine_nginx_refuses_with_file_line_and_directive(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    conf.write_text(_conf(free_port(), "127.0.0.1:9"))
    result = _check(conf)
    assert result.returncode == 2
    assert f'{conf}:4: directive "proxy_cache_path" is outside the nonstop subset' in result.stderr


def test_a_directive_nginx_refuses_is_reported_in_nginx_words(tmp_path: Path) -> None:
    conf = tmp_path / "nginx.conf"
    text = _conf(free_port(), "127.0.0.1:9").replace("proxy_cache one;", "proxy_cache two;")
    conf.write_text(text)
    result = _check(conf, "--engine", "nginx")
    assert result.returncode == 2
    assert 'nginx: [emerg] "proxy_cache" zone "two" is unknown' in result.stderr
    assert "test failed" in result.stderr


def test_nginx_engine_serves_through_the_passed_directives(
    tmp_path: Path, backend: ScriptedBackend
) -> None:
    port = free_port()
    conf = tmp_path / "nginx.conf"
    conf.write_text(_conf(port, backend.address))
    proc = NonstopProcess(conf, [port], ["--engine", "nginx"]).start()
    try:
        assert _get(port, "/sub/page")[0] == "bye world, bye again"  # sub_filter
        first = _get(port, "/cached/page")
        second = _get(port, "/cached/page")
        assert (first, second) == (
            ("hello world, hello again", "MISS"),
            ("hello world, hello again", "HIT"),
        )
        cached = [h for h in backend.heads if h.startswith(b"GET /cached/")]
        assert len(cached) == 1  # the second answer came from proxy_cache
        assert (tmp_path / "cache").is_dir()  # the relative path, against the prefix
        assert _get(port, "/ip", {"X-Real-IP": "10.1.2.3"})[0] == "10.1.2.3"  # real_ip_header
        reload = proc.cli("reload")  # the admin commands reach it without --engine
        assert reload.returncode == 0, reload.stderr
    finally:
        proc.stop()
