"""The client side of the proxy: one ``ClientConnection`` per accepted connection.

A thin ``asyncio.Protocol`` around httptools' request parser.  Requests are handled one at
a time per connection (pipelined ones wait in a queue); each request's upstream exchange
-- pick, connect or reuse, send, retry, relay -- lives on the connection so that the hot
path allocates little: a ``Request``, an ``Attempt`` and the bytes themselves.

Timeouts are deadlines checked by the server's tick (``expire``), not timer handles: a
request sets one float instead of scheduling and cancelling a callback.
"""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import tempfile
from collections import deque
from collections.abc import Callable
from typing import IO, TYPE_CHECKING, Final, cast

import httptools

from nonstop.proxy.connection_pool import H_CONNECTION, H_TE, H_UPGRADE, UpstreamConnection
from nonstop.proxy.request import Request
from nonstop.proxy.responses import REDIRECTS, error_page, status_line
from nonstop.proxy.upstream import Outcome
from nonstop.proxy.uri import escape_uri, needs_parse, parse_target, valid_host

if TYPE_CHECKING:
    from nonstop.proxy.router import HeaderOp, Route, VirtualHosts
    from nonstop.proxy.server import Backend, ProxyState
    from nonstop.proxy.upstream import Attempt, Peer

__all__ = ["ClientConnection", "Rejected"]

log = logging.getLogger("nonstop")


