"""Connections to upstream servers, and the cache of idle keep-alive ones.

``UpstreamConnection`` is a thin ``asyncio.Protocol`` around httptools' response parser;
it hands the parsed response to a ``Receiver``, the interface declared here that the
client side (``ClientConnection``) implements, so this module imports nothing of it.
``IdlePool`` is nginx's ``keepalive N`` cache
(src/http/modules/ngx_http_upstream_keepalive_module.c): at most N idle connections per
upstream, the least recently used closed first, each closed after
``keepalive_timeout`` idle or ``keepalive_requests`` requests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Final

import httptools

from nonstop.proxy.outbox import HeldTransport, Outbox

__all__ = [
    "H_ACCEL_BUFFERING",
    "H_CONNECTION",
    "H_DROP",
    "H_LENGTH",
    "H_PASS",
    "H_PASSED",
    "H_REWRITABLE",
    "H_TE",
    "H_UPGRADE",
    "IdlePool",
    "Receiver",
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
H_PASSED: Final = 6  # a header nginx hides by default that proxy_pass_header lets through
H_REWRITABLE: Final = 7  # passed on, and proxy_redirect or proxy_cookie_* may rewrite it
H_ACCEL_BUFFERING: Final = 8  # hidden as nginx hides it, kept for proxy_buffering (spool.py)
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
    b"x-accel-buffering": H_ACCEL_BUFFERING,
    b"x-accel-charset": H_DROP,
    b"x-pad": H_DROP,
    b"content-length": H_LENGTH,
    b"location": H_REWRITABLE,
    b"refresh": H_REWRITABLE,
    b"set-cookie": H_REWRITABLE,
}
_KINDS: Final[dict[bytes, int]] = {}
# Which name lengths any of those has: a header of another length (Content-Type,
# Cache-Control, Last-Modified, Accept-Ranges...) passes without hashing its name.
_SPECIAL_LENGTHS: Final = frozenset(len(name) for name in _BY_LOWER)
_SPECIAL_LENGTH: Final = bytes(1 if n in _SPECIAL_LENGTHS else 0 for n in range(32))
# The name an app most often sends at each of those lengths, as servers spell it (and
# lowercased, as some do), found by comparing bytes: the cache above must hash a name
# first, and a response's Date, Server, Content-Length and Connection cost ~1,700
# instructions that way.
_USUAL: Final = (
    b"Date",
    b"Server",
    b"Content-Length",
    b"Connection",
    b"Transfer-Encoding",
    b"Location",
)
_USUAL_NAME: Final = tuple(
    next((usual for usual in _USUAL if len(usual) == n), b"") for n in range(32)
)
_USUAL_LOWER: Final = tuple(name.lower() for name in _USUAL_NAME)
_USUAL_KIND: Final = bytes(_BY_LOWER.get(name, H_PASS) for name in _USUAL_LOWER)


def _kind(name: bytes) -> int:
    kind = _BY_LOWER.get(name.lower(), H_PASS)
    if len(_KINDS) < 4096:
        _KINDS[name] = kind
    return kind


class Receiver:
    """What an ``UpstreamConnection`` reports one response to: the client side of the
    exchange that holds it (``begin``) until the response ends or fails.

    The interface the connection pool needs, declared on its side.  A class, not a
    ``typing.Protocol``: the compiled build calls a native class's methods through its
    vtable, and would make each call through a Protocol a Python-level method call,
    several on every request.
    """

    __slots__ = ()

    def upstream_headers(self, uconn: UpstreamConnection) -> None:
        """The response head is parsed (``uconn.lines``, ``special``, ``length``)."""
        raise NotImplementedError

    def upstream_body(self, data: bytes) -> None:
        """Body bytes of the response, or tunnel bytes after a 101."""
        raise NotImplementedError

    def upstream_data_flushed(self) -> None:
        """One read from the upstream is parsed: what it produced may be sent on."""
        raise NotImplementedError

    def upstream_complete(self, uconn: UpstreamConnection) -> None:
        """The response (or an interim 1xx) ended."""
        raise NotImplementedError

    def upstream_lost(self, uconn: UpstreamConnection, exc: Exception | None) -> None:
        """The connection closed or broke (``exc`` a parser error or the OS error)."""
        raise NotImplementedError

    def upstream_upgraded(self, uconn: UpstreamConnection, rest: bytes) -> None:
        """A 101 switched the connection to a tunnel; ``rest`` came behind its head."""
        raise NotImplementedError

    def upstream_write_paused(self, paused: bool) -> None:
        """The upstream stopped (True) or resumed (False) taking the request's bytes."""
        raise NotImplementedError


