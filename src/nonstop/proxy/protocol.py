"""The client side of the proxy: one ``ClientConnection`` per accepted connection.

A thin ``asyncio.Protocol`` around httptools' request parser: the I/O shell of the data
plane.  Requests are handled one at a time per connection (pipelined ones wait in a
queue); the decisions live in modules of their own, each pure:

- ``request_head``: what a request head may hold, and routing it;
- ``forward_head``: the head sent upstream;
- ``response_head``: the head and framing of a relayed response;
- ``retry``: whether a failed attempt goes to the next server;
- ``responses``: every response the proxy writes itself;
- ``exchange``: the per-request state, one ``Exchange`` per connection, reset for each
  request, so that the hot path allocates little: a ``Request``, an ``Attempt`` and the
  bytes themselves.

Peer state is written only through ``Upstream`` (upstream.py).  Timeouts are deadlines
checked by the server's tick (``expire``), not timer handles: a request sets one float
instead of scheduling and cancelling a callback.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import socket
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

import httptools

from nonstop.proxy.charset import content_type, for_status
from nonstop.proxy.connection_pool import Receiver, UpstreamConnection
from nonstop.proxy.error_page import page_for, redirect_to_page
from nonstop.proxy.exchange import Exchange
from nonstop.proxy.forward_head import forward_head
from nonstop.proxy.guard import DELAY
from nonstop.proxy.handed import temporary_file
from nonstop.proxy.limits import ConnZone, release
from nonstop.proxy.logformat import note_try
from nonstop.proxy.outbox import HeldTransport
from nonstop.proxy.request import Request
from nonstop.proxy.request_head import (
    MAX_HEAD_BYTES,
    MAX_LINE,
    SPECIAL_REQUEST_HEADERS,
    Rejected,
    check_head,
    header_name,
    mended,
    route_request,
    simple_request,
    special_header,
)
from nonstop.proxy.resolver import Unresolved
from nonstop.proxy.response_filter import file_head, filter_head
from nonstop.proxy.response_head import added_headers, response_head
from nonstop.proxy.responses import (
    CONTINUE,
    error_page,
    local_response,
    return_response,
)
from nonstop.proxy.retry import failure_status, may_retry, status_outcome, status_retry
from nonstop.proxy.spool import Spool, reads_ahead
from nonstop.proxy.static import FileBody, serve
from nonstop.proxy.upstream import Outcome
from nonstop.proxy.upstream_tls import handshake_error, pool_key

if TYPE_CHECKING:
    from nonstop.proxy.router import Route, VirtualHosts
    from nonstop.proxy.server import Backend, ProxyState
    from nonstop.proxy.upstream import Peer

__all__ = ["ClientConnection"]

log = logging.getLogger("nonstop")
_serial: Final = itertools.count(1)  # connection numbers, for $connection

# Module constants are Final: the compiled build then uses them directly instead of
# looking each one up among the module's globals on every use.
OK: Final = Outcome.OK

# Phases: what the connection waits for, which decides what its deadline means.
IDLE: Final = 0
HEAD: Final = 1
BODY: Final = 2
CONNECT: Final = 3
UPSTREAM: Final = 4
TUNNEL: Final = 5
CLOSING: Final = 6
LINGER: Final = 7
LINGERING_TIMEOUT: Final = 5.0  # nginx lingering_timeout: wait this long for more bytes to discard
LINGERING_TIME: Final = 30.0  # nginx lingering_time: discard for at most this long

RETRY_BUFFER: Final = 1024 * 1024  # request body kept for a retry up to this size
BODY_BUFFER_HIGH: Final = 256 * 1024  # pause reading the client above this many unsent bytes


class ClientConnection(Receiver):
    """One client connection; an asyncio protocol by its methods (no asyncio base class,
    so that the compiled build makes it a native class with C-level attribute access),
    and the ``Receiver`` of its requests' upstream responses."""

    __slots__ = (
        "conn_requests",
        "deadline",
        "eof",
        "exchange",
        "feed",
        "file_body",
        "get_method",
        "get_version",
        "head_bytes",
        "head_size",
        "header_timeout",
        "held",
        "holds",
        "idle_timeout",
        "in_head",
        "keeps_alive",
        "lingering",
        "local_port",
        "number",
        "out",
        "parser",
        "parsing",
        "pending",
        "phase",
        "reading_paused",
        "rejected",
        "remote_addr",
        "remote_bytes",
        "req",
        "scheme",
        "send_mark",
        "send_timeout",
        "spool",
        "state",
        "transport",
        "truncated",
        "upgrading",
        "vhosts",
        "write",
        "write_paused",
    )

    def __init__(self, state: ProxyState, scheme: str = "http") -> None:
        self.state = state
        self.scheme = scheme
        self.transport: HeldTransport | None = None
        self._new_parser()
        self.write: Callable[[bytes], None] = _unconnected
        self.vhosts: VirtualHosts | None = None
        self.remote_addr = ""
        self.remote_bytes = b""
        self.local_port = 0
        self.phase = IDLE
        self.deadline = 0.0
        self.conn_requests = 0
        self.number = next(_serial)  # $connection
        self.parsing: Request | None = None
        self.req: Request | None = None
        # pipelined requests waiting their turn: a list, not a deque (whose first block is
        # ~750 bytes on every connection); it rarely holds more than one or two
        self.pending: list[tuple[Request, list[bytes], bool]] = []
        self.held: list[bytes] | None = None
        self.holds: list[tuple[ConnZone, str]] | None = None  # limit_conn's, for this request
        self.upgrading = False
        self.write_paused = False
        self.file_body: FileBody | None = None  # a file on its way out (proxy/static.py)
        self.spool: Spool | None = None  # a response read ahead of the client (proxy/spool.py)
        self.reading_paused = False
        self.eof = False
        self.lingering = 0.0
        self.header_timeout = state.client_header_timeout
        self.idle_timeout = state.client_keepalive_timeout  # the last keepalive_timeout used
        self.send_timeout = 60.0  # nginx send_timeout: the client must take bytes this often
        self.send_mark = 0  # unsent bytes when the send timer was last armed
        # The response was cut off: a TLS close then sends no close_notify, which would
        # tell the client the body it got is whole (nginx: c->error, c->timedout).
        self.truncated = False
        self.in_head = True
        self.head_bytes = 0
        self.head_size = 0  # bytes of the head being parsed, counted as the parser calls
        self.rejected = 0  # a 400 due once the requests before the bad bytes are answered
        self.out: list[bytes] = []
        self.exchange = Exchange()  # the request being handled, reset for each

    def _new_parser(self) -> None:
        parser = self.parser = httptools.HttpRequestParser(self)
        # A lone LF ends a header line, as in nginx (RFC 9112 section 2.2); a lone CR
        # stays an error.  The request line's lone LF is mended in ``_mended``.
        parser.set_dangerous_leniencies(lenient_optional_cr_before_lf=True)
        # bound methods kept once: the hot path calls them without a look-up each time
        self.feed: Callable[[bytes], None] = parser.feed_data
        self.get_method: Callable[[], bytes] = parser.get_method
        self.get_version: Callable[[], str] = parser.get_http_version
        self.keeps_alive: Callable[[], bool] = parser.should_keep_alive

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, raw: asyncio.Transport) -> None:
        state = self.state
        transport = self.transport = HeldTransport(raw, state.outbox)
        self.write = transport.write
        peer = transport.get_extra_info("peername")
        sock = transport.get_extra_info("socket")
        if isinstance(peer, tuple):
            self.remote_addr = peer[0]
            try:
                family = socket.AF_INET6 if ":" in peer[0] else socket.AF_INET
                self.remote_bytes = socket.inet_pton(family, peer[0])
            except OSError:
                self.remote_bytes = b""
        else:
            self.remote_addr = "unix:"
        local = transport.get_extra_info("sockname")
        if isinstance(local, tuple):
            self.local_port = local[1]
            self.vhosts = state.router.vhosts_for(local[0], local[1])
        if self.vhosts is not None:
            # before a request names its server, the listen's default server's limits apply
            self.header_timeout = self.vhosts.default.block.client_header_timeout
            self.send_timeout = self.vhosts.default.block.send_timeout
        if sock is not None and isinstance(peer, tuple):
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        state.connections.add(self)
        state.accepted += 1
        self.phase = IDLE
        self.deadline = state.now() + self.header_timeout
        if len(state.connections) > state.max_connections:
            # Past the bound: a short, honest answer instead of a silent close.
            state.log_error("warn", f"{state.max_connections} connections are not enough")
            transport.write(
                local_response(503, error_page(503), b"text/html", state.date.current, False)
            )
            # Linger briefly so the unread request does not turn the answer into a reset.
            now = state.now()
            self.phase = LINGER
            self.lingering = now + 2.0
            self.deadline = now + 1.0
            if transport.can_write_eof():
                transport.write_eof()
            else:
                transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        ex = self.exchange
        self.state.connections.discard(self)
        if self.holds is not None:
            release(self.holds)  # limit_conn: a tunnel or an aborted request ends here
            self.holds = None
        if self.phase == TUNNEL:
            self.state.tunnels -= 1
            uconn = ex.uconn
            if uconn is not None:
                ex.uconn = None
                uconn.close()
        self.phase = CLOSING
        if ex.body_file is not None:
            ex.drop_body_file()  # an aborted upload: nothing of it reached the app
        if self.file_body is not None:
            self.file_body.close()  # a file the client stopped taking
            self.file_body = None
        if self.spool is not None:
            self._drop_spool()
        if self.req is not None and (ex.uconn is not None or ex.connect_task is not None):
            # The client went away mid-exchange: nginx logs 499 and stops the upstream.
            self._abort_upstream()
            self._log(499)
            self.req = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        phase = self.phase
        if phase == TUNNEL:
            uconn = ex.uconn
            if uconn is not None and uconn.transport is not None:
                uconn.transport.write(data)
                self._tunnel_active()
            return
        if phase == LINGER:
            self.deadline = min(self.state.now() + LINGERING_TIMEOUT, self.lingering)
            return
        if self.upgrading or self.held is not None:
            if self.held is None:
                self.held = []
            self.held.append(data)
            if sum(map(len, self.held)) > BODY_BUFFER_HIGH:
                self._pause_reading()
            return
        try:
            self.feed(data)
        except httptools.HttpParserUpgrade as upgrade:
            self.upgrading = True
            rest = data[upgrade.args[0] :]
            self.held = [rest] if rest else []
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if self.phase >= CLOSING:
                return  # the connection already answered and is ending: nothing more
            again = mended(self.parsing, data, exc)
            if again is not None:
                self._new_parser()
                self.parsing = None
                self.data_received(again)
                return
            if isinstance(cause, Rejected):
                code = cause.status
            elif cause is None or isinstance(cause, httptools.HttpParserError):
                code = 400
                if exc.args and exc.args[0] == "Invalid HTTP version":
                    # nginx: 505 for a major version above 1, 400 below
                    code = 505 if self.get_version()[:1] > "1" else 400
            else:
                # A defect of ours surfaced inside a parser callback: say so loudly.
                log.error("internal error handling a request", exc_info=cause)
                code = 500
            if self.req is not None and ex.body_done and code != 500:
                self._reject_later(code)
            else:
                self._bad_request(code)
            return
        if self.in_head:
            # Still inside a request head after this read: bound what it may take
            # before the parser calls back (large_client_header_buffers 4 x 8k).  A
            # read in which a message ended (head_bytes < 0) starts the count afresh.
            if self.head_bytes < 0:
                self.head_bytes = 0
            else:
                self.head_bytes += len(data)
                if self.head_bytes > MAX_HEAD_BYTES:
                    self._bad_request(494)
                elif simple_request(self.parsing, data, self.get_method()):
                    self._bad_request(400)  # HTTP/0.9, answered now rather than at a timeout

    def _reject_later(self, code: int) -> None:
        """Bad bytes behind requests that came whole: those are answered first, then
        ``code`` and close (nginx reads the next request only after the previous one)."""
        self.rejected = code
        self.parsing = None
        if self.pending and not self.pending[-1][2]:
            self.pending.pop()  # its body is cut by the bad bytes
        self.held = []  # read nothing more; ``_finish`` answers
        self._pause_reading()

    def eof_received(self) -> bool | None:
        # A half-closed client may still want its response (nginx answers it); a tunnel
        # ends with the client's end, as nginx's upgraded connections do.
        self.eof = True
        if self.transport is not None:
            self.transport.send()  # a false return closes the transport, past the wrapper
        if self.phase == TUNNEL:
            return False
        return self.req is not None or bool(self.pending)

    def pause_writing(self) -> None:
        """The client takes our bytes slower than they come: stop reading upstream, and
        from now on only send_timeout counts (the upstream waits on us, not we on it)."""
        self.write_paused = True
        uconn = self.exchange.uconn
        if uconn is not None and uconn.transport is not None and not self._read_ahead(uconn):
            uconn.transport.pause_reading()
        if self.phase != CLOSING:
            self._arm_send_timer(self.state.now())

    def resume_writing(self) -> None:
        ex = self.exchange
        self.write_paused = False
        if self.file_body is not None:
            self.file_body.pump()
        spool = self.spool
        if spool is not None:
            spool.pump()
            if not spool.closed:
                return  # still behind: send_timeout goes on counting
        uconn = ex.uconn
        if uconn is not None and uconn.transport is not None and not uconn.closed:
            uconn.transport.resume_reading()
        now = self.state.now()
        phase = self.phase
        route = ex.route
        if phase == UPSTREAM and route is not None:
            self.deadline = now + route.read_timeout
        elif phase == TUNNEL:
            self._tunnel_active()
        elif phase == IDLE:
            self.deadline = now + self.idle_timeout

    def _read_ahead(self, uconn: UpstreamConnection) -> bool:
        """proxy_buffering: go on reading the response while the client is behind, into
        a spool (proxy/spool.py) the client is then fed from."""
        if self.spool is not None:
            return True
        ex = self.exchange
        route = ex.route
        if self.phase != UPSTREAM or not ex.resp_started or route is None or uconn.tunnel:
            return False
        if not reads_ahead(route, uconn.accel):
            return False
        assert route.spec is not None
        spool = self.spool = Spool(self, route.spec.buffering, self.state.config.state_dir)
        self.write = spool.write
        return True

    def _drop_spool(self) -> None:
        """The client went away with a response still spooled for it."""
        spool = self.spool
        self.spool = None
        if spool is not None:
            spool.close()
            if spool.done and self.req is not None:
                self._log(spool.done_status)  # the upstream's part was done: not a 499
                self.req = None

    # -- request parser callbacks -----------------------------------------------------
    def on_url(self, url: bytes) -> None:
        req = self.parsing
        if req is None:
            if self.phase >= CLOSING:
                # An answer that ends the connection was given (a 400 decided after the
                # head, a close): a request behind it in the same read is not one to
                # serve -- it would reach the upstream unseen.  Stop the parser here.
                raise Rejected(0)
            self.parsing = req = Request(self, url)
            self.head_size = 0
            req.start = now = self.state.now()
            if self.req is None:
                self.phase = HEAD
                self.deadline = now + self.header_timeout
        else:
            req.url += url  # the URL arrived in pieces
        if len(req.url) > MAX_LINE:
            raise Rejected(414)  # nginx: "Request-URI Too Large"

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.parsing
        if req is None:
            return
        lname = header_name(name)
        req.headers.append((lname, name, value))
        size = len(name) + len(value)
        # the head as a whole, however its bytes arrive (large_client_header_buffers)
        self.head_size += size + 4
        if self.head_size > MAX_HEAD_BYTES:
            raise Rejected(494)
        if lname in SPECIAL_REQUEST_HEADERS:
            special_header(req, lname, value)
        elif size > MAX_LINE:
            raise Rejected(494)  # "Request Header Or Cookie Too Large", sent as 400

    def on_headers_complete(self) -> None:
        req = self.parsing
        self.in_head = False
        self.head_bytes = 0
        if req is None:
            return
        check_head(req, self.get_method(), self.keeps_alive(), self.get_version)
        self._prepare(req)
        if self.req is None:
            self._start(req, [], False)
        else:
            self.pending.append((req, [], False))
            self._pause_reading()

    def on_body(self, body: bytes) -> None:
        req = self.parsing
        if req is None:
            return
        req.body_received += len(body)
        if req is self.req:
            self._client_body(body)
        elif self.pending:
            self.pending[-1][1].append(body)

    def on_message_complete(self) -> None:
        req = self.parsing
        self.parsing = None
        self.in_head = True  # what follows is the next request's head
        self.head_bytes = -1
        if req is None:
            return
        if req is self.req:
            self._client_body_done()
        elif self.pending:
            last = self.pending[-1]
            self.pending[-1] = (last[0], last[1], True)

    # -- request handling -------------------------------------------------------------
    def _prepare(self, req: Request) -> None:
        """Route the request on the listen address it came to (``route_request``)."""
        vhosts = self.vhosts
        if vhosts is None:
            vhosts = self.vhosts = self.state.router.vhosts_for("0.0.0.0", self.local_port)
            if vhosts is None:
                raise httptools.HttpParserError("no server for this address")
        route_request(req, vhosts)

    def _start(self, req: Request, body: list[bytes], complete: bool) -> None:
        """Begin handling ``req``; ``body`` holds bytes that arrived while it waited."""
        ex = self.exchange
        ex.reset()
        self.req = req
        self.conn_requests += 1
        route = req.route
        assert route is not None
        if route.server is not None:
            route = route.server.dispatch(req)  # rewrite directives, regex locations
        ex.route = route
        self.send_timeout = route.client_send_timeout
        if req.version == "1.1" and req.http_host is None:
            self._bad_request(400)
            return
        ex.client_chunked = req.chunked
        ex.expected_body = req.chunked or req.content_length > 0
        ex.body_done = not ex.expected_body or complete
        if route.sets:
            req.vars = {}
            for name, fn in route.sets:
                req.vars[name] = fn(req)
        if route.ret_code or req.ret_code:
            self._respond_return(req, route)
            return
        guard = route.guard
        if guard is not None:  # limit_req, limit_conn, allow/deny, auth_basic (proxy/guard.py)
            code = guard.check(self, req)
            if code:
                self._guarded(req, code, body)
                return
        self._proceed(req, route, body, complete)

    def _proceed(self, req: Request, route: Route, body: list[bytes], complete: bool) -> None:
        """The content phase: files, or the body and the upstream."""
        ex = self.exchange
        if not route.passes:
            if route.stub_status:
                self._respond_stub_status(req)
                return
            if route.files is not None:
                serve(self, req, route.files, body, complete)  # proxy/static.py
                return
            self._respond_error(404, close=False)
            return
        limit = route.client_max_body_size
        if limit and req.content_length > limit:
            # nginx: "client intended to send too large body"; no 100 Continue is sent.
            self._respond_error(413, close=True)
            return
        expects = req.expect_continue and ex.expected_body and not complete
        if expects and req.version == "1.1" and self.transport is not None:
            self.transport.write(CONTINUE)
        if ex.expected_body and route.request_buffering:
            # proxy_request_buffering on: the upstream is chosen once the body is whole
            ex.buffering = True
            ex.body_done = False  # done when the buffered body is, pending or not
            self.phase = BODY
            self.deadline = self.state.now() + route.body_timeout
            for chunk in body:
                self._client_body(chunk)
            if complete:
                self._client_body_done()
            return
        for chunk in body:
            self._client_body(chunk)
        if complete and ex.expected_body:
            self._client_body_done()
        self.phase = CONNECT
        self._choose_upstream(req, route)

    def _guarded(self, req: Request, code: int, body: list[bytes]) -> None:
        """The guard refused the request, or limit_req delays it: a timer, not a block.
        While it waits, reading is paused and what already arrived of the body is kept
        as it came (``_client_body`` with chunked framing off) for ``_delayed``."""
        ex = self.exchange
        if code == DELAY:
            self._pause_reading()
            ex.client_chunked = False
            self.deadline = 0.0
            self.state.loop.call_later(req.limit_delay, self._delayed, req, body)
            return
        route = ex.route
        if code == 401 and route is not None and route.guard is not None:
            self._respond(401, error_page(401), b"text/html", route.guard.challenge, False, True)
            return
        self._respond_error(code, close=False)

    def _delayed(self, req: Request, body: list[bytes]) -> None:
        """limit_req's delay is over: the other limits and the access checks, then on."""
        ex = self.exchange
        route = ex.route
        if self.req is not req or self.phase == CLOSING or route is None:
            return
        body = body + ex.body_buf
        complete = ex.body_done
        ex.body_buf = []
        ex.body_buf_size = 0
        ex.client_chunked = req.chunked
        ex.body_done = not ex.expected_body or complete
        self._resume_reading()
        guard = route.guard
        code = guard.check(self, req) if guard is not None else 0
        if code:
            self._guarded(req, code, body)
            return
        self._proceed(req, route, body, complete)

    def _choose_upstream(self, req: Request, route: Route) -> None:
        ex = self.exchange
        state = self.state
        upstream: Backend | None
        if route.backend is not None:
            upstream = route.backend  # type: ignore[assignment]
            req.proxy_host = route.proxy_host
        else:
            assert route.url_fn is not None
            url = route.url_fn(req)
            try:
                upstream, req.proxy_host, replace = state.upstream_for_url(
                    url, route.tls is not None, route.resolver
                )
            except Unresolved as unresolved:
                self._resolve(req, route, unresolved.host)  # then here again
                return
            if replace is not None:
                route_uri: str | None = replace
            else:
                route_uri = None
            if upstream is not None and route_uri is not None:
                req.url = route_uri.encode("latin-1")
        if upstream is None:
            self._respond_error(500, close=True)
            return
        ex.upstream = upstream
        hash_key = None
        if upstream.hash_fn is not None:
            hash_key = upstream.hash_fn(req).encode("latin-1")  # the bytes nginx hashes
        ex.attempt = upstream.balancer.begin(self.remote_bytes, hash_key, route.tries)
        ex.first_try = now = state.now()
        self._try_next(now)

    def _resolve(self, req: Request, route: Route, host: str) -> None:
        """Wait for the location's resolver (proxy/resolver.py) to answer for ``host``;
        resolver_timeout bounds it, and a client that goes away cancels the wait."""
        if route.resolver is None:
            self.state.log_error("error", f"no resolver defined to resolve {host}")
            self._respond_error(502, close=False)
            return
        self.phase = CONNECT
        self.deadline = 0.0
        task = self.state.loop.create_task(self._resolved(req, route, host))
        self.exchange.connect_task = task

    async def _resolved(self, req: Request, route: Route, host: str) -> None:
        resolver = route.resolver
        assert resolver is not None
        try:
            error = await resolver.resolve(host)
        except asyncio.CancelledError:
            return
        ex = self.exchange
        ex.connect_task = None
        if self.req is not req:
            return
        if error:
            self.state.log_error("error", f"{host} could not be resolved ({error})")
            self._respond_error(502, close=False)
            return
        self._choose_upstream(req, route)

    def _try_next(self, now: float = 0.0) -> None:
        """Pick a peer and send the request to it (nginx's ngx_http_upstream_connect)."""
        ex = self.exchange
        upstream = ex.upstream
        attempt = ex.attempt
        assert upstream is not None and attempt is not None
        if not now:
            now = self.state.now()
        peer = upstream.balancer.pick(attempt, now)
        if peer is None:
            self.state.log_error(
                "error", f'no live upstreams while connecting to upstream "{upstream.name}"'
            )
            self._respond_error(502, close=False)
            return
        ex.peer = peer
        req = self.req
        if req is not None:
            req.peer = peer
            req.upstream_start = now
        route = ex.route
        assert route is not None
        uconn = None
        if upstream.keepalive:
            tls = route.tls
            uconn = upstream.idle.get(peer.address if tls is None else pool_key(peer.address))
        if uconn is not None:
            ex.cached = True
            self._attach(uconn, now)
            return
        ex.cached = False
        self.phase = CONNECT
        self.deadline = now + route.connect_timeout
        ex.connect_task = self.state.loop.create_task(self._connect(peer))

    async def _connect(self, peer: Peer) -> None:
        ex = self.exchange
        loop = self.state.loop
        route = ex.route
        tls = route.tls if route is not None else None
        req = self.req
        proto = UpstreamConnection(
            peer.address if tls is None else pool_key(peer.address), self.state.outbox
        )
        factory = cast("Callable[[], asyncio.Protocol]", lambda: proto)
        name = None
        try:
            if tls is not None and req is not None:
                # proxy_pass https:// (proxy/upstream_tls.py); connect_timeout bounds it all
                name = tls.server_hostname(req)
                await loop.create_connection(
                    factory, peer.host, peer.port, ssl=tls.context, server_hostname=name
                )
            elif peer.spec.is_unix:
                await loop.create_unix_connection(factory, peer.host)
            else:
                await loop.create_connection(factory, peer.host, peer.port)
        except asyncio.CancelledError:
            return
        except OSError as exc:
            ex.connect_task = None
            if self.req is None or ex.peer is not peer:
                return
            self._upstream_failed("error", handshake_error(exc, name))
            return
        ex.connect_task = None
        if self.req is None or self.phase == CLOSING or ex.peer is not peer:
            proto.close()
            return
        sock = proto.transport.get_extra_info("socket") if proto.transport else None
        if sock is not None and sock.family != socket.AF_UNIX:
            try:
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            except OSError:
                pass
        self._attach(proto)

    def _attach(self, uconn: UpstreamConnection, now: float = 0.0) -> None:
        """Send the request head and any body we have on ``uconn``."""
        ex = self.exchange
        req = self.req
        route = ex.route
        assert req is not None and route is not None and uconn.transport is not None
        ex.uconn = uconn
        uconn.begin(self)
        uconn.pass_hidden = route.pass_hidden  # proxy_pass_header
        upstream = ex.upstream
        assert upstream is not None
        head = forward_head(req, route, ex.client_chunked, upstream.keepalive)
        write = uconn.write
        body_file = ex.body_file
        if body_file is not None:
            write(head)
            body_file.seek(0)
            ex.file_sending = True
            self._send_body_file()
        elif ex.body_buf:
            write(head + b"".join(ex.body_buf))
            if not ex.body_retained:
                ex.body_buf = []
                ex.body_buf_size = 0
        else:
            write(head)
        if ex.body_done and ex.client_chunked:
            write(b"0\r\n\r\n")
        ex.request_sent = True
        self.phase = UPSTREAM
        # proxy_read_timeout starts once the request is sent; before that the client's
        # body pace is what is timed (client_body_timeout), as in nginx.
        self.deadline = (now or self.state.now()) + (
            route.read_timeout if ex.body_done else route.body_timeout
        )
        if not ex.body_done:
            self._resume_reading()

    # -- request body -----------------------------------------------------------------
    def _client_body(self, data: bytes) -> None:
        ex = self.exchange
        req = self.req
        route = ex.route
        if req is None or route is None:
            return
        limit = route.client_max_body_size
        if limit and req.body_received > limit:
            # A chunked body is checked as it arrives: "too large chunked body".
            self._abort_upstream()
            self._respond_error(413, close=True)
            return
        if ex.buffering:
            self._buffer_body(data, route)
            return
        if ex.client_chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        uconn = ex.uconn
        if not ex.resp_started:
            self.deadline = self.state.now() + route.body_timeout
        if uconn is not None and uconn.transport is not None:
            uconn.transport.write(data)
            if ex.body_retained:
                self._retain(data)
        else:
            ex.body_buf.append(data)
            ex.body_buf_size += len(data)
            if ex.body_buf_size > BODY_BUFFER_HIGH:
                self._pause_reading()
            if ex.body_buf_size > RETRY_BUFFER:
                ex.body_retained = False

    def _retain(self, data: bytes) -> None:
        ex = self.exchange
        ex.body_buf.append(data)
        ex.body_buf_size += len(data)
        if ex.body_buf_size > RETRY_BUFFER:
            ex.body_retained = False
            ex.body_buf = []
            ex.body_buf_size = 0

    def _buffer_body(self, data: bytes, route: Route) -> None:
        """Keep a body being buffered: in memory up to client_body_buffer_size, then in
        an unlinked file under the state directory (nginx's client_body_temp_path)."""
        ex = self.exchange
        self.deadline = self.state.now() + route.body_timeout
        body_file = ex.body_file
        if body_file is None and ex.body_buf_size + len(data) > route.body_buffer_size:
            state_dir = self.state.config.state_dir
            body_file = ex.body_file = temporary_file(state_dir, "client_body_temp")
            body_file.write(b"".join(ex.body_buf))
            ex.body_buf = []
        if body_file is not None:
            body_file.write(data)
        else:
            ex.body_buf.append(data)
        ex.body_buf_size += len(data)

    def _send_body_file(self) -> None:
        """Write the buffered body's file upstream as the connection takes it: a chunk
        at a time while its write buffer is short, the rest when it drains (nginx sends
        from the file too), so a large body is not held in memory a second time."""
        ex = self.exchange
        uconn = ex.uconn
        body_file = ex.body_file
        transport = uconn.transport if uconn is not None else None
        if uconn is None or transport is None or body_file is None:
            return
        while transport.get_write_buffer_size() < BODY_BUFFER_HIGH:
            chunk = body_file.read(BODY_BUFFER_HIGH)
            if not chunk:
                ex.file_sending = False
                return
            uconn.write(chunk)

    def _client_body_done(self) -> None:
        ex = self.exchange
        if ex.body_done:
            return
        ex.body_done = True
        if ex.buffering:
            # The body is whole: forward it with its length (nginx re-frames a buffered
            # chunked body with Content-Length) and only now choose the upstream.
            ex.buffering = False
            req = self.req
            route = ex.route
            if req is None or route is None:
                return
            req.content_length = ex.body_buf_size
            ex.client_chunked = False
            self.phase = CONNECT
            self._choose_upstream(req, route)
            return
        uconn = ex.uconn
        if ex.client_chunked and uconn is not None and uconn.transport is not None:
            uconn.transport.write(b"0\r\n\r\n")
        route = ex.route
        if uconn is not None and route is not None and not ex.resp_started:
            self.deadline = self.state.now() + route.read_timeout

    # -- upstream response (called by the UpstreamConnection) ------------------------
    def upstream_headers(self, uconn: UpstreamConnection) -> None:
        req = self.req
        ex = self.exchange
        route = ex.route
        if req is None or route is None:
            return
        status = uconn.status_code()
        if 100 <= status < 200 and status != 101:
            uconn.clear_head()
            return
        if status >= 403:
            mask = status_retry(status, route.next_upstream)
            if mask and may_retry(ex, req, self.state.now(), 1):
                self._release_peer(status_outcome(status))
                uconn.receiver = None
                uconn.close()
                ex.uconn = None
                self._retry_or_fail(mask)
                return
        if route.intercept and status >= 300 and self._error_page(req, route, status):
            return  # proxy_intercept_errors
        ex.resp_status = status
        ex.resp_started = True
        peer = ex.peer
        upstream = ex.upstream
        if peer is not None and upstream is not None:
            upstream.balancer.responded(peer, status)
        filters = route.filters  # gzip, proxy_redirect, proxy_cookie_*
        if filters is not None and (filters.gzip is not None or uconn.rewritable):
            ex.gzip = filter_head(filters, status, uconn, req)  # proxy/response_filter.py
        head, ex.resp_chunked, keep, ex.resp_eof_body = response_head(
            status, uconn, req, route, self.state.date.current, self._client_keeps_alive(req)
        )
        if ex.gzip is not None:
            ex.resp_eof_body = ex.gzip.eof_body  # the length it dropped framed the body
        ex.resp_close = not keep
        self.out.append(head)
        req.sent_head = head
        if req.method == b"HEAD" and status != 101:
            # httptools cannot be told a HEAD response has no body: finish it here.
            ex.upstream_keep = uconn.keeps_alive()
            uconn.reset_parser()
            self.upstream_complete(uconn)

    def _client_keeps_alive(self, req: Request) -> bool:
        """Keep the client connection after this response? (keepalive_requests/_timeout)"""
        route = req.route
        return (
            req.keep_alive
            and self.exchange.body_done
            and route is not None
            and self.conn_requests < route.keepalive_requests
            and not self.state.shutting_down
        )

    def _tunnel_active(self) -> None:
        """Bytes moved through a tunnel: nginx times upgraded connections with
        proxy_read_timeout / proxy_send_timeout (ngx_http_upstream_process_upgraded)."""
        if self.write_paused:
            return  # the client is behind: its send timer runs (pause_writing)
        route = self.exchange.route
        self.deadline = self.state.now() + (route.read_timeout if route is not None else 60.0)

    def upstream_body(self, data: bytes) -> None:
        ex = self.exchange
        if self.phase == TUNNEL:
            if self.transport is not None:
                self.transport.write(data)
                self._tunnel_active()
            return
        if not data:
            return
        if ex.gzip is not None:
            data = ex.gzip.compress(data)
            if not data:
                return
        ex.resp_bytes += len(data)
        if ex.resp_chunked:
            self.out.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.out.append(data)

    def _gzip_end(self) -> None:
        """The end of a compressed body: what the compressor still holds."""
        ex = self.exchange
        gzip = ex.gzip
        ex.gzip = None
        if gzip is not None:
            self.upstream_body(gzip.finish())

    def _write_out(self) -> None:
        """Send what the response parser queued in ``out`` as one write."""
        out = self.out
        if out and self.transport is not None:
            count = len(out)
            if count == 1:
                self.write(out[0])
            elif count == 2:
                self.write(out[0] + out[1])  # head and body: cheaper than a join
            else:
                self.write(b"".join(out))
            out.clear()

    def upstream_data_flushed(self) -> None:
        ex = self.exchange
        self._write_out()
        if self.phase == UPSTREAM and ex.route is not None and not self.write_paused:
            self.deadline = self.state.now() + ex.route.read_timeout

    def upstream_complete(self, uconn: UpstreamConnection) -> None:
        ex = self.exchange
        req = self.req
        if req is None or ex.uconn is not uconn or not ex.resp_started:
            return  # an interim 1xx ended; the real response follows
        if ex.resp_status == 101:
            return  # a 101 goes on as a tunnel: upstream_upgraded follows
        if ex.gzip is not None:
            self._gzip_end()
        if ex.resp_chunked:
            self.out.append(b"0\r\n\r\n")
        self._write_out()
        upstream = ex.upstream
        assert upstream is not None
        now = self.state.now()
        peer = ex.peer
        if peer is not None:
            ex.peer = None
            upstream.balancer.free(ex.attempt, peer, OK, now)  # type: ignore[arg-type]
        ex.uconn = None
        uconn.receiver = None
        reusable = ex.upstream_keep if req.method == b"HEAD" else uconn.keeps_alive()
        if upstream.keepalive and ex.body_done and reusable and not ex.file_sending:
            if self.write_paused and uconn.transport is not None:
                uconn.transport.resume_reading()  # paused for this client, not for the next
            upstream.idle.put(uconn, now)
        else:
            uconn.close()
        spool = self.spool
        if spool is not None:
            spool.finish(ex.resp_status, ex.resp_close)  # once the client has it all
            return
        self._finish(ex.resp_status, ex.resp_close, now)

    def upstream_lost(self, uconn: UpstreamConnection, exc: Exception | None) -> None:
        ex = self.exchange
        if ex.uconn is not uconn or self.req is None:
            return
        ex.uconn = None
        if ex.resp_started:
            if ex.resp_eof_body and exc is None:
                # A close-delimited body ends with the connection.
                if ex.gzip is not None:
                    self._gzip_end()
                if ex.resp_chunked:
                    self.out.append(b"0\r\n\r\n")
                self.upstream_data_flushed()
                self._release_peer(Outcome.OK)
                spool = self.spool
                if spool is not None:
                    spool.finish(ex.resp_status, ex.resp_close)
                    return
                self._finish(ex.resp_status, ex.resp_close)
                return
            # Mid-response failure: nothing can be retried; cut the client off like nginx.
            self._release_peer(Outcome.FAILED)
            self.upstream_data_flushed()
            self._log(ex.resp_status)
            self.truncated = True
            self._close()
            return
        kind = "invalid_header" if isinstance(exc, httptools.HttpParserError) else "error"
        self._upstream_failed(
            kind,
            "upstream prematurely closed connection"
            if exc is None
            else f"upstream connection failed ({exc})",
        )

    def upstream_upgraded(self, uconn: UpstreamConnection, rest: bytes) -> None:
        """A 101 from upstream: from here on both sides are a byte tunnel."""
        self.upstream_data_flushed()
        if self.exchange.resp_status != 101:
            self._close()
            return
        self.phase = TUNNEL
        self._tunnel_active()
        self.upgrading = False
        if rest and self.transport is not None:
            self.transport.write(rest)
        held = self.held or []
        self.held = None
        if uconn.transport is not None:
            for chunk in held:
                uconn.transport.write(chunk)
        self._release_peer(Outcome.OK)
        self.state.tunnels += 1
        self._resume_reading()

    def upstream_write_paused(self, paused: bool) -> None:
        """The upstream takes the request body slower than the client sends it."""
        ex = self.exchange
        # the route of a request still being sent upstream, else None
        route = ex.route if self.phase == UPSTREAM and not ex.resp_started else None
        if paused:
            self._pause_reading()
            if route is not None:
                # We stopped reading the client: proxy_send_timeout counts, not its pace.
                self._arm_upstream_send_timer(self.state.now(), route)
            return
        if ex.upstream_mark >= 0:
            ex.upstream_mark = -1
            if route is not None:
                self.deadline = self.state.now() + (
                    route.read_timeout if ex.body_done else route.body_timeout
                )
        if ex.file_sending and route is not None:
            self._send_body_file()  # may pause again, and arm the send timer again
        if not ex.body_done or self.phase == TUNNEL:
            self._resume_reading()

    def _arm_upstream_send_timer(self, now: float, route: Route) -> None:
        ex = self.exchange
        uconn = ex.uconn
        transport = uconn.transport if uconn is not None else None
        ex.upstream_mark = transport.get_write_buffer_size() if transport is not None else 0
        self.deadline = now + route.send_timeout

    def _upstream_send_timed_out(self, now: float) -> bool:
        """nginx's proxy_send_timeout: the upstream took no request byte for that long."""
        ex = self.exchange
        uconn = ex.uconn
        route = ex.route
        transport = uconn.transport if uconn is not None else None
        if transport is None or route is None or ex.resp_started:
            return False
        size = transport.get_write_buffer_size()
        if 0 < size < ex.upstream_mark:
            ex.upstream_mark = size  # it took some: wait again
            self.deadline = now + route.send_timeout
            return True
        ex.upstream_mark = -1
        self._upstream_failed("timeout", "upstream timed out while sending request to upstream")
        return True

    # -- failures and retries ---------------------------------------------------------
    def _upstream_failed(self, kind: str, message: str) -> None:
        """An attempt failed before any response byte reached the client."""
        ex = self.exchange
        uconn = ex.uconn
        if uconn is not None:
            uconn.receiver = None
            uconn.abort()
            ex.uconn = None
        self._release_peer(Outcome.FAILED)
        upstream = ex.upstream
        if ex.cached and kind == "error" and ex.attempt is not None and upstream is not None:
            # An error on a reused keep-alive connection (the server may have closed it
            # just now) gives the try back.
            upstream.balancer.give_back_try(ex.attempt)
        ex.cached = False
        if ex.peer is not None or ex.upstream is not None:
            self.state.log_error("error", f"{message} while proxying to upstream")
        route = ex.route
        req = self.req
        if (
            route is not None
            and req is not None
            and kind in route.next_upstream
            and may_retry(self.exchange, req, self.state.now())
        ):
            self._retry_or_fail(kind)
        else:
            self._respond_error(failure_status(kind), close=False)

    def _retry_or_fail(self, kind: str) -> None:
        ex = self.exchange
        ex.request_sent = False
        self.deadline = 0.0
        if ex.attempt is not None and ex.attempt.tries_left > 0:
            if ex.upstream is not None:
                self.state.metrics.retried(ex.upstream.name)
            if self.req is not None:
                note_try(self.req, kind, self.state.now())  # for $upstream_* (logformat.py)
            self._try_next()
            return
        self._respond_error(failure_status(kind), close=False)

    def _release_peer(self, outcome: Outcome) -> None:
        ex = self.exchange
        peer = ex.peer
        if peer is not None and ex.upstream is not None and ex.attempt is not None:
            if outcome == Outcome.FAILED:
                self.state.count_failure(ex.upstream, peer, self.phase == CONNECT)
            ex.peer = None
            ex.upstream.balancer.free(ex.attempt, peer, outcome, self.state.now())

    def _abort_upstream(self) -> None:
        ex = self.exchange
        task = ex.connect_task
        if task is not None:
            ex.connect_task = None
            task.cancel()
        uconn = ex.uconn
        if uconn is not None:
            ex.uconn = None
            uconn.abort()
        if self.phase != TUNNEL:
            self._release_peer(Outcome.OK)

    def _arm_send_timer(self, now: float) -> None:
        transport = self.transport
        self.send_mark = transport.get_write_buffer_size() if transport is not None else 0
        self.deadline = now + self.send_timeout

    def _send_timed_out(self, now: float) -> bool:
        """nginx's send_timeout: bytes wait for the client and it took none of them for
        that long.  True when that was handled (progress: wait again; none: reset)."""
        transport = self.transport
        if transport is None:
            return False
        size = transport.get_write_buffer_size()
        if size == 0:
            return False
        if size < self.send_mark:
            self.send_mark = size  # the client took some: wait again
            self.deadline = now + self.send_timeout
            return True
        self.state.log_error(
            "info", f"client timed out while sending to client, client: {self.remote_addr}"
        )
        if self.req is not None:
            self._abort_upstream()
            self._log(self.exchange.resp_status)
            self.req = None
        if self.phase == TUNNEL:
            self.state.tunnels -= 1
        self.phase = CLOSING
        transport.abort()  # a close would wait for bytes that will never leave
        return True

    def expire(self, now: float) -> None:
        """The deadline passed; what that means depends on the phase."""
        ex = self.exchange
        phase = self.phase
        self.deadline = 0.0
        if phase == CLOSING:
            self._send_timed_out(now)  # a close still waiting for its bytes to leave
            return
        if self.write_paused and self._send_timed_out(now):
            return
        if (
            phase == UPSTREAM
            and ex.upstream_mark >= 0
            and self.req is not None
            and self._upstream_send_timed_out(now)
        ):
            return
        if phase == CONNECT and self.req is not None and ex.connect_task is not None:
            task = ex.connect_task
            ex.connect_task = None
            task.cancel()
            self._upstream_failed("timeout", "upstream timed out (connect)")
        elif phase == UPSTREAM and self.req is not None and not ex.resp_started:
            self._upstream_failed("timeout", "upstream timed out while reading response header")
        elif phase == UPSTREAM and self.req is not None:
            self._abort_upstream()
            self._log(ex.resp_status)
            self.truncated = True
            self._close()
        elif phase == TUNNEL:
            uconn = ex.uconn
            if uconn is not None:
                ex.uconn = None
                uconn.close()
            self._close()
        elif phase == BODY and self.req is not None:
            self._respond_error(408, close=True)  # client_body_timeout while buffering
        else:
            self._close()

    # -- responses of our own ----------------------------------------------------------
    def _respond_return(self, req: Request, route: Route) -> None:
        code = req.ret_code or route.ret_code
        if code == 444:
            self._log(444)
            self._close()
            return
        text = req.ret_text if req.ret_code else route.ret_text(req) if route.ret_text else None
        authority = req.host or req.server_name
        body, ctype, extra = return_response(code, text, req.scheme, authority, self.local_port)
        if text is not None and not extra:
            ctype = route.text_type(req.path)  # a body of text: types, then default_type
        self._respond(code, body, ctype, extra, False, True)

    def _respond_stub_status(self, req: Request) -> None:
        """ngx_http_stub_status_module's page, from this worker's counts (nginx's are the
        sum of its workers': a worker is a process of its own here)."""
        if req.method != b"GET" and req.method != b"HEAD":
            self._respond_error(405, False)
            return
        state = self.state
        reading = writing = 0
        open_requests = 0  # begun and not yet counted: nginx counts a request at its start
        for conn in state.connections:
            if conn.phase == HEAD and conn is not self:
                reading += 1
                open_requests += 1
            elif conn.phase != IDLE or conn is self:
                writing += 1
                open_requests += conn.req is not None
        active = len(state.connections)
        requests = state.metrics.requests() + open_requests
        body = (
            b"Active connections: %d \nserver accepts handled requests\n %d %d %d \n"
            b"Reading: %d Writing: %d Waiting: %d \n"
            % (
                active,
                state.accepted,
                state.accepted,
                requests,
                reading,
                writing,
                active - reading - writing,
            )
        )
        self._respond(200, body, b"text/plain", b"", False, True)

    def _respond_error(self, code: int, close: bool) -> None:
        if self.req is not None:
            self.req.err_status = 0  # nginx's own page keeps its code, also within error_page
        self._abort_upstream()
        if self.exchange.resp_started:
            self._close()
            return
        self._respond(code, error_page(code), b"text/html", b"", close, True)

    def _respond(
        self, code: int, body: bytes, ctype: bytes, extra: bytes, close: bool, own: bool = False
    ) -> None:
        """Answer ``body`` whole; ``own``: a page or text nonstop wrote itself (gzip may
        compress it, as nginx's gzip filter does its own pages and ``return`` text; a
        file's body has been through the filter already)."""
        ex = self.exchange
        req = self.req
        route = ex.route
        if req is None or self.transport is None:
            return
        if route is not None and route.error_pages and self._error_page(req, route, code):
            return
        if not ex.body_done or self.upgrading:
            close = True  # an unread body would be taken for the next request
        keep = not close and self._client_keeps_alive(req)
        head_only = req.method == b"HEAD"
        status = req.err_status or code  # error_page's
        if route is not None:
            extra += added_headers(route, code, req)
            charset = for_status(route.charset, status)
            if charset is not None:
                ctype = content_type(ctype, charset)
            filters = route.filters
            if own and filters is not None and filters.gzip is not None:
                # HEAD too: nginx sends the gzip head of its own answers to a HEAD
                gzip = filters.gzip
                extra, gzipped = file_head(gzip, req, ctype, len(body), extra, status)
                if gzipped:
                    stream = gzip.compressor()
                    body = stream.compress(body) + stream.finish()
        date = self.state.date.current
        req.sent_head = local_response(status, body, ctype, date, keep, extra, head_only)
        self.transport.write(req.sent_head)
        ex.resp_started = True
        ex.resp_bytes = len(body)
        self._finish(code, not keep)

    def _error_page(self, req: Request, route: Route, code: int) -> bool:
        """The page ``error_page`` names answers ``code`` instead (proxy/error_page.py)."""
        page = page_for(route.error_pages, req, code)
        if page is None or not self.exchange.body_done or route.owner is None:
            return False
        self._abort_upstream()
        status, location = redirect_to_page(req, page, code, route.owner)
        if status:
            extra = b"Location: " + location.encode("latin-1") + b"\r\n"
            self._respond(status, error_page(status), b"text/html", extra, False, True)
        else:
            self.conn_requests -= 1  # the same request, started again
            self._start(req, [], True)
        return True

    def _bad_request(self, code: int) -> None:
        """Malformed input: answer ``code`` and close; nothing more is forwarded."""
        ex = self.exchange
        self._abort_upstream()
        transport = self.transport
        if transport is None:
            return
        if not ex.resp_started:
            status = 400 if code == 494 else code  # nginx sends its 494 as 400
            date = self.state.date.current
            transport.write(local_response(status, error_page(code), b"text/html", date, False))
        self.state.log_error("info", f"client sent invalid request, answered {code}")
        if self.req is None:
            self.req = self.parsing
        self._log(code)
        self.req = None
        ex.body_done = False  # unknown what else is on the way: linger
        self._linger_or_close(None)

    # -- end of a request -------------------------------------------------------------
    def _finish(self, status: int, close: bool, now: float = 0.0) -> None:
        ex = self.exchange
        req = self.req
        route = req.route if req is not None else None
        if not now:
            now = self.state.now()
        self._log(status, now)
        self.req = None
        if self.holds is not None:
            release(self.holds)  # limit_conn
            self.holds = None
        ex.route = None
        ex.upstream = None
        ex.attempt = None
        ex.resp_started = False
        if ex.body_file is not None:
            ex.drop_body_file()
        if close or self.transport is None or self.upgrading:
            self._linger_or_close(req)
            return
        if self.eof and not self.pending:
            self._close()
            return
        if self.pending:
            req, body, complete = self.pending.pop(0)
            if not self.pending and not self.rejected:
                self._resume_reading()
            self._start(req, body, complete)
            return
        if self.rejected:
            self._bad_request(self.rejected)
            return
        self.phase = IDLE
        self.idle_timeout = (
            route.keepalive_timeout if route is not None else self.state.client_keepalive_timeout
        )
        self.deadline = now + self.idle_timeout
        self._resume_reading()

    def _pause_reading(self) -> None:
        if self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def _resume_reading(self) -> None:
        """Undo ``_pause_reading``; only this connection pauses its transport, so when
        it did not, there is nothing to resume (and no call to make per request)."""
        if self.reading_paused and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def _log(self, status: int, now: float = 0.0) -> None:
        req = self.req
        if req is not None:
            ex = self.exchange
            self.state.record(req, status, ex.resp_bytes, now or self.state.now(), ex.upstream)

    def _close(self) -> None:
        self.phase = CLOSING
        self.deadline = 0.0
        transport = self.transport
        if transport is not None:
            transport.close()
            if transport.get_write_buffer_size():
                # The close waits for these bytes to leave: bound the wait by send_timeout.
                self._arm_send_timer(self.state.now())

    def _linger_or_close(self, req: Request | None) -> None:
        """Close after a response; if the client may still be sending, linger first.

        Closing a socket with unread bytes makes the kernel send a reset, which can
        destroy the response (a 413, a 400) before the client reads it.  Like nginx's
        lingering close: shut our side, discard what still arrives, then close.
        """
        transport = self.transport
        unread = not self.exchange.body_done or self.upgrading or (req is None and self.parsing)
        if (
            not unread
            or transport is None
            or transport.is_closing()
            or not transport.can_write_eof()
        ):
            self._close()
            return
        now = self.state.now()
        self.phase = LINGER
        self.lingering = now + LINGERING_TIME
        self.deadline = now + LINGERING_TIMEOUT
        self.parsing = None
        self.pending.clear()
        try:
            transport.write_eof()
            self.reading_paused = False
            transport.resume_reading()
        except (OSError, RuntimeError):
            self._close()

    def close_idle(self) -> bool:
        """Graceful shutdown: close if between requests; True if it closed."""
        if self.phase in (IDLE,) and self.req is None and not self.pending:
            self._close()
            return True
        return False


def _unconnected(data: bytes) -> None:
    raise ConnectionError("not connected")
