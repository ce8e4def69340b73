"""Hostile targets and heads sent to a real nginx and to nonstop on the same config.

Each outcome is compared in classes: forwarded (and with which target the recording
backend saw) or answered without the backend (and with which class of status).  The
list covers path normalisation around guarded locations, absolute-form targets, Host
validation, methods, versions, line ends, head sizes and request smuggling shapes.
Shapes where nonstop knowingly differs from nginx are listed in docs/security.md and are
not in this list.
"""

from __future__ import annotations

import socket
import time
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, nginx_conf, start_engine

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]

CLOSE = "Connection: close"


def req(target: str, *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    lines = [f"{method} {target} HTTP/{version}", "Host: example.test", *headers, CLOSE]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def raw(text: str) -> bytes:
    return text.encode("latin-1")


TARGETS = [
    "/",
    "/a/b?x=1",
    "/admin/x",
    "/x//..//admin/x",
    "/a//b/../../admin/x",
    "/a/%2e%2e/admin/x",
    "/a/%2E%2E%2fadmin/x",
    "//admin//x",
    "/./admin/x",
    "/%61dmin/x",
    "/admin%2fx",
    "/admin/x#frag",
    "/secret",
    "/secret#x",
    "/secret?a#b",
    "/x/../secret",
    "/%73ecret",
    "/secret/",
    "/..",
    "/../admin/x",
    "/a/../../admin/x",
    "/%2e%2e/admin/x",
    "/%00/admin/x",
    "/secret%00",
    "/bad%2",
    "/bad%zz",
    "/a/./b?x=1",
    "/p%20q",
    "/a#frag",
    "/api/a/../c?q=1",
    "/api/a%20b?q",
    "/api/%41%3f",
    "/api/x?",
    "/api/x?a#b",
    "/api//x",
    "/api/%2e%2e/admin/x",
    "/a/.",
    "/a/..",
    "/a/..%2f",
    "/%2f%2fadmin/x",
    "/a%2F..%2F..%2Fadmin",
    "/admin/%2e%2e/ok",
    "/%23/admin",
    "/a?b=%00",
    "/a%3fb",
    "/a/..b/./c",
]

HEADS: dict[str, bytes] = {
    "absolute-form": raw(
        f"GET http://example.test/abs?x HTTP/1.1\r\nHost: other.test\r\n{CLOSE}\r\n\r\n"
    ),
    "absolute-form-other-server": raw(
        f"GET http://OTHER.test/ HTTP/1.1\r\nHost: example.test\r\n{CLOSE}\r\n\r\n"
    ),
    "absolute-form-with-port": req("http://example.test:80/up"),
    "absolute-form-userinfo": req("http://a@b/x"),
    "absolute-form-underscore": req("http://a_b/x"),
    "absolute-form-dots": req("http://a..b/x"),
    "asterisk": req("*"),
    "host-with-slash": raw(f"GET / HTTP/1.1\r\nHost: a/b@c\r\n{CLOSE}\r\n\r\n"),
    "host-empty": raw(f"GET / HTTP/1.1\r\nHost: \r\n{CLOSE}\r\n\r\n"),
    "host-empty-http10": raw("GET / HTTP/1.0\r\nHost: \r\n\r\n"),
    "host-double-dot": raw(f"GET / HTTP/1.1\r\nHost: a..b\r\n{CLOSE}\r\n\r\n"),
    "host-trailing-dot-upper": raw(f"GET / HTTP/1.1\r\nHost: EXAMPLE.TEST.\r\n{CLOSE}\r\n\r\n"),
    "host-other-server": raw(f"GET / HTTP/1.1\r\nHost: other.test:80\r\n{CLOSE}\r\n\r\n"),
    "host-duplicate": raw(f"GET / HTTP/1.1\r\nHost: a\r\nHost: a\r\n{CLOSE}\r\n\r\n"),
    "host-missing-http11": raw(f"GET / HTTP/1.1\r\n{CLOSE}\r\n\r\n"),
    "host-missing-http10": raw("GET /ten HTTP/1.0\r\n\r\n"),
    "trace": req("/", method="TRACE"),
    "connect": req("example.test:443", method="CONNECT"),
    "version-2.0": req("/", version="2.0"),
    "version-9.1": req("/", version="9.1"),
    "version-garbage": req("/", version="x.1"),
    "lone-lf": raw("GET /lf HTTP/1.0\nHost: example.test\n\n"),
    "lone-lf-headers": raw(f"GET /lf2 HTTP/1.1\r\nHost: example.test\n{CLOSE}\n\n"),
    "lone-cr-request-line": raw(f"GET /cr HTTP/1.1\rHost: example.test\r\n{CLOSE}\r\n\r\n"),
    "lone-cr-header": raw(f"GET /cr HTTP/1.1\r\nHost: example.test\rX: 1\r\n{CLOSE}\r\n\r\n"),
    "many-small-headers": req("/", *(f"X-{i}: v" for i in range(10_000))),
    "long-header-line": req("/", "X-Long: " + "a" * 9000),
    "long-request-line": req("/" + "a" * 9000),
    "content-length-and-chunked": req(
        "/p", "Content-Length: 4", "Transfer-Encoding: chunked", method="POST"
    )
    + b"0\r\n\r\n",
    "gzip-chunked": req("/p", "Transfer-Encoding: gzip, chunked", method="POST") + b"0\r\n\r\n",
    "two-content-lengths": req("/p", "Content-Length: 1", "Content-Length: 1", method="POST")
    + b"x",
    "obs-fold": req("/", "X-A: 1", " X-B: 2"),
    "chunked-http10": raw(
        "POST /p HTTP/1.0\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n"
    ),
    "post-content-length": req("/post", "Content-Length: 5", method="POST") + b"hello",
    "post-chunked": req("/chunked", "Transfer-Encoding: chunked", method="POST")
    + b"5\r\nhello\r\n0\r\n\r\n",
    "good-then-garbage": raw(
        "GET /one HTTP/1.1\r\nHost: example.test\r\n\r\n\x16\x03\x01zz\r\n\r\n"
    ),
    "space-in-target": raw(f"GET /a b HTTP/1.1\r\nHost: a\r\n{CLOSE}\r\n\r\n"),
}

CASES = {f"target {t}": req(t) for t in TARGETS} | HEADS


def config(port: int, prefix: Path, backend: str) -> str:
    return nginx_conf(
        prefix,
        f"""
  upstream app {{ server {backend}; }}
  server {{
    listen 127.0.0.1:{port};
    server_name example.test;
    location / {{ proxy_pass http://app; }}
    location /admin/ {{ return 403; }}
    location = /secret {{ return 403; }}
    location /api/ {{ proxy_pass http://app/v2/; }}
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name other.test;
    location / {{ return 200 "other"; }}
  }}""",
    )


def first_status(port: int, data: bytes, timeout: float = 3.0) -> int:
    """The status of the first response; 0 when the server closed without one."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(data)
        except OSError:
            pass  # the server may answer and close before it read everything
        got = b""
        deadline = time.monotonic() + timeout
        while b"\r\n" not in got and time.monotonic() < deadline:
            try:
                chunk = sock.recv(65536)
            except OSError:
                break
            if not chunk:
                break
            got += chunk
    line = got.partition(b"\r\n")[0].split(b" ")
    return int(line[1]) if len(line) > 1 and line[0].startswith(b"HTTP/") else 0


def outcomes(engine: str, tmp: Path) -> dict[str, tuple[str, tuple[str, ...]]]:
    backend = RecordingBackend(name="app").start()
    port = free_port()
    prefix = tmp / engine
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(config(port, prefix, backend.address))
    proc = start_engine(engine, prefix, conf, port)
    out = {}
    try:
        for name, data in CASES.items():
            backend.clear()
            status = first_status(port, data)
            forwarded = tuple(backend.paths())
            out[name] = (f"{status // 100}xx" if status else "closed", forwarded)
    finally:
        proc.stop()
        backend.stop()
    return out


def test_hostile_targets_and_heads_meet_the_same_fate_as_in_nginx(tmp_path: Path) -> None:
    assert len(CASES) >= 60
    nginx = outcomes("nginx", tmp_path)
    nonstop = outcomes("nonstop", tmp_path)
    differences = {
        name: {"nginx": nginx[name], "nonstop": nonstop[name]}
        for name in CASES
        if nginx[name] != nonstop[name]
    }
    assert differences == {}
