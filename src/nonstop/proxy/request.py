"""One client request as the proxy sees it: parsed head, routing result, variables.

A plain slotted object filled by the parser callbacks of ``ClientConnection``; the
variable getters in ``variables.py`` read from it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from nonstop.proxy.router import Route

__all__ = ["Request"]


class Request:
    __slots__ = (
        "args",
        "body_received",
        "chunked",
        "content_length",
        "expect_continue",
        "headers",
        "host",
        "http_host",
        "keep_alive",
        "method",
        "path",
        "proxy_host",
        "remote_addr",
        "remote_bytes",
        "route",
        "scheme",
        "server_name",
        "server_port",
        "start",
        "upgrade",
        "url",
        "vars",
        "version",
        "xff",
    )

    def __init__(
        self, remote_addr: str, remote_bytes: bytes, scheme: str, server_port: int, start: float
    ) -> None:
        self.remote_addr = remote_addr
        self.remote_bytes = remote_bytes
        self.scheme = scheme
        self.server_port = server_port
        self.start = start
        self.url = b""
        self.method = b""
        self.version = "1.1"
        # (lowercased name, name as sent, value) in arrival order
        self.headers: list[tuple[bytes, bytes, bytes]] = []
        self.http_host: bytes | None = None
        self.host = ""
        self.server_name = ""
        self.keep_alive = True
        self.content_length = -1
        self.chunked = False
        self.expect_continue = False
        self.upgrade: bytes | None = None
        self.xff: list[bytes] | None = None
        self.path = ""
        self.args = ""
        self.proxy_host = ""
        self.route: Route | None = None
        self.vars: dict[str, str] | None = None
        self.body_received = 0

    def header(self, lname: bytes) -> bytes | None:
        """The first value of a header, by lowercased name."""
        for name, _, value in self.headers:
            if name == lname:
                return value
        return None

    @property
    def request_line(self) -> str:
        return f"{self.method.decode('latin-1')} {self.url.decode('latin-1')} HTTP/{self.version}"
