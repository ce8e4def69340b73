"""The seed's own blue-green nginx.conf, read through the nginx.conf subset and rendered by
the nginx engine, answers the same requests the same way as the original under nginx."""

from __future__ import annotations

import http.client
import shutil
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, NonstopProcess

SEED = Path(__file__).parents[1] / "unit" / "config" / "fixtures" / "blue_green"

pytestmark = pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed")

REQUESTS: list[tuple[str, str, bytes | None, dict[str, str]]] = [
    ("GET", "/", None, {}),
    ("GET", "/infra/port?x=1&y=two", None, {"Host": "example.com"}),
    ("POST", "/orders", b'{"id": 7}', {"Content-Type": "application/json"}),
    ("GET", "/a%20b/c", None, {"X-Forwarded-For": "203.0.113.9", "Host": "shop.test:8443"}),
    ("DELETE", "/orders/7", None, {}),
]


def _copy_seed(where: Path, port: int, backend: int, process_lines: str = "") -> Path:
    shutil.copytree(SEED, where)
    conf = where / "nginx.conf"
    text = conf.read_text().replace("listen 80;", f"listen 127.0.0.1:{port};")
    conf.write_text(process_lines + text)
    (where / "conf.d" / "service-url.inc").write_text(
        f"set $service_port http://127.0.0.1:{backend};\n"
    )
    return conf


def _ask(port: int) -> list[tuple[int, bytes]]:
    answers = []
    for method, path, body, headers in REQUESTS:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        try:
            conn.request(method, path, body=body, headers=headers)
            resp = conn.getresponse()
            answers.append((resp.status, resp.read()))
        finally:
            conn.close()
    return answers


def _seen(
    backend: RecordingBackend, port: int
) -> list[tuple[str, str, str | None, str | None, bytes]]:
    seen = [
        (
            r.method,
            r.target,
            (r.header("Host") or "").replace(str(port), "PORT"),
            r.header("X-Forwarded-For"),
            r.body,
        )
        for r in backend.received
    ]
    backend.clear()
    return seen


def test_the_seed_blue_green_config_answers_the_same_through_the_nginx_engine(
    tmp_path: Path,
) -> None:
    backend = RecordingBackend(name="app").start()
    try:
        port = free_port()
        original = tmp_path / "original"
        conf = _copy_seed(
            original,
            port,
            backend.port,
            f"pid {original}/nginx.pid;\nerror_log {original}/error.log;\n",
        )
        nginx = NginxProcess(original, conf, [port]).start()
        try:
            by_nginx = _ask(port)
        finally:
            nginx.stop()
        from_nginx = _seen(backend, port)

        port2 = free_port()
        rendered = tmp_path / "rendered"
        conf = _copy_seed(rendered, port2, backend.port)
        nonstop = NonstopProcess(conf, [port2], ["--engine", "nginx"]).start()
        try:
            by_engine = _ask(port2)
            live = (rendered / ".nonstop" / "nginx" / "conf" / "nginx.conf").read_text()
        finally:
            assert nonstop.stop() == 0, nonstop.stderr()
        from_engine = _seen(backend, port2)
    finally:
        backend.stop()
    assert "proxy_pass $service_port;" in live and "set $service_port" in live
    assert [status for status, _ in by_nginx] == [200] * len(REQUESTS)
    assert by_engine == by_nginx
    assert from_engine == from_nginx
    assert [s[0] for s in from_nginx] == [m for m, *_ in REQUESTS]
