"""What the proxy sends upstream: the rewritten request head and the re-framed body.

nginx's defaults (ngx_http_proxy_module.c, ``ngx_http_proxy_headers``): ``Host
$proxy_host``, no X-Forwarded-For unless configured, ``Expect``/``TE``/``Keep-Alive``/
``Upgrade`` not passed, the body re-framed with its own Content-Length or chunked coding.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_support import STREAMING, conf, get, header_values, make_proxy, ok, request_head


async def test_host_header_is_proxy_host_by_default(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/a/b?x=1&y=2", "Accept: */*"))
    line, headers, rest = request_head(proxy.active().take())
    assert line == "GET /a/b?x=1&y=2 HTTP/1.1"
    assert header_values(headers, "Host") == ["app"]
    assert header_values(headers, "Accept") == ["*/*"]
    assert rest == b""


async def test_host_header_names_the_upstream_of_the_matching_location(tmp_path: Path) -> None:
    block = conf(
        extra_locations="location /other/ { proxy_pass http://other; }",
        extra_http="upstream other { server 127.0.0.1:9005; keepalive 2; }",
    )
    proxy = make_proxy(tmp_path, block)
    proxy.client().send(get("/other/x"))
    up = proxy.active()
    assert up.address == "127.0.0.1:9005"
    line, headers, _ = request_head(up.take())
    assert line == "GET /other/x HTTP/1.1"
    assert header_values(headers, "Host") == ["other"]


async def test_hop_by_hop_request_headers_are_not_forwarded(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    proxy.client().send(
        get(
            "/",
            "Keep-Alive: timeout=5",
            "TE: trailers",
            "Trailer: X-Checksum",
            "Proxy-Connection: keep-alive",
            "Upgrade: h2c",
            "Connection: keep-alive",
            "X-Kept: yes",
        )
    )
    _, headers, _ = request_head(proxy.active().take())
    names = {k.lower() for k, _ in headers}
    assert names.isdisjoint({"keep-alive", "te", "trailer", "proxy-connection", "upgrade"})
    # The upstream has keepalive: no "Connection: close" either.
    assert header_values(headers, "Connection") == []
    assert header_values(headers, "X-Kept") == ["yes"]


async def test_headers_named_in_connection_are_not_forwarded(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    proxy.client().send(get("/", "Connection: keep-alive, X-Secret", "X-Secret: 1", "X-Other: 2"))
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "X-Secret") == []
    assert header_values(headers, "X-Other") == ["2"]


async def test_proxy_set_header_with_empty_value_removes_the_header(tmp_path: Path) -> None:
    location = (
        'proxy_pass http://app; proxy_set_header Accept-Encoding "";'
        " proxy_set_header X-Via nonstop;"
    )
    proxy = make_proxy(tmp_path, conf(location))
    proxy.client().send(get("/", "Accept-Encoding: gzip", "X-Via: client"))
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "Accept-Encoding") == []
    assert header_values(headers, "X-Via") == ["nonstop"]
    assert header_values(headers, "Host") == ["app"]


async def test_proxy_set_header_host_replaces_the_default(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("proxy_pass http://app; proxy_set_header Host $host;"))
    proxy.client().send(get("/"))
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "Host") == ["example.test"]


async def test_xff_append_joins_incoming_lines_then_remote_addr(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
    proxy = make_proxy(tmp_path, conf(location))
    proxy.client("10.9.8.7").send(
        get("/", "X-Forwarded-For: 1.2.3.4", "X-Forwarded-For: 5.6.7.8, 9.9.9.9")
    )
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "X-Forwarded-For") == ["1.2.3.4, 5.6.7.8, 9.9.9.9, 10.9.8.7"]


async def test_xff_append_without_incoming_header_is_remote_addr(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
    proxy = make_proxy(tmp_path, conf(location))
    proxy.client("10.9.8.7").send(get("/"))
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "X-Forwarded-For") == ["10.9.8.7"]


async def test_xff_replace_overwrites_incoming_header_with_remote_addr(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_set_header X-Forwarded-For $remote_addr;"
    proxy = make_proxy(tmp_path, conf(location))
    proxy.client("10.9.8.7").send(get("/", "X-Forwarded-For: 6.6.6.6"))
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "X-Forwarded-For") == ["10.9.8.7"]


async def test_incoming_xff_passes_unchanged_when_not_configured(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    proxy.client("10.9.8.7").send(get("/", "X-Forwarded-For: 6.6.6.6"))
    _, headers, _ = request_head(proxy.active().take())
    assert header_values(headers, "X-Forwarded-For") == ["6.6.6.6"]


async def test_content_length_body_split_across_reads_arrives_whole(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    body = b"0123456789" * 10
    head = get("/upload", f"Content-Length: {len(body)}", method="PUT")
    client.send(head[:20], head[20:] + body[:7], body[7:50], body[50:99], body[99:])
    up = proxy.active()
    line, headers, rest = request_head(up.take())
    assert line == "PUT /upload HTTP/1.1"
    assert rest == body
    assert header_values(headers, "Transfer-Encoding") == []
    up.respond(ok(b"done"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (200, b"done")


async def test_request_with_body_has_exactly_one_content_length_upstream(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    proxy.client().send(get("/", "Content-Length: 3", method="POST") + b"abc")
    _, headers, rest = request_head(proxy.active().take())
    assert rest == b"abc"
    assert header_values(headers, "Content-Length") == ["3"]


async def test_chunked_request_is_reframed_as_chunked_upstream(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(STREAMING))
    client = proxy.client()
    head = get("/", "Transfer-Encoding: chunked", method="POST")
    client.send(head + b"5;ext=1\r\nhel", b"lo\r\n", b"6\r\n world\r\n0\r\n\r\n")
    _, headers, rest = request_head(proxy.active().take())
    assert header_values(headers, "Transfer-Encoding") == ["chunked"]
    assert header_values(headers, "Content-Length") == []
    assert _dechunk(rest) == b"hello world"
    assert rest.endswith(b"0\r\n\r\n")


async def test_chunked_body_arriving_after_the_head_is_streamed(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(STREAMING))
    client = proxy.client()
    client.send(get("/", "Transfer-Encoding: chunked", method="POST"))
    up = proxy.active()
    request_head(up.take())
    client.send(b"3\r\nabc\r\n")
    first = up.take()
    assert _dechunk(first + b"0\r\n\r\n") == b"abc"
    client.send(b"0\r\n\r\n")
    assert up.take() == b"0\r\n\r\n"


async def test_expect_is_not_forwarded_and_100_continue_goes_to_the_client(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(STREAMING))
    client = proxy.client()
    client.send(get("/", "Content-Length: 4", "Expect: 100-continue", method="POST"))
    assert client.take() == b"HTTP/1.1 100 Continue\r\n\r\n"
    up = proxy.active()
    client.send(b"data")
    _, headers, rest = request_head(up.take())
    assert header_values(headers, "Expect") == []
    assert rest == b"data"
    up.respond(ok(b"fine"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (200, b"fine")


async def test_expect_from_http10_client_gets_no_100_continue(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Content-Length: 4", "Expect: 100-continue", method="POST", version="1.0"))
    assert client.take() == b""


async def test_content_length_over_limit_gets_413_and_nothing_goes_upstream(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_max_body_size 10;"))
    client = proxy.client()
    client.send(get("/", "Content-Length: 11", "Expect: 100-continue", method="POST"))
    [resp] = client.responses()
    assert resp.status == 413
    assert resp.header("Connection") == "close"
    assert client.closed
    assert proxy.written_upstream() == b""


async def test_chunked_body_growing_past_limit_gets_413(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_max_body_size 10;"))
    client = proxy.client()
    client.send(get("/", "Transfer-Encoding: chunked", method="POST") + b"6\r\nabcdef\r\n")
    assert client.take() == b""
    client.send(b"6\r\nghijkl\r\n")
    [resp] = client.responses()
    assert resp.status == 413
    assert client.closed
    # Whatever was streamed never completes upstream: its connection is dropped.
    assert proxy.busy() == []
    assert all(u.transport.aborted for u in proxy.used())


async def test_body_exactly_at_the_limit_is_accepted(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_max_body_size 10;"))
    client = proxy.client()
    client.send(get("/", "Content-Length: 10", method="POST") + b"0123456789")
    _, _, rest = request_head(proxy.active().take())
    assert rest == b"0123456789"


async def test_client_max_body_size_0_disables_the_limit(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_max_body_size 0;"))
    client = proxy.client()
    body = b"x" * (2 * 1024 * 1024)
    client.send(get("/", f"Content-Length: {len(body)}", method="POST"), body)
    _, _, rest = request_head(proxy.active().take())
    assert len(rest) == len(body)


@pytest.mark.parametrize(
    "raw",
    [
        b"GET / HTTP/1.1\r\nHost: example.test\r\nBad Header\r\n\r\n",
        b"GET /\x00 HTTP/1.1\r\nHost: example.test\r\n\r\n",
        b"GET / HTTP/x.1\r\nHost: example.test\r\n\r\n",
        b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n",
        b"GET / HTTP/1.1\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\nx",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: abc\r\n\r\n",
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 3\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
    ],
    ids=[
        "header-without-colon",
        "nul-in-target",
        "bad-version",
        "duplicate-host",
        "http11-without-host",
        "conflicting-content-length",
        "non-numeric-content-length",
        "content-length-and-chunked",
    ],
)
async def test_malformed_request_gets_400_closes_and_sends_nothing_upstream(
    tmp_path: Path, raw: bytes
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(raw)
    [resp] = client.responses()
    assert resp.status == 400
    assert resp.header("Connection") == "close"
    assert client.closed
    assert proxy.written_upstream() == b""


async def test_bad_chunk_size_after_the_head_gets_400_and_the_upstream_is_dropped(
    tmp_path: Path,
) -> None:
    # The head was already streamed (no request buffering), so the upstream attempt is
    # aborted rather than left waiting for a body that will never come.
    proxy = make_proxy(tmp_path, conf(STREAMING))
    client = proxy.client()
    client.send(get("/", "Transfer-Encoding: chunked", method="POST"))
    up = proxy.active()
    client.send(b"zz\r\n")
    [resp] = client.responses()
    assert resp.status == 400
    assert client.closed
    assert up.transport.aborted
    assert proxy.busy() == []


async def test_garbage_after_a_good_request_gets_400_after_the_first_response(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/one"))
    up = proxy.active()
    up.respond(ok(b"first"))
    client.send(b"\x16\x03\x01garbage\r\n\r\n")
    responses = client.responses()
    assert [r.status for r in responses] == [200, 400]
    assert client.closed


def _dechunk(data: bytes) -> bytes:
    body = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        body += data[:size]
        data = data[size + 2 :]
    return body


async def test_head_and_a_large_body_in_one_read_are_not_taken_for_a_huge_head(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_max_body_size 1m;"))
    client = proxy.client()
    body = b"x" * 100_000
    client.send(b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 100000\r\n\r\n" + body)
    sent = proxy.written_upstream()
    assert sent.startswith(b"POST /p HTTP/1.1\r\n")
    assert sent.endswith(body)
    assert client.take() == b""  # no 400: the request went upstream


async def test_a_head_that_never_ends_is_refused_before_it_grows(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nHost: a\r\nX-Long: ")
    for _ in range(6):
        client.send(b"a" * 7000)
    [resp] = client.responses()
    assert resp.status == 400
    assert proxy.written_upstream() == b""


async def test_a_request_behind_a_400_in_the_same_read_never_reaches_the_upstream(
    tmp_path: Path,
) -> None:
    """The 400 for a missing Host is decided after the head; the parser has the next
    request in the same buffer and must stop there, as nginx reads nothing after it."""
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n" + get("/smuggled"))
    assert proxy.written_upstream() == b""
    assert [r.status for r in client.responses()] == [400]
    client.send(get("/later"))  # lingering: what still arrives is discarded
    assert proxy.written_upstream() == b""


async def test_a_request_behind_a_closing_local_answer_in_the_same_read_is_not_served(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(extra_locations='location = /bye { return 200 "bye"; }'))
    client = proxy.client()
    client.send(get("/bye", "Connection: close") + get("/after"))
    assert proxy.written_upstream() == b""
    assert [r.body for r in client.responses()] == [b"bye"]
    assert client.closed