class UpstreamConnection:
    """A connection to an upstream server; an asyncio protocol by its methods."""

    __slots__ = (
        "accel",
        "address",
        "closed",
        "feed",
        "idle_since",
        "keeps_alive",
        "length",
        "lines",
        "outbox",
        "parser",
        "pass_hidden",
        "pool",
        "receiver",
        "requests",
        "rewritable",
        "special",
        "status_code",
        "transport",
        "tunnel",
        "write",
    )

    def __init__(self, address: str, outbox: Outbox) -> None:
        self.address = address
        self.outbox = outbox
        self.transport: HeldTransport | None = None
        self.receiver: Receiver | None = None
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
        # proxy_pass_header: the lowercased names of hidden headers the route passes
        self.pass_hidden: frozenset[bytes] | None = None
        # a Location, Refresh or Set-Cookie came since response_filter last looked
        self.rewritable = False
        self.requests = 0
        self.idle_since = 0.0
        self.pool: IdlePool | None = None
        self.closed = False
        self.tunnel = False
        self.accel = b""  # the response's X-Accel-Buffering value

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, raw: asyncio.Transport) -> None:
        # never held over TLS: on a FIN without close_notify the loop's TLS layer drops
        # writes before it calls eof_received, where held bytes would be sent
        tls = raw.get_extra_info("ssl_object") is not None
        transport = self.transport = HeldTransport(raw, self.outbox, not tls)
        self.write = transport.write

    def data_received(self, data: bytes) -> None:
        receiver = self.receiver
        if self.tunnel:
            if receiver is not None:
                receiver.upstream_body(data)
            return
        if receiver is None:
            # Bytes on an idle connection: the server broke the protocol; drop it.
            self.close()
            return
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.tunnel = True
            receiver.upstream_upgraded(self, data[upgrade.args[0] :])
        except httptools.HttpParserError as exc:
            self.close()
            receiver.upstream_lost(self, exc)
            return
        receiver = self.receiver
        if receiver is not None:
            receiver.upstream_data_flushed()

    def eof_received(self) -> bool | None:
        if self.transport is not None:
            self.transport.send()  # returning False closes the transport, past the wrapper
        return False

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if self.pool is not None:
            self.pool.discard(self)
        receiver = self.receiver
        if receiver is not None:
            self.receiver = None
            receiver.upstream_lost(self, exc)

    def pause_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_write_paused(True)

    def resume_writing(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_write_paused(False)

    # -- httptools callbacks ----------------------------------------------------------
    def on_header(self, name: bytes, value: bytes) -> None:
        size = len(name)
        if size < 32 and not _SPECIAL_LENGTH[size]:
            kind = H_PASS
        elif size < 32 and (name == _USUAL_NAME[size] or name == _USUAL_LOWER[size]):
            kind = _USUAL_KIND[size]
        else:
            found = _KINDS.get(name)
            kind = _kind(name) if found is None else found
        if kind in (H_PASS, H_LENGTH, H_REWRITABLE):
            lines = self.lines  # joined once, per response
            lines.append(name)
            lines.append(b": ")
            lines.append(value)
            lines.append(b"\r\n")
            if kind != H_PASS:
                if kind == H_LENGTH:
                    self.length = _length(value)
                else:
                    self.rewritable = True
        elif kind != H_DROP and kind != H_ACCEL_BUFFERING:
            self.special.append((kind, value))
        else:
            if kind == H_ACCEL_BUFFERING:
                self.accel = value
            if self.pass_hidden is not None and name.lower() in self.pass_hidden:
                self.lines += (name, b": ", value, b"\r\n")  # proxy_pass_header
                self.special.append((H_PASSED, name.lower()))

    def on_headers_complete(self) -> None:
        if self.receiver is not None:
            self.receiver.upstream_headers(self)

    def on_body(self, body: bytes) -> None:
        if self.receiver is not None:
            self.receiver.upstream_body(body)

    def on_message_complete(self) -> None:
        receiver = self.receiver
        if receiver is not None:
            receiver.upstream_complete(self)

    # -- use --------------------------------------------------------------------------
    def begin(self, receiver: Receiver) -> None:
        """Start one request/response on this connection."""
        self.receiver = receiver
        self.requests += 1
        self.accel = b""

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
        self.receiver = None
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
        conn.receiver = None
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
        """Close every idle connection to one server (it is draining or gone), plain
        or TLS (proxy/upstream_tls.py keys those ``https://ADDRESS``)."""
        for key in (address, "https://" + address):
            for conn in list(self.by_address.get(key, ())):
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
