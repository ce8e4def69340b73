"""A proxy on fake transports: a ``ProxyState`` from a real nginx.conf, clients and
upstream connections that are only byte buffers.

``make_proxy`` loads the config with ``nonstop.config.load``, builds the state on the
running loop with a hand-driven clock, and fills every keep-alive upstream's idle pool
with ``UpstreamConnection``s on ``FakeTransport``s, so a request is sent to one of them
and no socket is ever opened.  A test then plays both far ends: it feeds request bytes
to a ``ClientConnection``, reads what was written upstream, feeds the response back to the
``UpstreamConnection`` and reads what reached the client.
"""

from __future__ import annotations

import asyncio
import textwrap
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.support.fake_transport import FakeTransport

from nonstop.config import load
from nonstop.proxy.connection_pool import UpstreamConnection
from nonstop.proxy.protocol import ClientConnection
from nonstop.proxy.server import ProxyState

__all__ = [
    "STREAMING",
    "SWITCH",
    "UPGRADE",
    "WS_LOCATION",
    "WS_MAP",
    "Client",
    "Clock",
    "FakeProxy",
    "NoConnectLoop",
    "Response",
    "Upstream",
    "conf",
    "get",
    "header_values",
    "make_proxy",
    "ok",
    "parse_responses",
    "request_head",
]

LISTEN_PORT = 8080
# a location that streams the request body as it arrives (proxy_request_buffering off)
STREAMING = "proxy_pass http://app; proxy_request_buffering off;"
# a location that passes WebSocket upgrades on (with WS_MAP in the http block), the
# client's request for one, and the upstream's 101
WS_LOCATION = (
    "proxy_pass http://app; proxy_read_timeout 5s;"
    " proxy_set_header Upgrade $http_upgrade;"
    " proxy_set_header Connection $connection_upgrade;"
)
WS_MAP = "map $http_upgrade $connection_upgrade { default upgrade; '' close; }"
SWITCH = b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"


class Clock:
    """The proxy's ``now``: moves only when a test says so."""

    def __init__(self, start: float = 1000.0) -> None:
        self.time = start

    def __call__(self) -> float:
        return self.time

    def advance(self, seconds: float) -> None:
        self.time += seconds


@dataclass
class Upstream:
    """One fake upstream connection: the proxy's protocol object and its transport."""

    address: str
    conn: UpstreamConnection
    transport: FakeTransport

    def take(self) -> bytes:
        """Bytes the proxy wrote to this upstream connection since the last take."""
        return self.transport.take()

    def respond(self, *chunks: bytes) -> None:
        """The upstream server sends ``chunks``, each in its own read."""
        self.transport.feed(*chunks)

    def hang_up(self, exc: Exception | None = None) -> None:
        """The upstream server closes the connection (or it breaks, with ``exc``)."""
        self.transport.lose(exc)

    @property
    def busy(self) -> bool:
        """Holds a request and is still open."""
        return self.conn.receiver is not None and not self.conn.closed


@dataclass
class Client:
    """One client connection to the proxy."""

    conn: ClientConnection
    transport: FakeTransport

    def send(self, *chunks: bytes) -> None:
        self.transport.feed(*chunks)

    def take(self) -> bytes:
        return self.transport.take()

    def responses(self, head_only: bool = False) -> list[Response]:
        return parse_responses(self.transport.take(), head_only=head_only)

    @property
    def closed(self) -> bool:
        """Our side is done: closed, or shut for writing while lingering (nginx's
        lingering close after an error answer with input still unread)."""
        return self.transport.closed or bool(getattr(self.transport, "write_eof_called", False))

    @property
    def reading(self) -> bool:
        return self.transport.reading


