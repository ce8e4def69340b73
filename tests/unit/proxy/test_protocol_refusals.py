"""Request heads nginx refuses or reads differently than a strict parser, and the answers.

References: ngx_http_process_request_header (TRACE and CONNECT: 405),
ngx_http_validate_host (an invalid Host: 400), large_client_header_buffers (a head over
4 x 8k: 400 "Request Header Or Cookie Too Large"), ngx_http_parse_request_line (a lone
LF ends a line; HTTP/0.9 and versions nginx does not speak are answered at once).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.unit.proxy.protocol_support import conf, get, make_proxy, ok, request_head


@pytest.mark.parametrize("method", ["TRACE", "CONNECT"])
async def test_trace_and_connect_get_405_and_nothing_goes_upstream(
    tmp_path: Path, method: str
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    target = "example.test:443" if method == "CONNECT" else "/"
    client.send(get(target, method=method))
    assert [r.status for r in client.responses()] == [405]
    assert proxy.written_upstream() == b""


@pytest.mark.parametrize("host", ["a/b@c", "", "a..b", ":80", "a b"])
async def test_an_invalid_host_gets_400(tmp_path: Path, host: str) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(f"GET / HTTP/1.0\r\nHost: {host}\r\n\r\n".encode())
    assert [r.status for r in client.responses()] == [400]
    assert proxy.written_upstream() == b""


async def test_absolute_form_is_forwarded_in_origin_form_and_names_the_server(
    tmp_path: Path,
) -> None:
    block = conf(
        extra_http="""
        server { listen 8080; server_name other.test; location / { return 200 "other"; } }
        """
    )
    proxy = make_proxy(tmp_path, block)
    client = proxy.client()
    client.send(b"GET http://example.test/ok?x=1 HTTP/1.1\r\nHost: other.test\r\n\r\n")
    line = request_head(proxy.written_upstream())[0]
    assert line == "GET /ok?x=1 HTTP/1.1"
    proxy.active().respond(ok(b"app"))
    client.send(b"GET http://OTHER.test HTTP/1.1\r\nHost: example.test\r\n\r\n")
    assert [r.body for r in client.responses()] == [b"app", b"other"]


@pytest.mark.parametrize(
    "target", ["http://a@b/x", "http://a_b/x", "http://a..b/", "http://x:8o/", "*", "ftp:/x"]
)
async def test_an_absolute_form_target_nginx_cannot_read_gets_400(
    tmp_path: Path, target: str
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get(target))
    assert [r.status for r in client.responses()] == [400]
    assert proxy.written_upstream() == b""


async def test_ten_thousand_small_headers_in_one_read_get_400_and_nothing_goes_upstream(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    headers = "".join(f"X-{i}: v\r\n" for i in range(10_000))
    client.send(f"GET / HTTP/1.1\r\nHost: example.test\r\n{headers}\r\n".encode())
    [resp] = client.responses()
    assert resp.status == 400
    assert b"Request Header Or Cookie Too Large" in resp.body
    assert proxy.written_upstream() == b""


async def test_a_head_just_under_the_limit_in_one_read_is_forwarded(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    headers = "".join(f"X-{i}: {'v' * 1000}\r\n" for i in range(30))
    client.send(f"GET / HTTP/1.1\r\nHost: example.test\r\n{headers}\r\n".encode())
    assert request_head(proxy.written_upstream())[0] == "GET / HTTP/1.1"


async def test_a_good_request_followed_by_garbage_in_one_read_gets_its_answer_then_400(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/one") + b"\x16\x03\x01garbage\r\n\r\n")
    up = proxy.active()
    assert request_head(up.take())[0] == "GET /one HTTP/1.1"
    up.respond(ok(b"first"))
    responses = client.responses()
    assert [r.status for r in responses] == [200, 400]
    assert responses[0].body == b"first"
    assert client.closed


async def test_lone_lf_line_ends_are_accepted_and_forwarded_as_crlf(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(b"GET /lf HTTP/1.0\nHost: example.test\nX-A: 1\n\n")
    sent = proxy.written_upstream()
    line, headers, _ = request_head(sent)
    assert line == "GET /lf HTTP/1.1"
    assert ("X-A", "1") in headers
    assert b"\n" not in sent.replace(b"\r\n", b"")
    proxy.active().respond(ok(b"lf"))
    assert [r.body for r in client.responses()] == [b"lf"]


@pytest.mark.parametrize(
    "raw",
    [
        b"GET /cr HTTP/1.1\rHost: example.test\r\n\r\n",
        b"GET /cr HTTP/1.1\r\nHost: example.test\rX-A: 1\r\n\r\n",
        b"GET /cr HTTP/1.1\r\nHost: example.test\r\nX-A: 1\r\r\n",
    ],
)
async def test_a_lone_cr_still_gets_400(tmp_path: Path, raw: bytes) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(raw)
    assert [r.status for r in client.responses()] == [400]
    assert proxy.written_upstream() == b""


async def test_http09_is_answered_at_once(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(b"GET /\r\n")
    assert [r.status for r in client.responses()] == [400]
    assert client.closed
    assert proxy.written_upstream() == b""


@pytest.mark.parametrize(("version", "status"), [("3.0", 505), ("9.9", 505), ("0.5", 400)])
async def test_versions_nginx_does_not_speak_are_refused_at_once(
    tmp_path: Path, version: str, status: int
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", version=version))
    assert [r.status for r in client.responses()] == [status]
    assert proxy.written_upstream() == b""


async def test_http12_is_refused_where_nginx_would_serve_it(tmp_path: Path) -> None:
    """Stricter than nginx, knowingly: llhttp speaks only 1.0 and 1.1 (docs/security.md)."""
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", version="1.2"))
    assert [r.status for r in client.responses()] == [400]
    assert proxy.written_upstream() == b""