class Rejected(Exception):
    """A request refused while parsing, with the status nginx answers it with."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


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

NON_IDEMPOTENT: Final = frozenset({b"POST", b"LOCK", b"PATCH"})
NO_BODY_STATUS: Final = frozenset({204, 304})
# add_header without "always" applies to these (ngx_http_headers_filter_module.c).
ADD_HEADER_STATUS: Final = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})
SPECIAL_REQUEST_HEADERS: Final = frozenset(
    {
        b"host",
        b"content-length",
        b"transfer-encoding",
        b"connection",
        b"upgrade",
        b"expect",
        b"x-forwarded-for",
        b"proxy-connection",
    }
)
RETRY_BUFFER: Final = 1024 * 1024  # request body kept for a retry up to this size
MAX_LINE: Final = 8192  # large_client_header_buffers 4 8k: one line (request line or header)
MAX_HEAD_BYTES: Final = 4 * 8192 + 1024  # the whole head, with some slack for line ends
BODY_BUFFER_HIGH: Final = 256 * 1024  # pause reading the client above this many unsent bytes
SERVER_LINE: Final = b"Server: nonstop\r\n"
# "?" as an int: ``b"?" in data`` first tries the operand as an int and formats a
# TypeError, which costs more than the search
QUERY: Final = ord("?")
HASH: Final = ord("#")


class ClientConnection:
    """One client connection; an asyncio protocol by its methods (no base class, so that
    the compiled build makes it a native class with C-level attribute access)."""

    __slots__ = (
        "attempt",
        "body_buf",
        "body_buf_size",
        "body_done",
        "body_file",
        "body_retained",
        "buffering",
        "cached",
        "client_chunked",
        "conn_requests",
        "connect_task",
        "deadline",
        "eof",
        "expected_body",
        "feed",
        "file_sending",
        "first_try",
        "get_method",
        "get_version",
        "head_bytes",
        "head_size",
        "header_timeout",
        "held",
        "idle_timeout",
        "in_head",
        "keeps_alive",
        "lingering",
        "local_port",
        "out",
        "parser",
        "parsing",
        "peer",
        "pending",
        "phase",
        "reading_paused",
        "rejected",
        "remote_addr",
        "remote_bytes",
        "req",
        "request_sent",
        "resp_bytes",
        "resp_chunked",
        "resp_close",
        "resp_eof_body",
        "resp_started",
        "resp_status",
        "route",
        "scheme",
        "send_mark",
        "send_timeout",
        "state",
        "transport",
        "truncated",
        "uconn",
        "upgrading",
        "upstream",
        "upstream_keep",
        "upstream_mark",
        "vhosts",
        "write",
        "write_paused",
    )

    def __init__(self, state: ProxyState, scheme: str = "http") -> None:
        self.state = state
        self.scheme = scheme
        self.transport: asyncio.Transport | None = None
        self._new_parser()
        self.write: Callable[[bytes], None] = _unconnected
        self.vhosts: VirtualHosts | None = None
        self.remote_addr = ""
        self.remote_bytes = b""
        self.local_port = 0
        self.phase = IDLE
        self.deadline = 0.0
        self.conn_requests = 0
        self.parsing: Request | None = None
        self.req: Request | None = None
        self.pending: deque[tuple[Request, list[bytes], bool]] = deque()
        self.held: list[bytes] | None = None
        self.upgrading = False
        self.write_paused = False
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
        self.body_file: IO[bytes] | None = None  # a buffered body past client_body_buffer_size
        self._reset_exchange()

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

    def _reset_exchange(self) -> None:
        self.upstream_mark = -1  # unsent request bytes when the upstream stopped taking them
        self.route: Route | None = None
        self.upstream: Backend | None = None
        self.attempt: Attempt | None = None
        self.peer: Peer | None = None
        self.uconn: UpstreamConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.first_try = 0.0
        self.request_sent = False
        self.body_buf: list[bytes] = []
        self.body_buf_size = 0
        if self.body_file is not None:
            self._drop_body_file()
        self.buffering = False  # reading the whole body before choosing an upstream
        self.file_sending = False  # a buffered body's file is not yet all written upstream
        self.body_retained = True
        self.body_done = False
        self.client_chunked = False
        self.expected_body = False
        self.resp_started = False
        self.resp_status = 0
        self.resp_bytes = 0
        self.resp_chunked = False
        self.resp_close = False
        self.resp_eof_body = False
        self.upstream_keep = False
        self.cached = False

    # -- asyncio.Protocol -------------------------------------------------------------
    def connection_made(self, transport: asyncio.Transport) -> None:
        self.transport = transport
        self.write = transport.write
        state = self.state
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
        self.phase = IDLE
        self.deadline = state.now() + self.header_timeout
        if len(state.connections) > state.max_connections:
            # Past the bound: a short, honest answer instead of a silent close.
            state.log_error("warn", f"{state.max_connections} connections are not enough")
            transport.write(
                status_line(503)
                + SERVER_LINE
                + state.date.current
                + b"Content-Type: text/html\r\nContent-Length: %d\r\nConnection: close\r\n\r\n"
                % len(error_page(503))
                + error_page(503)
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
        self.state.connections.discard(self)
        if self.phase == TUNNEL:
            self.state.tunnels -= 1
            uconn = self.uconn
            if uconn is not None:
                self.uconn = None
                uconn.close()
        self.phase = CLOSING
        if self.body_file is not None:
            self._drop_body_file()  # an aborted upload: nothing of it reached the app
        if self.req is not None and (self.uconn is not None or self.connect_task is not None):
            # The client went away mid-exchange: nginx logs 499 and stops the upstream.
            self._abort_upstream()
            self._log(499)
            self.req = None
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        phase = self.phase
        if phase == TUNNEL:
            uconn = self.uconn
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
            mended = self._mended(data, exc)
            if mended is not None:
                self._new_parser()
                self.parsing = None
                self.data_received(mended)
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
            if self.req is not None and self.body_done and code != 500:
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
                elif self._simple_request(data):
                    self._bad_request(400)  # HTTP/0.9, answered now rather than at a timeout

    def _mended(self, data: bytes, exc: Exception) -> bytes | None:
        """A request line that ends in a lone LF, with its CR, when it is the first line
        of ``data``; else None.  nginx takes a lone LF as a line end (RFC 9112 section
        2.2); llhttp takes it after the version only with the flag that would also take
        a lone CR for one, so the line is mended and the read parsed again."""
        req = self.parsing
        if req is None or req.headers or exc.args[:1] != ("Expected CRLF after version",):
            return None
        end = data.find(b"\n")
        line = data[:end]
        if end < 0 or b"\r" in line or req.url not in line:
            return None
        return line + b"\r" + data[end:]

    def _simple_request(self, data: bytes) -> bool:
        """The read ends an HTTP/0.9 request line ("GET /"), which has no headers to
        wait for: nginx answers it at once."""
        req = self.parsing
        if req is None or req.headers or data[-1:] != b"\n":
            return False
        start = data.rfind(b"\n", 0, len(data) - 1) + 1
        return data[start:].strip() == self.get_method() + b" " + req.url

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
        if self.phase == TUNNEL:
            return False
        return self.req is not None or bool(self.pending)

    def pause_writing(self) -> None:
        """The client takes our bytes slower than they come: stop reading upstream, and
        from now on only send_timeout counts (the upstream waits on us, not we on it)."""
        self.write_paused = True
        uconn = self.uconn
        if uconn is not None and uconn.transport is not None:
            uconn.transport.pause_reading()
        if self.phase != CLOSING:
            self._arm_send_timer(self.state.now())

    def resume_writing(self) -> None:
        self.write_paused = False
        uconn = self.uconn
        if uconn is not None and uconn.transport is not None and not uconn.closed:
            uconn.transport.resume_reading()
        now = self.state.now()
        phase = self.phase
        route = self.route
        if phase == UPSTREAM and route is not None:
            self.deadline = now + route.read_timeout
        elif phase == TUNNEL:
            self._tunnel_active()
        elif phase == IDLE:
            self.deadline = now + self.idle_timeout

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
            if self.req is None:
                self.phase = HEAD
                self.deadline = self.state.now() + self.header_timeout
        else:
            req.url += url  # the URL arrived in pieces
        if len(req.url) > MAX_LINE:
            raise Rejected(414)  # nginx: "Request-URI Too Large"

    def on_header(self, name: bytes, value: bytes) -> None:
        req = self.parsing
        if req is None:
            return
        lname = _LOWER.get(name)
        if lname is None:
            lname = _lower(name)
        req.headers.append((lname, name, value))
        size = len(name) + len(value)
        # the head as a whole, however its bytes arrive (large_client_header_buffers)
        self.head_size += size + 4
        if self.head_size > MAX_HEAD_BYTES:
            raise Rejected(494)
        if lname in SPECIAL_REQUEST_HEADERS:
            self._special_header(req, lname, value)
        elif size > MAX_LINE:
            raise Rejected(494)  # "Request Header Or Cookie Too Large", sent as 400

    def _special_header(self, req: Request, lname: bytes, value: bytes) -> None:
        if len(value) > MAX_LINE:
            raise Rejected(494)
        if lname == b"host":
            if req.http_host is not None:
                raise Rejected(400)  # nginx: "client sent duplicate host header"
            req.http_host = value
        elif lname == b"x-forwarded-for":
            if req.xff is None:
                req.xff = []
            req.xff.append(value)
        elif lname == b"connection":
            req.connection_header = True
        elif lname == b"proxy-connection":
            if len(lname) + len(value) > MAX_LINE:
                raise Rejected(494)  # the limit of an ordinary header line
            req.connection_header = True  # llhttp reads it as a Connection header
        elif lname == b"upgrade":
            req.upgrade = value
        elif lname == b"expect":
            req.expect_continue = value.lower() == b"100-continue"
        elif lname == b"content-length":
            if req.content_length != -1:
                raise Rejected(400)  # nginx: "client sent duplicate header line"
            try:
                req.content_length = int(value)
            except ValueError:
                raise Rejected(400) from None
        elif lname == b"transfer-encoding":
            if req.chunked or value.strip().lower() != b"chunked":
                # nginx accepts exactly "chunked"; any other coding is 501, because a
                # proxy that re-frames the body must not pass on a coding it dropped.
                raise Rejected(501)
            req.chunked = True

    def on_headers_complete(self) -> None:
        req = self.parsing
        self.in_head = False
        self.head_bytes = 0
        if req is None:
            return
        method = req.method = self.get_method()
        if method == b"TRACE" or method == b"CONNECT":
            raise Rejected(405)  # nginx: "client sent TRACE method" (and CONNECT)
        keep_alive = req.keep_alive = self.keeps_alive()
        # llhttp accepts the versions 0.9, 1.0, 1.1 and 2.0, and without a Connection (or
        # Proxy-Connection) header keeps only 1.1 alive: then the version is the default
        # "1.1" without asking the parser, whose version string costs more than the rest
        # of this method (tests/unit/proxy pins this property of llhttp).
        if not keep_alive or req.connection_header:
            version = req.version = self.get_version()
            if version != "1.1":
                if version[0] != "1":
                    raise Rejected(505)
                if req.chunked:
                    raise Rejected(400)  # nginx: Transfer-Encoding in an HTTP/1.0 request
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
        """Split the URL, find the host, route the request.

        The result depends only on the Host header and the path, so it is cached per
        listen address; most traffic repeats a few of those pairs.  Routing is on
        nginx's $uri (``uri.parse_target``); a clean origin-form path is its own $uri.
        """
        vhosts = self.vhosts
        if vhosts is None:
            vhosts = self.vhosts = self.state.router.vhosts_for("0.0.0.0", self.local_port)
            if vhosts is None:
                raise httptools.HttpParserError("no server for this address")
        url = req.url
        cacheable = True
        host: str | None = None
        if url[:1] != b"/":
            host = _origin_form(req)
            url = req.url
            cacheable = False  # the request line's host, not the Host header, names it
        path = url
        if QUERY in url:
            path, _, args = url.partition(b"?")
            if args:
                req.args = args.decode("latin-1")
                if HASH in args:
                    req.args = req.args.partition("#")[0]  # "#" ends $args
        key = (req.http_host, path)
        if cacheable:
            hit = vhosts.cache.get(key)
            if hit is not None:
                req.path, req.host, req.server_name, req.route = hit
                return
        if req.http_host is not None:
            # nginx validates the Host header even when the request line names the host
            valid = valid_host(req.http_host)
            if valid is None:
                raise Rejected(400)  # nginx: "client sent invalid host header"
            if host is None:
                host = valid
        req.host = host = host or ""
        if HASH in path:
            cacheable = False  # "#" ends $uri, and the "?" behind it starts no $args
        if not cacheable or needs_parse(path):
            parsed = parse_target(url.decode("latin-1"))
            if parsed is None:
                raise Rejected(400)  # above the root, a decoded NUL, a broken escape
            req.path, req.args = parsed
        else:
            req.path = path.decode("latin-1")
        srv = vhosts.find(host)
        names = srv.block.server_names
        req.server_name = names[0] if names else ""
        req.route = srv.find(req.path)
        if cacheable:
            if len(vhosts.cache) >= 4096:
                vhosts.cache.clear()
            vhosts.cache[key] = (req.path, req.host, req.server_name, req.route)

    def _start(self, req: Request, body: list[bytes], complete: bool) -> None:
        """Begin handling ``req``; ``body`` holds bytes that arrived while it waited."""
        self._reset_exchange()
        self.req = req
        self.conn_requests += 1
        route = req.route
        assert route is not None
        self.route = route
        self.send_timeout = route.client_send_timeout
        if req.version == "1.1" and req.http_host is None:
            self._bad_request(400)
            return
        self.client_chunked = req.chunked
        self.expected_body = req.chunked or req.content_length > 0
        self.body_done = not self.expected_body or complete
        if route.sets:
            req.vars = {}
            for name, fn in route.sets:
                req.vars[name] = fn(req)
        if route.ret_code:
            self._respond_return(req, route)
            return
        if not route.passes:
            self._respond_error(404, close=False)
            return
        limit = route.client_max_body_size
        if limit and req.content_length > limit:
            # nginx: "client intended to send too large body"; no 100 Continue is sent.
            self._respond_error(413, close=True)
            return
        expects = req.expect_continue and self.expected_body and not complete
        if expects and req.version == "1.1" and self.transport is not None:
            self.transport.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if self.expected_body and route.request_buffering:
            # proxy_request_buffering on: the upstream is chosen once the body is whole
            self.buffering = True
            self.body_done = False  # done when the buffered body is, pending or not
            self.phase = BODY
            self.deadline = self.state.now() + route.body_timeout
            for chunk in body:
                self._client_body(chunk)
            if complete:
                self._client_body_done()
            return
        for chunk in body:
            self._client_body(chunk)
        if complete and self.expected_body:
            self._client_body_done()
        self.phase = CONNECT
        self._choose_upstream(req, route)

    def _choose_upstream(self, req: Request, route: Route) -> None:
        state = self.state
        upstream: Backend | None
        if route.backend is not None:
            upstream = route.backend  # type: ignore[assignment]
            req.proxy_host = route.proxy_host
        else:
            assert route.url_fn is not None
            upstream, req.proxy_host, replace = state.upstream_for_url(route.url_fn(req))
            if replace is not None:
                route_uri: str | None = replace
            else:
                route_uri = None
            if upstream is not None and route_uri is not None:
                req.url = route_uri.encode("latin-1")
        if upstream is None:
            self._respond_error(500, close=True)
            return
        self.upstream = upstream
        hash_key = None
        if upstream.hash_fn is not None:
            hash_key = upstream.hash_fn(req).encode("latin-1")  # the bytes nginx hashes
        attempt = self.attempt = upstream.balancer.begin(self.remote_bytes, hash_key)
        if route.tries and route.tries < attempt.tries_left:
            attempt.tries_left = route.tries
        self.first_try = now = state.now()
        self._try_next(now)

    def _try_next(self, now: float = 0.0) -> None:
        """Pick a peer and send the request to it (nginx's ngx_http_upstream_connect)."""
        upstream = self.upstream
        attempt = self.attempt
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
        self.peer = peer
        uconn = upstream.idle.get(peer.address) if upstream.keepalive else None
        if uconn is not None:
            self.cached = True
            self._attach(uconn, now)
            return
        self.cached = False
        route = self.route
        assert route is not None
        self.phase = CONNECT
        self.deadline = now + route.connect_timeout
        self.connect_task = self.state.loop.create_task(self._connect(peer))

    async def _connect(self, peer: Peer) -> None:
        loop = self.state.loop
        proto = UpstreamConnection(peer.address)
        factory = cast("Callable[[], asyncio.Protocol]", lambda: proto)
        try:
            if peer.spec.is_unix:
                await loop.create_unix_connection(factory, peer.host)
            else:
                await loop.create_connection(factory, peer.host, peer.port)
        except asyncio.CancelledError:
            return
        except OSError as exc:
            self.connect_task = None
            if self.req is None or self.peer is not peer:
                return
            self._upstream_failed("error", f"connect() failed ({exc.errno}: {exc.strerror})")
            return
        self.connect_task = None
        if self.req is None or self.phase == CLOSING or self.peer is not peer:
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
        req = self.req
        route = self.route
        assert req is not None and route is not None and uconn.transport is not None
        self.uconn = uconn
        uconn.begin(self)
        head = self._upstream_head(req, route)
        write = uconn.write
        body_file = self.body_file
        if body_file is not None:
            write(head)
            body_file.seek(0)
            self.file_sending = True
            self._send_body_file()
        elif self.body_buf:
            write(head + b"".join(self.body_buf))
            if not self.body_retained:
                self.body_buf = []
                self.body_buf_size = 0
        else:
            write(head)
        if self.body_done and self.client_chunked:
            write(b"0\r\n\r\n")
        self.request_sent = True
        self.phase = UPSTREAM
        # proxy_read_timeout starts once the request is sent; before that the client's
        # body pace is what is timed (client_body_timeout), as in nginx.
        self.deadline = (now or self.state.now()) + (
            route.read_timeout if self.body_done else route.body_timeout
        )
        if not self.body_done:
            self._resume_reading()

    def _upstream_head(self, req: Request, route: Route) -> bytes:
        url = req.url
        if route.uri_replace is not None:
            url = _rewritten(req, route.uri_prefix, route.uri_replace)
        parts = [req.method, b" ", url, b" HTTP/1.1\r\n"]
        drop = route.drop
        named: set[bytes] | None = None
        for lname, name, value in req.headers:
            if lname in drop:
                if lname == b"connection" and value not in _PLAIN_CONNECTION:
                    named = {t.strip().lower() for t in value.split(b",")}
                    named -= {b"close", b"keep-alive", b"upgrade", b""}
                continue
            parts += (name, b": ", value, b"\r\n")
        if named:
            parts = parts[:4] + _without(parts[4:], named)
        for op in route.ops:
            computed = op.fn(req)  # type: ignore[misc]
            if computed:
                parts.append(op.name + b": " + computed.encode("latin-1") + b"\r\n")
        parts.append(route.const_head)
        if not route.keeps_connection_header and not self.upstream.keepalive:  # type: ignore[union-attr]
            parts.append(b"Connection: close\r\n")
        if self.client_chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
        elif req.content_length >= 0:
            parts.append(b"Content-Length: %d\r\n\r\n" % req.content_length)
        else:
            parts.append(b"\r\n")
        return b"".join(parts)

    # -- request body -----------------------------------------------------------------
    def _client_body(self, data: bytes) -> None:
        req = self.req
        route = self.route
        if req is None or route is None:
            return
        limit = route.client_max_body_size
        if limit and req.body_received > limit:
            # A chunked body is checked as it arrives: "too large chunked body".
            self._abort_upstream()
            self._respond_error(413, close=True)
            return
        if self.buffering:
            self._buffer_body(data, route)
            return
        if self.client_chunked:
            data = b"%x\r\n%b\r\n" % (len(data), data)
        uconn = self.uconn
        if not self.resp_started:
            self.deadline = self.state.now() + route.body_timeout
        if uconn is not None and uconn.transport is not None:
            uconn.transport.write(data)
            if self.body_retained:
                self._retain(data)
        else:
            self.body_buf.append(data)
            self.body_buf_size += len(data)
            if self.body_buf_size > BODY_BUFFER_HIGH:
                self._pause_reading()
            if self.body_buf_size > RETRY_BUFFER:
                self.body_retained = False

    def _retain(self, data: bytes) -> None:
        self.body_buf.append(data)
        self.body_buf_size += len(data)
        if self.body_buf_size > RETRY_BUFFER:
            self.body_retained = False
            self.body_buf = []
            self.body_buf_size = 0

    def _buffer_body(self, data: bytes, route: Route) -> None:
        """Keep a body being buffered: in memory up to client_body_buffer_size, then in
        an unlinked file under the state directory (nginx's client_body_temp_path)."""
        self.deadline = self.state.now() + route.body_timeout
        body_file = self.body_file
        if body_file is None and self.body_buf_size + len(data) > route.body_buffer_size:
            directory = os.path.join(self.state.config.state_dir, "client_body_temp")
            os.makedirs(directory, mode=0o700, exist_ok=True)
            body_file = self.body_file = tempfile.TemporaryFile(dir=directory)  # noqa: SIM115
            body_file.write(b"".join(self.body_buf))
            self.body_buf = []
        if body_file is not None:
            body_file.write(data)
        else:
            self.body_buf.append(data)
        self.body_buf_size += len(data)

    def _send_body_file(self) -> None:
        """Write the buffered body's file upstream as the connection takes it: a chunk
        at a time while its write buffer is short, the rest when it drains (nginx sends
        from the file too), so a large body is not held in memory a second time."""
        uconn = self.uconn
        body_file = self.body_file
        transport = uconn.transport if uconn is not None else None
        if uconn is None or transport is None or body_file is None:
            return
        while transport.get_write_buffer_size() < BODY_BUFFER_HIGH:
            chunk = body_file.read(BODY_BUFFER_HIGH)
            if not chunk:
                self.file_sending = False
                return
            uconn.write(chunk)

    def _drop_body_file(self) -> None:
        body_file = self.body_file
        self.body_file = None
        if body_file is not None:
            body_file.close()

    def _client_body_done(self) -> None:
        if self.body_done:
            return
        self.body_done = True
        if self.buffering:
            # The body is whole: forward it with its length (nginx re-frames a buffered
            # chunked body with Content-Length) and only now choose the upstream.
            self.buffering = False
            req = self.req
            route = self.route
            if req is None or route is None:
                return
            req.content_length = self.body_buf_size
            self.client_chunked = False
            self.phase = CONNECT
            self._choose_upstream(req, route)
            return
        uconn = self.uconn
        if self.client_chunked and uconn is not None and uconn.transport is not None:
            uconn.transport.write(b"0\r\n\r\n")
        route = self.route
        if uconn is not None and route is not None and not self.resp_started:
            self.deadline = self.state.now() + route.read_timeout

    # -- upstream response (called by the UpstreamConnection) ------------------------
    def upstream_headers(self, uconn: UpstreamConnection) -> None:
        req = self.req
        route = self.route
        if req is None or route is None:
            return
        status = uconn.status_code()
        if 100 <= status < 200 and status != 101:
            uconn.clear_head()
            return
        if status >= 403 and status in _STATUS_MASK:  # (403 is the lowest listed)
            mask = _STATUS_MASK[status]
            if mask in route.next_upstream and self._may_retry(1):
                outcome = Outcome.NEXT if status in (403, 404) else Outcome.FAILED
                self._release_peer(outcome)
                uconn.exchange = None
                uconn.close()
                self.uconn = None
                self._retry_or_fail(mask)
                return
        self.resp_status = status
        self.resp_started = True
        peer = self.peer
        if peer is not None:
            peer.responses += 1
            if status >= 500:
                peer.responses_5xx += 1
        lines = uconn.lines
        length = uconn.length
        chunked = False
        upgrade_value = b""
        if uconn.special:
            for kind, value in uconn.special:
                if kind == H_TE:
                    chunked = True
                elif kind == H_UPGRADE:
                    upgrade_value = value
                elif (
                    kind == H_CONNECTION
                    and value != b"keep-alive"  # the usual one, compared before hashing
                    and value not in _PLAIN_CONNECTION
                ):
                    named = {t.strip().lower() for t in value.split(b",")}
                    named -= {b"close", b"keep-alive", b"upgrade", b""}
                    if named:
                        lines = _without(lines, named)
        # the head is joined once from its parts: status line, our Server and Date, the
        # upstream's lines, add_header lines, framing and Connection
        parts = [status_line(status), SERVER_LINE, self.state.date.current]
        parts += lines
        uconn.clear_head()
        if route.add_success or route.add_always:
            adds = route.add_success if status in ADD_HEADER_STATUS else route.add_always
            if adds:
                parts.append(_added(adds, req))
        keep = self._client_keeps_alive(req)
        no_body = status == 204 or status == 304 or status == 101 or req.method == b"HEAD"
        if status == 101:
            parts.append(b"Upgrade: " + upgrade_value + b"\r\nConnection: upgrade\r\n\r\n")
        elif no_body or (length >= 0 and not chunked):
            parts.append(
                b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n"
            )
        elif req.version == "1.1":
            self.resp_chunked = True
            parts.append(
                b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
                if keep
                else b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
            )
        else:
            keep = False
            parts.append(b"Connection: close\r\n\r\n")
        self.resp_close = not keep
        self.resp_eof_body = not no_body and length < 0 and not chunked
        self.out.append(b"".join(parts))
        if req.method == b"HEAD" and status != 101:
            # httptools cannot be told a HEAD response has no body: finish it here.
            self.upstream_keep = uconn.keeps_alive()
            uconn.reset_parser()
            self.upstream_complete(uconn)

    def _client_keeps_alive(self, req: Request) -> bool:
        """Keep the client connection after this response? (keepalive_requests/_timeout)"""
        route = req.route
        return (
            req.keep_alive
            and self.body_done
            and route is not None
            and self.conn_requests < route.keepalive_requests
            and not self.state.shutting_down
        )

    def _tunnel_active(self) -> None:
        """Bytes moved through a tunnel: nginx times upgraded connections with
        proxy_read_timeout / proxy_send_timeout (ngx_http_upstream_process_upgraded)."""
        if self.write_paused:
            return  # the client is behind: its send timer runs (pause_writing)
        route = self.route
        self.deadline = self.state.now() + (route.read_timeout if route is not None else 60.0)

    def upstream_body(self, data: bytes) -> None:
        if self.phase == TUNNEL:
            if self.transport is not None:
                self.transport.write(data)
                self._tunnel_active()
            return
        if not data:
            return
        self.resp_bytes += len(data)
        if self.resp_chunked:
            self.out.append(b"%x\r\n%b\r\n" % (len(data), data))
        else:
            self.out.append(data)

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
        self._write_out()
        if self.phase == UPSTREAM and self.route is not None and not self.write_paused:
            self.deadline = self.state.now() + self.route.read_timeout

    def upstream_complete(self, uconn: UpstreamConnection) -> None:
        req = self.req
        if req is None or self.uconn is not uconn or not self.resp_started:
            return  # an interim 1xx ended; the real response follows
        if self.resp_status == 101:
            return  # a 101 goes on as a tunnel: upstream_upgraded follows
        if self.resp_chunked:
            self.out.append(b"0\r\n\r\n")
        self._write_out()
        upstream = self.upstream
        assert upstream is not None
        now = self.state.now()
        peer = self.peer
        if peer is not None:
            self.peer = None
            upstream.balancer.free(self.attempt, peer, OK, now)  # type: ignore[arg-type]
        self.uconn = None
        uconn.exchange = None
        reusable = self.upstream_keep if req.method == b"HEAD" else uconn.keeps_alive()
        if upstream.keepalive and self.body_done and reusable and not self.file_sending:
            if self.write_paused and uconn.transport is not None:
                uconn.transport.resume_reading()  # paused for this client, not for the next
            upstream.idle.put(uconn, now)
        else:
            uconn.close()
        self._finish(self.resp_status, self.resp_close, now)

    def upstream_lost(self, uconn: UpstreamConnection, exc: Exception | None) -> None:
        if self.uconn is not uconn or self.req is None:
            return
        self.uconn = None
        if self.resp_started:
            if self.resp_eof_body and exc is None:
                # A close-delimited body ends with the connection.
                if self.resp_chunked:
                    self.out.append(b"0\r\n\r\n")
                self.upstream_data_flushed()
                self._release_peer(Outcome.OK)
                self._finish(self.resp_status, self.resp_close)
                return
            # Mid-response failure: nothing can be retried; cut the client off like nginx.
            self._release_peer(Outcome.FAILED)
            self.upstream_data_flushed()
            self._log(self.resp_status)
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
        if self.resp_status != 101:
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
        # the route of a request still being sent upstream, else None
        route = self.route if self.phase == UPSTREAM and not self.resp_started else None
        if paused:
            self._pause_reading()
            if route is not None:
                # We stopped reading the client: proxy_send_timeout counts, not its pace.
                self._arm_upstream_send_timer(self.state.now(), route)
            return
        if self.upstream_mark >= 0:
            self.upstream_mark = -1
            if route is not None:
                self.deadline = self.state.now() + (
                    route.read_timeout if self.body_done else route.body_timeout
                )
        if self.file_sending and route is not None:
            self._send_body_file()  # may pause again, and arm the send timer again
        if not self.body_done or self.phase == TUNNEL:
            self._resume_reading()

    def _arm_upstream_send_timer(self, now: float, route: Route) -> None:
        uconn = self.uconn
        transport = uconn.transport if uconn is not None else None
        self.upstream_mark = transport.get_write_buffer_size() if transport is not None else 0
        self.deadline = now + route.send_timeout

    def _upstream_send_timed_out(self, now: float) -> bool:
        """nginx's proxy_send_timeout: the upstream took no request byte for that long."""
        uconn = self.uconn
        route = self.route
        transport = uconn.transport if uconn is not None else None
        if transport is None or route is None or self.resp_started:
            return False
        size = transport.get_write_buffer_size()
        if 0 < size < self.upstream_mark:
            self.upstream_mark = size  # it took some: wait again
            self.deadline = now + route.send_timeout
            return True
        self.upstream_mark = -1
        self._upstream_failed("timeout", "upstream timed out while sending request to upstream")
        return True

    # -- failures and retries ---------------------------------------------------------
    def _may_retry(self, spare: int = 0) -> bool:
        """nginx's retry test; ``spare`` 1 for a status retry, which needs tries > 1."""
        req = self.req
        route = self.route
        attempt = self.attempt
        if req is None or route is None or attempt is None or attempt.tries_left <= spare:
            return False
        if route.next_timeout and self.state.now() - self.first_try >= route.next_timeout:
            return False
        if self.request_sent and not self.body_retained:
            return False
        return not (
            self.request_sent
            and req.method in NON_IDEMPOTENT
            and "non_idempotent" not in route.next_upstream
        )

    def _upstream_failed(self, kind: str, message: str) -> None:
        """An attempt failed before any response byte reached the client."""
        uconn = self.uconn
        if uconn is not None:
            uconn.exchange = None
            uconn.abort()
            self.uconn = None
        self._release_peer(Outcome.FAILED)
        if self.cached and kind == "error" and self.attempt is not None:
            # An error on a reused keep-alive connection (the server may have closed it
            # just now) gives the try back: nginx's ngx_http_upstream_next does
            # "if (u->peer.cached && ft_type == NGX_HTTP_UPSTREAM_FT_ERROR) tries++".
            self.attempt.tries_left += 1
        self.cached = False
        if self.peer is not None or self.upstream is not None:
            self.state.log_error("error", f"{message} while proxying to upstream")
        route = self.route
        if route is not None and kind in route.next_upstream and self._may_retry():
            self._retry_or_fail(kind)
        else:
            self._respond_error(504 if kind == "timeout" else 502, close=False)

    def _retry_or_fail(self, kind: str) -> None:
        self.request_sent = False
        self.deadline = 0.0
        if self.attempt is not None and self.attempt.tries_left > 0:
            self._try_next()
            return
        self._respond_error(504 if kind in ("timeout", "http_504") else 502, close=False)

    def _release_peer(self, outcome: Outcome) -> None:
        peer = self.peer
        if peer is not None and self.upstream is not None and self.attempt is not None:
            self.peer = None
            self.upstream.balancer.free(self.attempt, peer, outcome, self.state.now())

    def _abort_upstream(self) -> None:
        task = self.connect_task
        if task is not None:
            self.connect_task = None
            task.cancel()
        uconn = self.uconn
        if uconn is not None:
            self.uconn = None
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
            self._log(self.resp_status)
            self.req = None
        if self.phase == TUNNEL:
            self.state.tunnels -= 1
        self.phase = CLOSING
        transport.abort()  # a close would wait for bytes that will never leave
        return True

    def expire(self, now: float) -> None:
        """The deadline passed; what that means depends on the phase."""
        phase = self.phase
        self.deadline = 0.0
        if phase == CLOSING:
            self._send_timed_out(now)  # a close still waiting for its bytes to leave
            return
        if self.write_paused and self._send_timed_out(now):
            return
        if (
            phase == UPSTREAM
            and self.upstream_mark >= 0
            and self.req is not None
            and self._upstream_send_timed_out(now)
        ):
            return
        if phase == CONNECT and self.req is not None and self.connect_task is not None:
            task = self.connect_task
            self.connect_task = None
            task.cancel()
            self._upstream_failed("timeout", "upstream timed out (connect)")
        elif phase == UPSTREAM and self.req is not None and not self.resp_started:
            self._upstream_failed("timeout", "upstream timed out while reading response header")
        elif phase == UPSTREAM and self.req is not None:
            self._abort_upstream()
            self._log(self.resp_status)
            self.truncated = True
            self._close()
        elif phase == TUNNEL:
            uconn = self.uconn
            if uconn is not None:
                self.uconn = None
                uconn.close()
            self._close()
        elif phase == BODY and self.req is not None:
            self._respond_error(408, close=True)  # client_body_timeout while buffering
        else:
            self._close()

    # -- responses of our own ----------------------------------------------------------
    def _respond_return(self, req: Request, route: Route) -> None:
        code = route.ret_code
        if code == 444:
            self._log(444)
            self._close()
            return
        text = route.ret_text(req) if route.ret_text is not None else None
        if code in REDIRECTS and text is not None:
            if text.startswith("/"):
                port = self.local_port
                default = 443 if req.scheme == "https" else 80
                authority = req.host or req.server_name
                if port != default:
                    authority += f":{port}"  # port_in_redirect on
                text = f"{req.scheme}://{authority}{text}"
            extra = b"Location: " + text.encode("latin-1") + b"\r\n"
            self._respond(code, error_page(code), b"text/html", extra, close=False)
        elif text is not None:
            self._respond(code, text.encode("latin-1"), b"text/plain", b"", False)
        else:
            self._respond(code, error_page(code) if code >= 300 else b"", b"text/html", b"", False)

    def _respond_error(self, code: int, close: bool) -> None:
        self._abort_upstream()
        if self.resp_started:
            self._close()
            return
        self._respond(code, error_page(code), b"text/html", b"", close)

    def _respond(self, code: int, body: bytes, ctype: bytes, extra: bytes, close: bool) -> None:
        req = self.req
        route = self.route
        if req is None or self.transport is None:
            return
        if not self.body_done or self.upgrading:
            close = True  # an unread body would be taken for the next request
        keep = not close and self._client_keeps_alive(req)
        parts = [status_line(code), SERVER_LINE, self.state.date.current]
        if body or code not in NO_BODY_STATUS:
            parts.append(b"Content-Type: " + ctype + b"\r\nContent-Length: ")
            parts.append(str(len(body)).encode() + b"\r\n")
        parts.append(extra)
        if route is not None:
            adds = route.add_success if code in ADD_HEADER_STATUS else route.add_always
            if adds:
                parts.append(_added(adds, req))
        parts.append(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
        if req.method != b"HEAD":
            parts.append(body)
        self.transport.write(b"".join(parts))
        self.resp_started = True
        self.resp_bytes = len(body)
        self._finish(code, not keep)

    def _bad_request(self, code: int) -> None:
        """Malformed input: answer ``code`` and close; nothing more is forwarded."""
        self._abort_upstream()
        transport = self.transport
        if transport is None:
            return
        if not self.resp_started:
            body = error_page(code)
            transport.write(
                status_line(400 if code == 494 else code)  # nginx sends its 494 as 400
                + SERVER_LINE
                + self.state.date.current
                + b"Content-Type: text/html\r\nContent-Length: "
                + str(len(body)).encode()
                + b"\r\nConnection: close\r\n\r\n"
                + body
            )
        self.state.log_error("info", f"client sent invalid request, answered {code}")
        if self.req is None:
            self.req = self.parsing
        self._log(code)
        self.req = None
        self.body_done = False  # unknown what else is on the way: linger
        self._linger_or_close(None)

    # -- end of a request -------------------------------------------------------------
    def _finish(self, status: int, close: bool, now: float = 0.0) -> None:
        req = self.req
        route = req.route if req is not None else None
        if route is not None and route.log_path is not None:
            self._log(status)
        self.req = None
        self.route = None
        self.upstream = None
        self.attempt = None
        self.resp_started = False
        if self.body_file is not None:
            self._drop_body_file()
        if close or self.transport is None or self.upgrading:
            self._linger_or_close(req)
            return
        if self.eof and not self.pending:
            self._close()
            return
        if self.pending:
            req, body, complete = self.pending.popleft()
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
        self.deadline = (now or self.state.now()) + self.idle_timeout
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

    def _log(self, status: int) -> None:
        req = self.req
        route = req.route if req is not None else None
        if route is not None and route.log_path is not None:
            self.state.access(route.log_path, req, status, self.resp_bytes)

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
        unread = not self.body_done or self.upgrading or (req is None and self.parsing)
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


def _without(flat: list[bytes], names: set[bytes]) -> list[bytes]:
    """Header parts (name, ": ", value, CRLF, ...) minus the headers ``names`` lists."""
    out: list[bytes] = []
    for i in range(0, len(flat), 4):
        if flat[i].lower() not in names:
            out += flat[i : i + 4]
    return out


def _added(ops: tuple[HeaderOp, ...], req: Request) -> bytes:
    """add_header lines; a value that evaluates to "" adds nothing (as in nginx)."""
    out = []
    for op in ops:
        value = op.const if op.const is not None else op.fn(req).encode("latin-1")  # type: ignore[misc]
        if value:
            out.append(op.name + b": " + value + b"\r\n")
    return b"".join(out)


# Request header names as sent -> lowercased, the same object each time: saves a lower()
# per header, and the cached name's hash is computed once for every set and dict it
# meets.  Bounded in entries and in name length, since clients choose the names.
_LOWER: Final[dict[bytes, bytes]] = {}


def _lower(name: bytes) -> bytes:
    lname = name.lower()
    if len(_LOWER) < 4096 and len(name) <= 64:
        _LOWER[name] = lname
    return lname


def _unconnected(data: bytes) -> None:
    raise ConnectionError("not connected")


_PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade"})

_STATUS_MASK: Final = {
    500: "http_500",
    502: "http_502",
    503: "http_503",
    504: "http_504",
    403: "http_403",
    404: "http_404",
    429: "http_429",
}


def _rewritten(req: Request, prefix: str, replace: str) -> bytes:
    """The URI nginx forwards when proxy_pass has a URI part: that part in place of the
    location's prefix of $uri, escaped as nginx escapes it, then $args
    (ngx_http_proxy_create_request)."""
    uri = req.path
    rest = uri[len(prefix) :] if uri.startswith(prefix) else uri
    out = replace + escape_uri(rest)
    if req.args:
        out += "?" + req.args
    return out.encode("latin-1")


def _origin_form(req: Request) -> str:
    """An absolute-form target becomes origin-form (RFC 9112 section 3.2.2); its host is
    the request's $host, whatever the Host header says.  The authority must be what
    nginx's request-line parser takes: a name or an IP literal, an optional port."""
    url = req.url
    scheme, sep, rest = url.partition(b"://")
    if not sep or not scheme.isalpha():
        raise Rejected(400)  # "*", authority-form or garbage: nginx's invalid request
    end = len(rest)
    for stop in (b"/", b"?"):
        found = rest.find(stop)
        if 0 <= found < end:
            end = found
    authority = rest[:end]
    name, colon, port = authority.partition(b":")
    if authority[:1] == b"[":
        close = authority.find(b"]")
        name, colon, port = authority[: close + 1], authority[close + 1 : close + 2], b""
        if close < 0 or not _IP_LITERAL.issuperset(authority[1:close]):
            raise Rejected(400)
        port = authority[close + 2 :]
        if colon not in (b"", b":"):
            raise Rejected(400)
    elif not name or not _HOST_CHARS.issuperset(name):
        raise Rejected(400)
    if port and not port.isdigit():
        raise Rejected(400)
    host = valid_host(name)
    if host is None:
        raise Rejected(400)  # nginx: "client sent invalid host in request line"
    target = rest[end:]
    req.url = target if target[:1] == b"/" else b"/" + target
    return host


_HOST_CHARS: Final = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-")
_IP_LITERAL: Final = frozenset(b"0123456789abcdefABCDEF:.")