class NoConnectLoop:
    """The state's loop, except that a new upstream connection is recorded, never opened.

    Every upstream in these tests has pre-filled idle connections; a request that still
    needs a connect waits in ``connects`` (its task never finishes) so a test can see it.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self.connects: list[str] = []

    def create_task(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Future[Any]:
        self.connects.append(getattr(coro, "__qualname__", repr(coro)))
        coro.close()
        return self._loop.create_future()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._loop, name)


@dataclass
class FakeProxy:
    state: ProxyState
    clock: Clock
    loop: NoConnectLoop
    upstreams: list[Upstream] = field(default_factory=list)

    @property
    def connects(self) -> list[str]:
        """Connects the proxy wanted to open (none is opened)."""
        return self.loop.connects

    def client(self, addr: str = "10.0.0.7", port: int = LISTEN_PORT) -> Client:
        transport = FakeTransport(peername=(addr, 51000), sockname=("127.0.0.1", port))
        conn = ClientConnection(self.state)
        transport.connect(conn)
        return Client(conn, transport)

    def busy(self) -> list[Upstream]:
        """Upstream connections that hold a request now."""
        return [u for u in self.upstreams if u.busy]

    def active(self) -> Upstream:
        """The one upstream connection that holds a request now."""
        busy = self.busy()
        assert len(busy) == 1, (
            f"expected one busy upstream connection, got {len(busy)}; "
            f"connects wanted: {len(self.connects)}"
        )
        return busy[0]

    def used(self) -> list[Upstream]:
        """Upstream connections that were written to, in no particular order."""
        return [u for u in self.upstreams if u.transport.writes]

    def written_upstream(self) -> bytes:
        """Everything written to every upstream connection."""
        return b"".join(u.transport.written() for u in self.upstreams)

    def tick(self) -> None:
        """What the server's tick does: expire every connection whose deadline passed
        (a timer's turn of the loop, which then sends what it held)."""
        now = self.clock()
        for conn in list(self.state.connections):
            if conn.deadline and conn.deadline <= now:
                conn.expire(now)
        self.state.outbox.flush()

    def peers(self, upstream: str = "app") -> dict[str, tuple[int, int]]:
        """address -> (conns, fails) of every peer of ``upstream``."""
        balancer = self.state.upstreams[upstream].balancer
        return {p.address: (p.conns, p.fails) for p in (*balancer.peers, *balancer.backups)}

    def idle_count(self, upstream: str = "app") -> int:
        return self.state.upstreams[upstream].idle.count


def make_proxy(
    tmp_path: Path,
    http_block: str,
    idle_per_server: int = 4,
    top: str = "",
    bystander: bool = True,
) -> FakeProxy:
    """A proxy state for ``http { http_block }`` on the running loop, pools pre-filled.

    ``bystander``: one more client connection stays open, doing nothing: with more than
    one, writes are held to the end of the loop's turn (proxy/outbox.py), as in a worker
    under load -- the path these tests then take."""
    path = tmp_path / "nginx.conf"
    text = f"{top}\nevents {{}}\nhttp {{\n{textwrap.dedent(http_block)}\n}}\n"
    path.write_text(text)
    config = load(str(path), resolver=_no_dns)
    loop = NoConnectLoop(asyncio.get_running_loop())
    clock = Clock()
    state = ProxyState(loop, config)  # type: ignore[arg-type]
    state.now = clock
    proxy = FakeProxy(state, clock, loop)
    for backend in state.upstreams.values():
        if not backend.keepalive:
            continue
        for peer in (*backend.balancer.peers, *backend.balancer.backups):
            for _ in range(idle_per_server):
                conn = UpstreamConnection(peer.address, state.outbox)
                transport = FakeTransport(peername=(peer.host, peer.port), sockname=None)
                transport.connect(conn)
                backend.idle.put(conn, clock())
                proxy.upstreams.append(Upstream(peer.address, conn, transport))
    if bystander:
        FakeTransport(peername=("10.0.0.99", 51999), sockname=("127.0.0.1", LISTEN_PORT)).connect(
            ClientConnection(state)
        )
    return proxy


def _no_dns(host: str, port: int) -> list[str]:
    raise OSError(f"no DNS in protocol tests: {host}")


@dataclass
class Response:
    status: int
    reason: str
    version: str
    headers: list[tuple[str, str]]
    body: bytes
    chunked: bool

    def header(self, name: str) -> str | None:
        lname = name.lower()
        for key, value in self.headers:
            if key.lower() == lname:
                return value
        return None

    def all(self, name: str) -> list[str]:
        lname = name.lower()
        return [value for key, value in self.headers if key.lower() == lname]


def parse_responses(data: bytes, head_only: bool = False) -> list[Response]:
    """Split what a client received into responses; a body with no length runs to the end.

    ``head_only``: the responses answer HEAD requests, so none has a body.
    """
    out: list[Response] = []
    while data:
        head, sep, data = data.partition(b"\r\n\r\n")
        assert sep, f"incomplete response head: {head!r}"
        lines = head.decode("latin-1").split("\r\n")
        version, code, *rest = lines[0].split(" ", 2)
        headers = [tuple(line.split(": ", 1)) for line in lines[1:]]
        resp = Response(int(code), rest[0] if rest else "", version, headers, b"", False)  # type: ignore[arg-type]
        out.append(resp)
        if head_only or resp.status in (100, 101, 204, 304):
            continue
        length = resp.header("Content-Length")
        if resp.header("Transfer-Encoding") == "chunked":
            resp.chunked = True
            resp.body, data = _dechunk(data)
        elif length is not None:
            resp.body, data = data[: int(length)], data[int(length) :]
        else:
            resp.body, data = data, b""
    return out


def _dechunk(data: bytes) -> tuple[bytes, bytes]:
    body = b""
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            _, _, data = data.partition(b"\r\n")  # no trailers in these tests
            return body, data
        body += data[:size]
        assert data[size : size + 2] == b"\r\n", "chunk not followed by CRLF"
        data = data[size + 2 :]


def conf(
    location: str = "proxy_pass http://app;",
    servers: int = 2,
    upstream: str = "",
    server: str = "",
    extra_locations: str = "",
    extra_http: str = "",
) -> str:
    """An http block: upstream ``app`` on 127.0.0.1:9001.., one server on port 8080."""
    lines = "\n".join(f"        server 127.0.0.1:{9001 + i};" for i in range(servers))
    return f"""
    {extra_http}
    upstream app {{
{lines}
        keepalive 16;
        {upstream}
    }}
    server {{
        listen {LISTEN_PORT};
        server_name example.test;
        {server}
        location / {{ {location} }}
        {extra_locations}
    }}
    """


def get(path: str = "/", *headers: str, method: str = "GET", version: str = "1.1") -> bytes:
    """A request head with Host: example.test and ``headers`` ("Name: value")."""
    lines = [f"{method} {path} HTTP/{version}", "Host: example.test", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


UPGRADE = get("/ws", "Upgrade: websocket", "Connection: Upgrade")


def ok(body: bytes = b"hello", *headers: str, status: str = "200 OK") -> bytes:
    """An upstream response with a Content-Length body."""
    lines = [f"HTTP/1.1 {status}", f"Content-Length: {len(body)}", *headers]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body


def request_head(raw: bytes) -> tuple[str, list[tuple[str, str]], bytes]:
    """Split what an upstream received into (request line, headers, rest)."""
    head, _, rest = raw.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = [(k, v) for k, _, v in (line.partition(": ") for line in lines[1:])]
    return lines[0], headers, rest


def header_values(headers: list[tuple[str, str]], name: str) -> list[str]:
    lname = name.lower()
    return [v for k, v in headers if k.lower() == lname]
