"""proxy_request_buffering on (nginx's default): the body is read whole before an upstream
is chosen, in memory up to client_body_buffer_size and beyond that in an unlinked file
under the state directory; so an oversized, aborted or slow body never reaches the app.
"""

from __future__ import annotations

import os
from pathlib import Path

from tests.unit.proxy.protocol_support import conf, get, make_proxy, ok, request_head


async def test_chunked_body_over_the_limit_gets_413_and_nothing_reaches_the_app(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_max_body_size 1k;"))
    client = proxy.client()
    client.send(get("/", "Transfer-Encoding: chunked", method="POST"))
    for _ in range(3):
        client.send(b"200\r\n" + b"x" * 512 + b"\r\n")
    assert [r.status for r in client.responses()] == [413]
    assert proxy.written_upstream() == b""
    assert proxy.connects == []


async def test_a_slow_body_holds_no_upstream_until_it_is_whole(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Content-Length: 6", method="POST"), b"abc")
    proxy.clock.advance(30)
    proxy.tick()
    assert proxy.busy() == []
    assert proxy.written_upstream() == b""
    client.send(b"def")
    line, headers, body = request_head(proxy.active().take())
    assert (line, body) == ("POST / HTTP/1.1", b"abcdef")
    assert ("Content-Length", "6") in headers


async def test_an_aborted_body_never_reaches_the_app(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Content-Length: 100000", method="POST"), b"x" * 50_000)
    client.transport.lose(None)
    assert proxy.written_upstream() == b""
    assert proxy.connects == []


async def test_a_body_that_stops_coming_gets_408_after_client_body_timeout(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(server="client_body_timeout 5s;"))
    client = proxy.client()
    client.send(get("/", "Content-Length: 10", method="POST"), b"abc")
    proxy.clock.advance(6)
    proxy.tick()
    assert [r.status for r in client.responses()] == [408]
    assert proxy.written_upstream() == b""


async def test_a_buffered_chunked_body_is_forwarded_with_content_length(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Transfer-Encoding: chunked", method="POST"))
    client.send(b"3\r\nabc\r\n", b"2\r\nde\r\n0\r\n\r\n")
    _, headers, body = request_head(proxy.active().take())
    assert body == b"abcde"
    assert ("Content-Length", "5") in headers
    assert all(name.lower() != "transfer-encoding" for name, _ in headers)


async def test_a_body_past_the_buffer_size_goes_to_an_unlinked_file_and_arrives_whole(
    tmp_path: Path,
) -> None:
    location = "proxy_pass http://app; client_body_buffer_size 1k;"
    proxy = make_proxy(tmp_path, conf(location, server="client_max_body_size 1m;"))
    client = proxy.client()
    body = bytes(range(256)) * 1000
    client.send(get("/", f"Content-Length: {len(body)}", method="PUT"), body[:100_000])
    conn = client.conn
    assert conn.exchange.body_file is not None
    temp_dir = Path(proxy.state.config.state_dir) / "client_body_temp"
    assert os.listdir(temp_dir) == []  # unlinked as soon as it was made
    client.send(body[100_000:])
    first = proxy.active()
    assert request_head(first.take())[2] == body
    first.hang_up()  # the retry resends the whole buffered body
    second = proxy.active()
    assert request_head(second.take())[2] == body
    second.respond(ok(b"stored"))
    assert [r.body for r in client.responses()] == [b"stored"]
    assert conn.exchange.body_file is None


async def test_buffering_off_streams_the_body_as_it_comes(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("proxy_pass http://app; proxy_request_buffering off;"))
    client = proxy.client()
    client.send(get("/", "Content-Length: 6", method="POST"), b"abc")
    assert request_head(proxy.active().take())[2] == b"abc"


async def test_a_buffered_file_goes_upstream_as_the_connection_drains(tmp_path: Path) -> None:
    location = "proxy_pass http://app; client_body_buffer_size 1k;"
    proxy = make_proxy(tmp_path, conf(location, server="client_max_body_size 4m;"))
    for upstream in proxy.upstreams:
        upstream.transport.holding = True  # the upstream reads slower than we write
    client = proxy.client()
    body = bytes(range(256)) * 8192  # 2 MiB
    client.send(get("/", f"Content-Length: {len(body)}", method="POST"), body)
    up = proxy.active()
    sent = up.take()
    assert len(sent) < len(body) // 4  # not the whole file into the write buffer at once
    while len(sent) < len(body):
        up.transport.drain()
        up.conn.resume_writing()  # the upstream took those bytes: the next part goes
        more = up.take()
        assert more
        sent += more
    assert request_head(sent)[2] == body


async def test_a_connection_answered_before_its_buffered_body_was_sent_is_not_reused(
    tmp_path: Path,
) -> None:
    location = "proxy_pass http://app; client_body_buffer_size 1k;"
    proxy = make_proxy(tmp_path, conf(location, server="client_max_body_size 4m;"))
    client = proxy.client()
    body = b"x" * (2 * 1024 * 1024)
    for upstream in proxy.upstreams:
        upstream.transport.holding = True
    client.send(get("/", f"Content-Length: {len(body)}", method="POST"), body)
    up = proxy.active()
    idle = proxy.idle_count()
    up.respond(ok(b"early"))
    assert [r.body for r in client.responses()] == [b"early"]
    assert up.transport.closed
    assert proxy.idle_count() == idle  # the rest of the body would be read as a request
