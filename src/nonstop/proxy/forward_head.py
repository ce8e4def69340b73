"""The forwarding head: the request line and headers the proxy sends upstream.

nginx's ``ngx_http_proxy_create_request``: the client's headers minus the hop-by-hop ones
and those the route drops (``proxy_set_header`` replaces them), the route's computed and
constant headers, then the framing of the body as it will be sent.  Pure: the head comes
out as bytes, ``ClientConnection`` writes it.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from nonstop.proxy.request import Request
from nonstop.proxy.uri import escape_uri

if TYPE_CHECKING:
    from nonstop.proxy.router import Route

__all__ = ["PLAIN_CONNECTION", "connection_names", "forward_head", "without"]

# Connection header values that name no other header to drop.
PLAIN_CONNECTION: Final = frozenset({b"keep-alive", b"Keep-Alive", b"close", b"Close", b"upgrade"})


def forward_head(req: Request, route: Route, chunked: bool, upstream_keepalive: bool) -> bytes:
    """The head to send upstream; ``chunked``: the body goes on chunked, as it came."""
    url = req.url if req.forward is None else req.forward  # a rewritten URI
    if route.uri_replace is not None and req.forward is None:
        url = _rewritten(req, route.uri_prefix, route.uri_replace)
    parts = [req.method, b" ", url, b" HTTP/1.1\r\n"]
    drop = route.drop
    named: set[bytes] | None = None
    for lname, name, value in req.headers:
        if lname in drop:
            if lname == b"connection" and value not in PLAIN_CONNECTION:
                named = connection_names(value)
            continue
        parts += (name, b": ", value, b"\r\n")
    if named:
        parts = parts[:4] + without(parts[4:], named)
    for op in route.ops:
        computed = op.fn(req)  # type: ignore[misc]
        if computed:
            parts.append(op.name + b": " + computed.encode("latin-1") + b"\r\n")
    if route.sends_request_id:
        parts += (b"X-Request-ID: ", req.id_bytes(), b"\r\n")
    parts.append(route.const_head)
    if not route.keeps_connection_header and not upstream_keepalive:
        parts.append(b"Connection: close\r\n")
    if chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n\r\n")
    elif req.content_length >= 0:
        parts.append(b"Content-Length: %d\r\n\r\n" % req.content_length)
    else:
        parts.append(b"\r\n")
    return b"".join(parts)


def connection_names(value: bytes) -> set[bytes]:
    """The header names a Connection header value lists, lowercased: hop-by-hop
    headers that are not passed on (RFC 9110 section 7.6.1)."""
    named = {t.strip().lower() for t in value.split(b",")}
    named -= {b"close", b"keep-alive", b"upgrade", b""}
    return named


def without(flat: list[bytes], names: set[bytes]) -> list[bytes]:
    """Header parts (name, ": ", value, CRLF, ...) minus the headers ``names`` lists."""
    out: list[bytes] = []
    for i in range(0, len(flat), 4):
        if flat[i].lower() not in names:
            out += flat[i : i + 4]
    return out


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
