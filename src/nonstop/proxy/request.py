"""One client request as the proxy sees it: parsed head, routing result, variables.

Filled by the parser callbacks of ``ClientConnection``; the variable getters in
``variables.py`` read from it.  Deliberately without ``__slots__``: most fields keep
their class-level default for most requests, so a new request costs only the few
assignments that differ (this object is created once per request on the hot path).
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any, Final

if TYPE_CHECKING:
    from nonstop.proxy.balancers.peers import Peer
    from nonstop.proxy.router import Route

__all__ = ["Request"]

_IDS_AT_ONCE: Final = 256


class _Ids:
    """$request_id values: 16 random bytes each, in hex, drawn from the system's random
    source 256 at a time (a system call and a hex per request would cost the hot path
    more than the rest of a header)."""

    __slots__ = ("hex", "next")

    def __init__(self) -> None:
        self.hex = b""
        self.next = _IDS_AT_ONCE * 32

    def drop(self) -> None:
        """Draw afresh: a forked process must not hand out its parent's ids again."""
        self.hex = b""
        self.next = _IDS_AT_ONCE * 32

    def take(self) -> bytes:
        at = self.next
        if at >= _IDS_AT_ONCE * 32:
            self.hex = os.urandom(_IDS_AT_ONCE * 16).hex().encode()
            at = 0
        self.next = at + 32
        return self.hex[at : at + 32]


_ids: Final = _Ids()
os.register_at_fork(after_in_child=_ids.drop)


class Request:
    # connection-level facts, shared by every request of a connection
    conn: Any  # the ClientConnection: remote_addr, remote_bytes, scheme, local_port, ...
    # request line and headers
    url: bytes = b""
    method: bytes = b""
    version: str = "1.1"
    http_host: bytes | None = None
    keep_alive: bool = True
    connection_header: bool = False  # a Connection or Proxy-Connection header came
    content_length: int = -1
    chunked: bool = False
    expect_continue: bool = False
    upgrade: bytes | None = None
    xff: list[bytes] | None = None
    # derived
    host: str = ""
    server_name: str = ""
    path: str = ""
    args: str = ""
    proxy_host: str = ""
    route: Route | None = None
    vars: dict[str, str] | None = None
    body_received: int = 0
    # the rewrite module (proxy/rewrite.py): $1..$9, an answer it chose, what it changed
    captures: list[str] | None = None
    ret_code: int = 0
    ret_text: str | None = None
    uri_changed: bool = False  # search the locations again
    rewritten: bool = False  # $uri or $args differ from the request line's
    valid_location: bool = True  # False after "rewrite ... break": proxy_pass's URI is ignored
    forward: bytes | None = None  # the target to send upstream, when not the request's
    # error_page (proxy/error_page.py): the status the client gets, and that one was used
    err_status: int = 0
    error_paged: bool = False
    internal: bool = False  # an internal redirect: "internal" locations may take it
    # limit_req and limit_conn count a request once (proxy/guard.py); how long it waits
    limit_req_done: bool = False
    limit_conn_done: bool = False
    limit_delay: float = 0.0
    # timing and the server that answered, for the access log and the counters
    start: float = 0.0  # the loop's clock when the request line began
    peer: Peer | None = None  # the last server tried
    upstream_start: float = 0.0  # when the last try began
    rid: bytes = b""  # $request_id, made when first asked for (``id_bytes``)
    # for the log formats (proxy/logformat.py): the response head as written (a
    # reference, no copy) and the failed tries before the last one
    sent_head: bytes = b""
    log_status: int = 0  # $status, set when a log line or its if= is evaluated
    tries: list[tuple[str, str, str]] | None = None

    def __init__(self, conn: Any, url: bytes) -> None:
        self.conn = conn
        self.url = url
        # (lowercased name, name as sent, value) in arrival order
        self.headers: list[tuple[bytes, bytes, bytes]] = []

    @property
    def remote_addr(self) -> str:
        return str(self.conn.remote_addr)

    @property
    def remote_bytes(self) -> bytes:
        return bytes(self.conn.remote_bytes)

    @property
    def scheme(self) -> str:
        return str(self.conn.scheme)

    @property
    def server_port(self) -> int:
        return int(self.conn.local_port)

    def id_bytes(self) -> bytes:
        """nginx's $request_id: 16 random bytes in hex, one value per request."""
        rid = self.rid
        if not rid:
            rid = self.rid = _ids.take()
        return rid

    @property
    def request_id(self) -> str:
        return self.id_bytes().decode("ascii")

    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header, by lowercased name."""
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None

    @property
    def request_line(self) -> str:
        return f"{self.method.decode('latin-1')} {self.url.decode('latin-1')} HTTP/{self.version}"
