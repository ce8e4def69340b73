"""The response head and its framing: what the proxy sends the client in front of an
upstream's body.

nginx's header filter for a proxied response: our status line, ``Server`` and ``Date``,
the upstream's headers minus hop-by-hop ones and those a Connection header names,
``add_header`` lines, then how the body is delimited to the client (length as is, chunked
re-framing for HTTP/1.1, or the close of the connection) and whether the connection stays
open.  Pure: the head and the framing come out as values, ``ClientConnection`` acts on them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from nonstop.proxy.charset import for_status, header_lines
from nonstop.proxy.connection_pool import (
    H_CONNECTION,
    H_PASSED,
    H_TE,
    H_UPGRADE,
    UpstreamConnection,
)
from nonstop.proxy.forward_head import PLAIN_CONNECTION, connection_names, without
from nonstop.proxy.request import Request
from nonstop.proxy.responses import SERVER_LINE, status_line

if TYPE_CHECKING:
    from nonstop.proxy.router import HeaderOp, Route

__all__ = ["ADD_HEADER_STATUS", "Framing", "added_headers", "response_head"]

# add_header without "always" applies to these (ngx_http_headers_filter_module.c).
ADD_HEADER_STATUS: Final = frozenset({200, 201, 204, 206, 301, 302, 303, 304, 307, 308})

# (head, body re-framed chunked, connection kept, body ends with the upstream's close)
Framing = tuple[bytes, bool, bool, bool]


def response_head(
    status: int, uconn: UpstreamConnection, req: Request, route: Route, date: bytes, keep: bool
) -> Framing:
    """The head for the response ``uconn`` parsed; ``keep``: the client connection may
    stay open after it.  Clears ``uconn``'s parsed head."""
    lines = uconn.lines
    length = uconn.length
    chunked = False
    upgrade_value = b""
    server = SERVER_LINE
    if uconn.special:
        for kind, value in uconn.special:
            if kind == H_TE:
                chunked = True
            elif kind == H_UPGRADE:
                upgrade_value = value
            elif (
                kind == H_CONNECTION
                and value != b"keep-alive"  # the usual one, compared before hashing
                and value not in PLAIN_CONNECTION
            ):
                named = connection_names(value)
                if named:
                    lines = without(lines, named)
            elif kind == H_PASSED:
                # proxy_pass_header: the upstream's Server or Date replaces ours
                if value == b"server":
                    server = b""
                elif value == b"date":
                    date = b""
    # the head is joined once from its parts: status line, our Server and Date, the
    # upstream's lines, add_header lines, framing and Connection
    if route.hide is not None:
        lines = without(lines, route.hide)  # proxy_hide_header
    final = req.err_status or status  # error_page's status
    charset = for_status(route.charset, final)
    if charset is not None:
        lines = header_lines(lines, charset)  # charset (proxy/charset.py)
    parts = [status_line(final), server, date]
    parts += lines
    uconn.clear_head()
    if route.add_success or route.add_always:
        parts.append(added_headers(route, status, req))
    no_body = status == 204 or status == 304 or status == 101 or req.method == b"HEAD"
    to_chunked = False
    if status == 101:
        parts.append(b"Upgrade: " + upgrade_value + b"\r\nConnection: upgrade\r\n\r\n")
    elif no_body or (length >= 0 and not chunked):
        parts.append(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
    elif req.version == "1.1":
        to_chunked = True
        parts.append(
            b"Transfer-Encoding: chunked\r\nConnection: keep-alive\r\n\r\n"
            if keep
            else b"Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"
        )
    else:
        keep = False
        parts.append(b"Connection: close\r\n\r\n")
    eof_body = not no_body and length < 0 and not chunked
    return b"".join(parts), to_chunked, keep, eof_body


def added_headers(route: Route, status: int, req: Request) -> bytes:
    """The route's add_header lines for a response with ``status``; a value that
    evaluates to "" adds nothing (as in nginx)."""
    if not route.add_success:  # every add_header; add_always holds those marked always
        return b""
    ops: tuple[HeaderOp, ...] = (
        route.add_success if status in ADD_HEADER_STATUS else route.add_always
    )
    out = []
    for op in ops:
        value = op.const if op.const is not None else op.fn(req).encode("latin-1")  # type: ignore[misc]
        if value:
            out.append(op.name + b": " + value + b"\r\n")
    return b"".join(out)
