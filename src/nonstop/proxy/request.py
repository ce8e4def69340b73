"""One client request as the proxy sees it: parsed head, routing result, variables.

Filled by the parser callbacks of ``ClientConnection``; the variable getters in
``variables.py`` read from it.  Deliberately without ``__slots__``: most fields keep
their class-level default for most requests, so a new request costs only the few
assignments that differ (this object is created once per request on the hot path).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from nonstop.proxy.router import Route

__all__ = ["Request"]


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

    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header, by lowercased name."""
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None

    @property
    def request_line(self) -> str:
        return f"{self.method.decode('latin-1')} {self.url.decode('latin-1')} HTTP/{self.version}"
