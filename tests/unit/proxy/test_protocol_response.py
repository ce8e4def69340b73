"""What the client receives: response framing, keep-alive, pipelining.

nginx re-frames an upstream body for the client (ngx_http_chunked_filter_module.c):
chunked to an HTTP/1.1 client when the length is unknown, close-delimited to HTTP/1.0;
HEAD, 204 and 304 have no body; ``keepalive_requests`` closes after the Nth response.
"""

from __future__ import annotations

from pathlib import Path

import httptools
import pytest
from protocol_support import conf, get, make_proxy, ok

from nonstop.proxy.connection_pool import _length


async def test_content_length_response_is_relayed_and_both_connections_kept(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    assert proxy.idle_count() == 0
    up.respond(ok(b"hello", "X-App: 1"))
    [resp] = client.responses()
    assert (resp.status, resp.reason, resp.body) == (200, "OK", b"hello")
    assert resp.header("Content-Length") == "5"
    assert resp.header("X-App") == "1"
    assert resp.header("Connection") == "keep-alive"
    assert not client.closed
    assert proxy.idle_count() == 1  # back in the keepalive cache
    assert not up.transport.closed


async def test_an_upstream_connection_paused_for_a_slow_client_reads_again_in_the_pool(
    tmp_path: Path,
) -> None:
    """The client falls behind as the last bytes of a response arrive: the upstream
    connection was paused for it, and must not go back to the keep-alive cache paused
    (the next request on it would never see its response)."""
    unbuffered = conf("proxy_pass http://app; proxy_buffering off;", servers=1)
    proxy = make_proxy(tmp_path, unbuffered, idle_per_server=1)
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    client.conn.pause_writing()  # the client's buffer passed its high-water mark
    assert not up.transport.reading
    up.respond(b"67890")  # the rest: the exchange ends while the client is behind
    assert proxy.idle_count() == 1
    assert up.transport.reading, "pooled while paused"
    client.conn.resume_writing()
    client.send(get("/next"))
    assert proxy.active() is up
    up.respond(ok(b"again"))
    assert [r.body for r in client.responses()] == [b"1234567890", b"again"]


async def test_with_buffering_the_upstream_is_read_whole_and_pooled_while_the_client_is_behind(
    tmp_path: Path,
) -> None:
    """proxy_buffering on (the default): a client that falls behind does not slow the
    upstream; the response is kept for it (proxy/spool.py) and the connection is back
    in the keep-alive cache as soon as the response is read."""
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    client.conn.pause_writing()
    assert up.transport.reading
    up.respond(b"67890")
    assert proxy.idle_count() == 1
    assert client.conn.req is not None  # not finished: the client has not had it all
    client.conn.resume_writing()
    assert client.conn.req is None
    client.send(get("/next"))
    assert proxy.active() is up
    up.respond(ok(b"again"))
    assert [r.body for r in client.responses()] == [b"1234567890", b"again"]


async def test_an_idle_connection_that_catches_up_gets_its_servers_keepalive_timeout(
    tmp_path: Path,
) -> None:
    """While the client is behind, send_timeout times it; once it catches up, idle,
    its server's keepalive_timeout applies again -- not the http-wide default."""
    proxy = make_proxy(tmp_path, conf(server="keepalive_timeout 5s;"), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    client.conn.pause_writing()  # behind from the start of the response
    up.respond(ok(b"hello"))
    assert client.conn.deadline == proxy.clock() + 5  # idle now, keepalive_timeout 5s
    client.conn.resume_writing()
    assert client.conn.deadline == proxy.clock() + 5


async def test_response_split_across_many_reads_arrives_whole(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    raw = ok(b"abcdefghij" * 50)
    proxy.active().respond(*(raw[i : i + 7] for i in range(0, len(raw), 7)))
    [resp] = client.responses()
    assert resp.body == b"abcdefghij" * 50


async def test_upstream_server_and_date_are_replaced_by_the_proxy(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"x", "Server: gunicorn", "Date: Thu, 01 Jan 1970 00:00:00 GMT"))
    [resp] = client.responses()
    assert resp.all("Server") == ["nonstop"]
    [date] = resp.all("Date")
    assert "1970" not in date


async def test_hop_by_hop_response_headers_are_dropped(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(
        ok(b"x", "Keep-Alive: timeout=5", "Connection: X-Internal", "X-Internal: 1", "X-Ok: 1")
    )
    [resp] = client.responses()
    assert resp.header("Keep-Alive") is None
    assert resp.header("X-Internal") is None
    assert resp.header("X-Ok") == "1"
    assert resp.all("Connection") == ["keep-alive"]


async def test_chunked_upstream_is_rechunked_to_http11_client(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwi",
        b"ki\r\n5;x=y\r\npedia\r\n",
        b"0\r\n\r\n",
    )
    [resp] = client.responses()
    assert resp.chunked
    assert resp.body == b"wikipedia"
    assert resp.header("Connection") == "keep-alive"
    assert not client.closed
    assert not up.transport.closed  # the upstream message ended cleanly: reusable


async def test_chunked_upstream_is_sent_raw_and_closed_to_http10_client(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Connection: keep-alive", version="1.0"))
    proxy.active().respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n5\r\npedia\r\n0\r\n\r\n"
    )
    raw = client.take()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Content-Length" not in head
    assert b"Connection: close" in head
    assert body == b"wikipedia"
    assert client.closed


async def test_chunked_upstream_is_not_chunked_to_http10_client_with_proxy_connection(
    tmp_path: Path,
) -> None:
    # llhttp takes Proxy-Connection for Connection: the request is kept alive, and the
    # proxy must still see that it is HTTP/1.0
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Proxy-Connection: keep-alive", version="1.0"))
    proxy.active().respond(
        b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n4\r\nwiki\r\n0\r\n\r\n"
    )
    head, _, body = client.take().partition(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in head
    assert b"Connection: close" in head
    assert body == b"wiki"


def test_llhttp_keeps_only_http11_alive_when_no_connection_header_came() -> None:
    # ClientConnection relies on this to skip asking the parser for the version
    class Head:
        seen: tuple[str, bool] | None = None

        def on_headers_complete(self) -> None:
            self.seen = (parser.get_http_version(), parser.should_keep_alive())

    accepted = []
    for major in range(10):
        for minor in range(10):
            head = Head()
            parser = httptools.HttpRequestParser(head)
            try:
                parser.feed_data(b"GET / HTTP/%d.%d\r\nHost: a\r\n\r\n" % (major, minor))
            except httptools.HttpParserError:
                continue
            assert head.seen is not None
            version, keep_alive = head.seen
            assert keep_alive == (version == "1.1"), version
            accepted.append(version)
    assert "1.0" in accepted and "1.1" in accepted


async def test_close_delimited_upstream_is_chunked_to_http11_client(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nstream", b"ing")
    assert b"0\r\n\r\n" not in client.transport.written()
    up.hang_up()
    [resp] = client.responses()
    assert resp.chunked
    assert resp.body == b"streaming"
    assert resp.header("Connection") == "keep-alive"
    assert not client.closed
    assert proxy.idle_count() == 2 * 4 - 1  # the closed one is not cached again


async def test_close_delimited_upstream_to_http10_client_ends_with_close(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", version="1.0"))
    up = proxy.active()
    up.respond(b"HTTP/1.0 200 OK\r\n\r\nold", b" style")
    up.hang_up()
    raw = client.take()
    head, _, body = raw.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Connection: close" in head
    assert b"Transfer-Encoding" not in head
    assert body == b"old style"
    assert client.closed


async def test_head_response_has_no_body_and_the_client_connection_stays_usable(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=2)
    client = proxy.client()
    client.send(get("/", method="HEAD"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    [resp] = client.responses(head_only=True)
    assert resp.status == 200
    assert resp.header("Content-Length") == "1234"
    assert client.transport.written() == b""
    assert not client.closed
    client.send(get("/next"))
    proxy.active().respond(ok(b"after"))
    [resp] = client.responses()
    assert resp.body == b"after"


async def test_head_response_returns_the_upstream_connection_to_the_pool(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=1)
    client = proxy.client()
    client.send(get("/", method="HEAD"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 1234\r\n\r\n")
    assert not up.transport.closed
    assert proxy.idle_count() == 1


@pytest.mark.parametrize("status", ["204 No Content", "304 Not Modified"])
async def test_204_and_304_have_no_body_and_no_framing(tmp_path: Path, status: str) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(f'HTTP/1.1 {status}\r\nETag: "v1"\r\n\r\n'.encode())
    raw = client.take()
    assert raw.startswith(f"HTTP/1.1 {status}\r\n".encode())
    assert raw.endswith(b"\r\n\r\n")
    assert b"Transfer-Encoding" not in raw
    assert b'ETag: "v1"' in raw
    assert not client.closed
    assert not up.busy  # finished without waiting for a body


async def test_interim_1xx_from_upstream_is_skipped_and_the_final_response_relayed(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>; rel=preload\r\n\r\n")
    up.respond(ok(b"final"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (200, b"final")


async def test_pipelined_requests_are_answered_in_order(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(
        get("/one") + get("/two", "Content-Length: 3", method="POST") + b"abc" + get("/three")
    )
    first = proxy.active()
    assert b"GET /one " in first.take()
    assert not client.reading  # the rest waits; reading is paused meanwhile
    first.respond(ok(b"1"))
    second = proxy.active()
    head = second.take()
    assert head.startswith(b"POST /two ")
    assert head.endswith(b"\r\n\r\nabc")
    second.respond(ok(b"2"))
    third = proxy.active()
    assert b"GET /three " in third.take()
    third.respond(ok(b"3"))
    assert [r.body for r in client.responses()] == [b"1", b"2", b"3"]
    assert client.reading
    assert not client.closed


async def test_keepalive_requests_closes_the_client_after_the_nth_response(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(server="keepalive_requests 2;"))
    client = proxy.client()
    client.send(get("/1"))
    proxy.active().respond(ok(b"a"))
    [resp] = client.responses()
    assert resp.header("Connection") == "keep-alive"
    assert not client.closed
    client.send(get("/2"))
    proxy.active().respond(ok(b"b"))
    [resp] = client.responses()
    assert resp.header("Connection") == "close"
    assert client.closed


async def test_client_connection_close_is_honoured_after_the_response(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Connection: close"))
    up = proxy.active()
    up.respond(ok(b"bye"))
    [resp] = client.responses()
    assert resp.header("Connection") == "close"
    assert client.closed
    assert not up.transport.closed  # the upstream connection is still fine to reuse


async def test_http10_client_without_keepalive_is_closed(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", version="1.0"))
    proxy.active().respond(ok(b"x"))
    [resp] = client.responses()
    assert resp.header("Connection") == "close"
    assert client.closed


async def test_upstream_connection_close_is_not_reused_but_client_stays(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=2)
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(ok(b"x", "Connection: close"))
    [resp] = client.responses()
    assert resp.header("Connection") == "keep-alive"
    assert up.transport.closed
    assert proxy.idle_count() == 1


async def test_client_gone_mid_response_drops_the_upstream_connection(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\npartial")
    client.transport.lose()
    assert up.transport.closed
    assert not up.busy
    peers = proxy.state.upstreams["app"].balancer.peers
    assert [p.conns for p in peers] == [0, 0]
    assert [p.fails for p in peers] == [0, 0]  # a client abort is no upstream failure


@pytest.mark.parametrize(
    "value",
    [b"0", b"12", b"007", b"123456789012345678", b"1234567890123456789", b"", b"1x", b" 5", b"-1"],
)
def test_content_length_is_read_as_int_reads_it(value: bytes) -> None:
    try:
        expected = int(value)
    except ValueError:
        expected = -1
    assert _length(value) == expected


async def test_proxy_hide_header_drops_the_named_upstream_headers(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_hide_header x-powered-by; proxy_hide_header ETag;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.take()
    up.respond(ok(b"hi", "X-Powered-By: PHP/8", 'Etag: "1"', "X-Kept: yes"))
    [resp] = client.responses()
    assert resp.header("X-Powered-By") is None and resp.header("ETag") is None
    assert resp.header("X-Kept") == "yes" and resp.body == b"hi"
