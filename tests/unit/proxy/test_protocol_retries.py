"""Retries, as nginx's ngx_http_upstream_next and ngx_http_upstream_test_next decide them.

An error or timeout before any response byte reached the client moves the request to the
next peer (``proxy_next_upstream error timeout`` by default); a listed status does too
while more than one try is left; POST/LOCK/PATCH are not retried once sent unless
``non_idempotent`` is listed; when tries run out the client gets 502/504, or the last
upstream's own response for a status retry.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from protocol_support import STREAMING, conf, get, make_proxy, ok, request_head


async def test_error_before_response_is_retried_on_the_next_peer(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/retry"))
    first = proxy.active()
    sent = first.take()
    first.hang_up()
    second = proxy.active()
    assert second.address != first.address
    assert second.take() == sent
    second.respond(ok(b"from second"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (200, b"from second")
    assert proxy.peers()[first.address] == (0, 1)  # counted as a failure
    assert proxy.peers()[second.address] == (0, 0)


async def test_connection_reset_before_response_is_retried(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    first.hang_up(ConnectionResetError(104, "Connection reset by peer"))
    proxy.active().respond(ok(b"ok"))
    assert [r.status for r in client.responses()] == [200]


async def test_stale_cached_connection_to_a_single_server_is_retried(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=2)
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    first.hang_up()
    assert client.take() == b"", "answered instead of retrying"
    proxy.active().respond(ok(b"ok"))
    assert [r.status for r in client.responses()] == [200]


async def test_post_is_not_retried_after_it_was_sent(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Content-Length: 2", method="POST") + b"hi")
    first = proxy.active()
    first.hang_up()
    [resp] = client.responses()
    assert resp.status == 502
    assert [u.address for u in proxy.used()] == [first.address]
    assert proxy.busy() == []


@pytest.mark.parametrize("method", ["LOCK", "PATCH"])
async def test_lock_and_patch_are_not_retried_after_they_were_sent(
    tmp_path: Path, method: str
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", method=method))
    proxy.active().hang_up()
    assert [r.status for r in client.responses()] == [502]
    assert len(proxy.used()) == 1


async def test_post_is_retried_when_non_idempotent_is_listed(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream error timeout non_idempotent;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/", "Content-Length: 2", method="POST") + b"hi")
    first = proxy.active()
    first.hang_up()
    second = proxy.active()
    _, _, body = request_head(second.take())
    assert body == b"hi"
    second.respond(ok(b"saved"))
    assert [r.status for r in client.responses()] == [200]


async def test_put_body_streamed_in_parts_is_resent_whole_on_retry(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(STREAMING))
    client = proxy.client()
    client.send(get("/", "Content-Length: 9", method="PUT") + b"abc")
    first = proxy.active()
    client.send(b"def", b"ghi")
    assert request_head(first.take())[2] == b"abcdefghi"
    first.hang_up()
    second = proxy.active()
    assert request_head(second.take())[2] == b"abcdefghi"


async def test_chunked_body_is_resent_whole_on_retry(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/", "Transfer-Encoding: chunked", method="PUT") + b"3\r\nabc\r\n0\r\n\r\n")
    first = proxy.active()
    sent = first.take()
    first.hang_up()
    assert proxy.active().take() == sent


async def test_listed_status_is_retried_on_the_next_peer(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream error timeout http_502;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    first.respond(ok(b"bad gateway", status="502 Bad Gateway"))
    assert client.transport.written() == b""
    assert first.transport.closed
    second = proxy.active()
    second.respond(ok(b"fine"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (200, b"fine")
    assert proxy.peers()[first.address][1] == 1  # http_502 listed: a failure


async def test_unlisted_status_is_passed_to_the_client(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"app says 503", status="503 Service Unavailable"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (503, b"app says 503")
    assert len(proxy.used()) == 1


async def test_last_try_passes_the_upstream_status_and_body_through(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream error http_503;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"first 503", status="503 Service Unavailable"))
    proxy.active().respond(ok(b"second 503", status="503 Service Unavailable"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (503, b"second 503")


async def test_404_retry_is_not_counted_as_a_failure(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream error http_404;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    first.respond(ok(b"nope", status="404 Not Found"))
    proxy.active().respond(ok(b"here"))
    assert [r.body for r in client.responses()] == [b"here"]
    assert proxy.peers()[first.address] == (0, 0)


async def test_post_with_listed_status_passes_the_response_through(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream error http_502;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/", "Content-Length: 1", method="POST") + b"x")
    proxy.active().respond(ok(b"app 502", status="502 Bad Gateway"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (502, b"app 502")
    assert len(proxy.used()) == 1


async def test_every_peer_failing_gives_502_and_then_no_live_upstreams(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    proxy.active().hang_up()
    proxy.active().hang_up()
    [resp] = client.responses()
    assert resp.status == 502
    assert resp.header("Connection") == "keep-alive"
    # Both peers are out for fail_timeout: the next request gets 502 without any attempt.
    written = len(proxy.used())
    client.send(get("/again"))
    assert [r.status for r in client.responses()] == [502]
    assert len(proxy.used()) == written
    assert proxy.connects == []


async def test_next_upstream_off_answers_502_on_the_first_error(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("proxy_pass http://app; proxy_next_upstream off;"))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().hang_up()
    assert [r.status for r in client.responses()] == [502]
    assert len(proxy.used()) == 1


async def test_next_upstream_tries_limits_the_attempts(tmp_path: Path) -> None:
    # Timeouts, not connection errors: an error on a reused keep-alive connection gives
    # its try back (nginx: peer.cached -> tries++), a timeout does not.
    location = "proxy_pass http://app; proxy_next_upstream_tries 2; proxy_read_timeout 5s;"
    proxy = make_proxy(tmp_path, conf(location, servers=3))
    client = proxy.client()
    client.send(get("/"))
    for _ in range(2):
        proxy.clock.advance(5.1)
        proxy.tick()
    assert [r.status for r in client.responses()] == [504]
    assert len(proxy.used()) == 2


async def test_errors_on_reused_connections_give_their_try_back(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream_tries 2;"
    proxy = make_proxy(tmp_path, conf(location, servers=3))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().hang_up()
    proxy.active().hang_up()
    proxy.active().respond(ok(b"third"))
    assert [r.body for r in client.responses()] == [b"third"]
    assert len(proxy.used()) == 3


async def test_read_timeout_is_retried_then_answered_504(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("proxy_pass http://app; proxy_read_timeout 5s;"))
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    proxy.clock.advance(4.9)
    proxy.tick()
    assert proxy.active() is first  # not yet
    proxy.clock.advance(0.2)
    proxy.tick()
    second = proxy.active()
    assert second is not first
    assert first.transport.closed
    proxy.clock.advance(5.1)
    proxy.tick()
    [resp] = client.responses()
    assert resp.status == 504
    assert proxy.busy() == []


async def test_next_upstream_timeout_stops_retries(tmp_path: Path) -> None:
    location = "proxy_pass http://app; proxy_next_upstream_timeout 3s;"
    proxy = make_proxy(tmp_path, conf(location, servers=3))
    client = proxy.client()
    client.send(get("/"))
    proxy.clock.advance(3.5)
    proxy.active().hang_up()
    assert [r.status for r in client.responses()] == [502]
    assert len(proxy.used()) == 1


async def test_failure_after_the_response_started_is_not_retried(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Length: 10\r\n\r\n12345")
    up.hang_up()
    raw = client.take()
    assert raw.startswith(b"HTTP/1.1 200 OK")
    assert raw.endswith(b"12345")
    assert client.closed  # truncated: the client must see the cut
    assert len(proxy.used()) == 1


async def test_invalid_upstream_response_gives_502_without_retry_by_default(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    assert [r.status for r in client.responses()] == [502]
    assert len(proxy.used()) == 1


async def test_invalid_upstream_response_is_retried_when_invalid_header_listed(
    tmp_path: Path,
) -> None:
    location = "proxy_pass http://app; proxy_next_upstream error invalid_header;"
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(b"SSH-2.0-OpenSSH_9.2\r\n\r\n")
    proxy.active().respond(ok(b"ok"))
    assert [r.status for r in client.responses()] == [200]


async def test_slow_but_steady_request_body_is_not_cut_by_the_read_timeout(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(STREAMING + " proxy_read_timeout 5s;"))
    client = proxy.client()
    client.send(get("/", "Content-Length: 10", method="PUT"))
    up = proxy.active()
    for _ in range(10):
        proxy.clock.advance(1.0)
        proxy.tick()
        client.send(b"x")
    assert proxy.active() is up
    assert request_head(up.take())[2] == b"x" * 10
    assert client.take() == b""
