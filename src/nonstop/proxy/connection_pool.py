"""Connections to upstream servers, and the cache of idle keep-alive ones.

``UpstreamConnection`` is a thin ``asyncio.Protocol`` around httptools' response parser;
the ``ClientConnection`` that holds it receives the parsed response through its
``upstream_*`` methods (typed as that class, so the compiled build calls them directly).
``IdlePool`` is nginx's ``keepalive N`` cache
(src/http/modules/ngx_http_upstream_keepalive_module.c): at most N idle connections per
upstream, the least recently used closed first, each closed after
``keepalive_timeout`` idle or ``keepalive_requests`` requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import TYPE_CHECKING, Final

import httptools

if TYPE_CHECKING:
    from nonstop.proxy.protocol import ClientConnection

__all__ = [
    "H_CONNECTION",
    "H_DROP",
    "H_LENGTH",
    "H_PASS",
    "H_TE",
    "H_UPGRADE",
    "IdlePool",
    "UpstreamConnection",
]

# What a response header is to the proxy, cached by its name as sent (the cache saves a
# lower() and a set test per header on the hot path).  Final: the compiled build uses the
# values and the tables directly instead of looking them up among the module's globals.
H_PASS: Final = 0
H_DROP: Final = 1
H_LENGTH: Final = 2
H_TE: Final = 3
H_CONNECTION: Final = 4
H_UPGRADE: Final = 5
_BY_LOWER: Final = {
    b"connection": H_CONNECTION,
    b"keep-alive": H_DROP,
    b"proxy-connection": H_DROP,
    b"te": H_DROP,
    b"trailer": H_DROP,
    b"transfer-encoding": H_TE,
    b"upgrade": H_UPGRADE,
    # nginx hides these from upstream (proxy_hide_header defaults) and sends its own
    b"server": H_DROP,
    b"date": H_DROP,
    b"x-accel-redirect": H_DROP,
    b"x-accel-expires": H_DROP,
    b"x-accel-limit-rate": H_DROP,
    b"x-accel-buffering": H_DROP,
    b"x-accel-charset": H_DROP,
    b"x-pad": H_DROP,
    b"content-length": H_LENGTH,
}
_KINDS: Final[dict[bytes, int]] = {}


def _kind(name: bytes) -> int:
    kind = _BY_LOWER.get(name.lower(), H_PASS)
    if len(_KINDS) < 4096:
        _KINDS[name] = kind
    return kind


class UpstreamConnection:
    """A connection to an upstream server; an asyncio protocol by its methods."""

    __slots__ = (
        "address",
        "closed",
        "exchange",
        "feed",
        "idle_since",
        "keeps_alive",
        "length",
        "lines",
        "parser",
        "pool",
        "requests",
        "special",
        "status_code",
        "transport",
        "tunnel",
        "write",
    )

    def __init__(self, address: str) -> None:
        self.address = address
        self.transport: asyncio.Transport | None = None
        self.exchange: ClientConnection | None = None
        self.parser = httptools.HttpResponseParser(self)
        # bound methods kept once: the hot path calls them without a look-up each time
        self.feed: Callable[[bytes], None] = self.parser.feed_data
        self.status_code: Callable[[], int] = self.parser.get_status_code
        self.keeps_alive: Callable[[], bool] = self.parser.should_keep_alive
        self.write: Callable[[bytes], None] = _unconnected
        # response headers to pass on, flat: name, b": ", value, b"\r\n", name, ...
        self.lines: list[bytes] = []
        self.special: list[tuple[int, bytes]] = []  # (H_TE | H_CONNECTION | H_UPGRADE, value)
        self.length = -1
        self.requests = 0
        self.idle_since = 0.0
        self.pool: IdlePool | None = None
        self.closed = False
        self.tunnel = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.write = transport.write

    def data_received(self, data: bytes) -> None:
        exchange = self.exchange
        if self.tunnel:
            if exchange is not None:
                exchange.upstream_body(data)
            return
        if exchange is None:
            # Bytes on an idle connection: the server broke the protocol; drop it.
            self.close()
            return
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.tunnel = True
            exchange.upstream_upgraded(self, data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            self.close()
            exchange.upstream_lost(self, exc)
            return
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_data_flushed()

    def eof_received(self) -> bool | None:
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool is not None:
            self.pool.discard(self)
        exchange = self.exchange
        if exchange is not None:
            self.exchange = None
            exchange.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_write_paused(False)

    # -- httptools callbacks ----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        kind = _KINDS.get(name)
        if kind is None:
            kind = _kind(name)
        if kind in (H_PASS, H_LENGTH):
            lines = self.lines  # joined once, per response
            lines.append(name)
            lines.append(b": ")
            lines.append(value)
            lines.append(b"\r\n")
            if kind == H_LENGTH:
                self.length = _length(value)
        elif kind != H_DROP:
            self.special.append((kind, value))

    def on_headers_complete(self) -> None:
        if self.exchange is not None:
            self.exchange.upstream_headers(self)

    def on_body(self, body: bytes) -> None:
        if self.exchange is not None:
            self.exchange.upstream_body(body)

    def on_message_complete(self) -> None:
        exchange = self.exchange
        if exchange is not None:
            exchange.upstream_complete(self)

    # -- use --------------------------------------------------------------------------
    def begin(self, exchange: ClientConnection) -> None:
        """Start one request/response on this connection."""
        self.exchange = exchange
        self.requests += 1

    def clear_head(self) -> None:
        """Forget the parsed head (after a 1xx, or once the head was used)."""
        self.lines = []
        if self.special:
            self.special = []
        self.length = -1

    def reset_parser(self) -> None:
        """A fresh parser: after a HEAD response (no body follows its Content-Length)."""
        self.parser = httptools.HttpResponseParser(self)
        self.feed = self.parser.feed_data
        self.status_code = self.parser.get_status_code
        self.keeps_alive = self.parser.should_keep_alive

    def close(self) -> None:
        if not self.closed:
            self.closed = True
            if self.pool is not None:
                self.pool.discard(self)
            if self.transport is not None:
                self.transport.close()

    def abort(self) -> None:
        self.exchange = None
        if self.transport is not None:
            self.transport.abort()
        self.closed = True
        if self.pool is not None:
            self.pool.discard(self)


def _length(value: bytes) -> int:
    """A Content-Length value as int(value) reads it, -1 if it is not a number.

    llhttp lets only digits through, and for those a loop over the bytes is a few
    instructions each, where int() on bytes is a generic call several times dearer.
    """
    size = len(value)
    if 0 < size <= 18:
        n = 0
        for i in range(size):
            c = value[i]
            if c < 48 or c > 57:
                break
            n = n * 10 + c - 48
        else:
            return n
    try:
        return int(value)
    except ValueError:
        return -1


def _unconnected(data: bytes) -> None:
    raise ConnectionError("not connected")


class IdlePool:
    """Idle keep-alive connections of one upstream, least recently used first.

    ``order`` holds every idle connection in the order it was last freed, so eviction
    and expiry look only at its head (nginx moves a freed connection to the cache
    head); ``by_address`` finds one for a chosen server.  A retired pool (its upstream
    was removed or replaced on reload) closes what is handed back to it.
    """

    __slots__ = ("by_address", "max_idle", "max_requests", "order", "retired", "timeout")

    def __init__(self, max_idle: int, max_requests: int, timeout: float) -> None:
        self.max_idle = max_idle
        self.max_requests = max_requests
        self.timeout = timeout
        self.by_address: dict[str, list[UpstreamConnection]] = {}
        # a plain dict keeps insertion order, and the compiled build has its operations
        # inline (an OrderedDict's are method calls)
        self.order: dict[UpstreamConnection, None] = {}
        self.retired = False

    @property
    def count(self) -> int:
        return len(self.order)

    def get(self, address: str) -> UpstreamConnection | None:
        conns = self.by_address.get(address)
        while conns:
            conn = conns.pop()
            order = self.order
            if conn in order:
                del order[conn]
            conn.pool = None
            if not conn.closed:
                return conn
        return None

    def put(self, conn: UpstreamConnection, now: float) -> None:
        """Cache a connection whose response completed cleanly, or close it."""
        if self.max_idle <= 0 or self.retired or conn.closed or conn.requests >= self.max_requests:
            conn.close()
            return
        conn.exchange = None
        conn.idle_since = now
        conn.pool = self
        conns = self.by_address.get(conn.address)
        if conns is None:
            self.by_address[conn.address] = [conn]
        else:
            conns.append(conn)
        order = self.order
        order[conn] = None
        if len(order) > self.max_idle:
            oldest = next(iter(order))
            del order[oldest]
            self._forget(oldest)
            oldest.close()

    def _forget(self, conn: UpstreamConnection) -> None:
        conns = self.by_address.get(conn.address)
        if conns and conn in conns:
            conns.remove(conn)
        conn.pool = None

    def discard(self, conn: UpstreamConnection) -> None:
        if conn in self.order:
            del self.order[conn]
        self._forget(conn)

    def expire(self, now: float) -> None:
        """Close connections idle longer than keepalive_timeout (the oldest come first)."""
        limit = now - self.timeout
        while self.order:
            conn = next(iter(self.order))
            if conn.idle_since > limit:
                break
            self.discard(conn)
            conn.close()

    def close_address(self, address: str) -> None:
        """Close every idle connection to one server (it is draining or gone)."""
        for conn in list(self.by_address.get(address, ())):
            self.discard(conn)
            conn.close()

    def close_all(self) -> None:
        for conn in list(self.order):
            self.discard(conn)
            conn.close()

    def retire(self) -> None:
        """The upstream is gone: close idle connections and refuse new ones."""
        self.retired = True
        self.close_all()
