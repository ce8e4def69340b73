"""Upgraded connections (websockets) and the upstream keep-alive cache.

nginx tunnels after a 101 (ngx_http_upstream_upgrade) and keeps timing the tunnel with
proxy_read_timeout; its keepalive cache (ngx_http_upstream_keepalive_module.c) holds at
most N idle connections, closes the least recently used one first, and drops a cached
connection that the server closes or writes to.
"""

from __future__ import annotations

from pathlib import Path

from protocol_support import (
    SWITCH,
    UPGRADE,
    WS_LOCATION,
    WS_MAP,
    conf,
    make_proxy,
    ok,
    request_head,
)
from tests.support.fake_transport import FakeTransport

from nonstop.proxy.connection_pool import IdlePool, UpstreamConnection
from nonstop.proxy.outbox import Outbox


async def test_websocket_upgrade_becomes_a_byte_tunnel(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(WS_LOCATION, extra_http=WS_MAP))
    client = proxy.client()
    client.send(UPGRADE + b"early")
    up = proxy.active()
    _, headers, rest = request_head(up.take())
    assert ("Upgrade", "websocket") in headers
    assert ("Connection", "upgrade") in headers
    assert rest == b""  # bytes after the head wait for the 101
    up.respond(SWITCH + b"server-hello")
    raw = client.take()
    assert raw.startswith(b"HTTP/1.1 101 ")
    assert raw.endswith(b"\r\n\r\nserver-hello")
    assert up.take() == b"early"
    client.send(b"\x81\x05hello")
    assert up.take() == b"\x81\x05hello"
    up.respond(b"\x81\x02hi")
    assert client.take() == b"\x81\x02hi"
    up.hang_up()
    assert client.closed
    assert proxy.idle_count() == 2 * 4 - 1  # a tunnelled connection is never cached


async def test_upgrade_refused_by_upstream_is_an_ordinary_response(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(WS_LOCATION, extra_http=WS_MAP))
    client = proxy.client()
    client.send(UPGRADE)
    proxy.active().respond(ok(b"no websockets here", status="400 Bad Request"))
    [resp] = client.responses()
    assert (resp.status, resp.body) == (400, b"no websockets here")


async def test_silent_websocket_tunnel_is_closed_after_proxy_read_timeout(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(WS_LOCATION, extra_http=WS_MAP))
    client = proxy.client()
    client.send(UPGRADE)
    up = proxy.active()
    up.respond(SWITCH)
    proxy.clock.advance(6)
    proxy.tick()
    assert client.closed
    assert up.transport.closed


class _NoLoop:
    """The pool tests write nothing, so their outbox never schedules a send."""

    def call_soon(self, callback: object, context: object = None) -> None:
        raise AssertionError("a pool test wrote to an upstream connection")


def _pool_conn(address: str = "127.0.0.1:9001") -> tuple[UpstreamConnection, FakeTransport]:
    # two client connections open: a write would be held, and call_soon would say so
    outbox = Outbox(_NoLoop(), {"client 1", "client 2"})  # type: ignore[arg-type]
    conn = UpstreamConnection(address, outbox)
    transport = FakeTransport(peername=("127.0.0.1", 9001), sockname=None)
    transport.connect(conn)
    return conn, transport


def test_idle_pool_hands_out_the_most_recently_used_connection() -> None:
    pool = IdlePool(max_idle=4, max_requests=100, timeout=60)
    a, _ = _pool_conn()
    b, _ = _pool_conn()
    pool.put(a, 1.0)
    pool.put(b, 2.0)
    assert pool.get("127.0.0.1:9001") is b
    assert pool.get("127.0.0.1:9001") is a
    assert pool.get("127.0.0.1:9001") is None


def test_idle_pool_over_capacity_closes_the_oldest() -> None:
    pool = IdlePool(max_idle=2, max_requests=100, timeout=60)
    (a, ta), (b, tb), (c, tc) = _pool_conn(), _pool_conn(), _pool_conn()
    pool.put(a, 1.0)
    pool.put(b, 2.0)
    pool.put(c, 3.0)
    assert (ta.closed, tb.closed, tc.closed) == (True, False, False)
    assert pool.count == 2


def test_idle_pool_evicts_by_last_use_not_by_first_use() -> None:
    pool = IdlePool(max_idle=2, max_requests=100, timeout=60)
    (a, ta), (b, tb), (c, tc) = _pool_conn(), _pool_conn(), _pool_conn()
    pool.put(a, 1.0)
    assert pool.get("127.0.0.1:9001") is a
    pool.put(b, 2.0)
    pool.put(a, 3.0)  # a was used again: b is now the least recently used
    pool.put(c, 4.0)
    assert (ta.closed, tb.closed, tc.closed) == (False, True, False)


def test_idle_pool_closes_a_connection_that_reached_keepalive_requests() -> None:
    pool = IdlePool(max_idle=4, max_requests=2, timeout=60)
    conn, transport = _pool_conn()
    conn.requests = 2
    pool.put(conn, 1.0)
    assert transport.closed
    assert pool.get("127.0.0.1:9001") is None


def test_idle_pool_expire_closes_connections_idle_past_keepalive_timeout() -> None:
    pool = IdlePool(max_idle=4, max_requests=100, timeout=60)
    (old, t_old), (new, t_new) = _pool_conn(), _pool_conn()
    pool.put(old, 100.0)
    pool.put(new, 130.0)
    pool.expire(165.0)
    assert (t_old.closed, t_new.closed) == (True, False)
    assert pool.get("127.0.0.1:9001") is new


def test_idle_connection_closed_by_the_server_leaves_the_pool() -> None:
    pool = IdlePool(max_idle=4, max_requests=100, timeout=60)
    conn, transport = _pool_conn()
    pool.put(conn, 1.0)
    transport.lose()
    assert pool.count == 0
    assert pool.get("127.0.0.1:9001") is None


def test_idle_connection_receiving_bytes_is_closed_and_dropped() -> None:
    pool = IdlePool(max_idle=4, max_requests=100, timeout=60)
    conn, transport = _pool_conn()
    pool.put(conn, 1.0)
    transport.feed(b"HTTP/1.1 408 Request Timeout\r\n\r\n")
    assert transport.closed
    assert pool.get("127.0.0.1:9001") is None
