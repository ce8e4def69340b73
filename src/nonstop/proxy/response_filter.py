"""What a location does to a response head before it leaves: the one place the proxy and
the file server call for proxy_redirect, proxy_cookie_path, proxy_cookie_domain
(proxy/proxy_redirect.py) and gzip (proxy/gzip.py).

A route has ``filters`` only when its location has one of them (proxy_redirect's default
included), and the protocol calls ``filter_head`` only for gzip or when the upstream sent
a header the rules may rewrite (``UpstreamConnection.rewritable``), so a response without
Location, Refresh or Set-Cookie costs an attribute test or two.  ``filter_head`` edits the parsed
upstream head in place and returns the compressor the body then goes through, if any;
``file_head`` does the same for a file the server sends.
"""

from __future__ import annotations

import time
from typing import Final

from nonstop.config.model import GzipSpec, LocationSpec
from nonstop.proxy.connection_pool import H_TE, UpstreamConnection
from nonstop.proxy.gzip import Compressor, Gzip, weak_etag
from nonstop.proxy.proxy_redirect import (
    Rule,
    compile_rules,
    rewrite_cookie,
    rewrite_redirect,
    rewrite_refresh,
)
from nonstop.proxy.request import Request
from nonstop.proxy.variables import VariableTable

__all__ = ["Filters", "compile_filters", "file_head", "filter_head"]

# the response headers gzip's decisions read, by lowercased name
_GZIP_HEADERS: Final = frozenset(
    {b"content-type", b"content-encoding", b"expires", b"cache-control", b"last-modified", b"etag"}
)
_CHANGED_BY_GZIP: Final = frozenset({b"content-length", b"accept-ranges", b"etag"})
_ENCODING: Final = [b"Content-Encoding", b": ", b"gzip", b"\r\n"]
_VARY: Final = [b"Vary", b": ", b"Accept-Encoding", b"\r\n"]


class Filters:
    """A location's response filters, compiled."""

    __slots__ = ("cookie_domains", "cookie_paths", "gzip", "redirects", "rewrites")

    def __init__(
        self,
        gzip: Gzip | None,
        redirects: tuple[Rule, ...],
        cookie_paths: tuple[Rule, ...],
        cookie_domains: tuple[Rule, ...],
    ) -> None:
        self.gzip = gzip
        self.redirects = redirects
        self.cookie_paths = cookie_paths
        self.cookie_domains = cookie_domains
        self.rewrites = bool(redirects or cookie_paths or cookie_domains)


def compile_filters(
    spec: LocationSpec | None, gzip: GzipSpec | None, table: VariableTable, where: str
) -> Filters | None:
    """None when the location has none of them (the common case)."""
    redirects = compile_rules(spec.redirects, table, where) if spec is not None else ()
    paths = compile_rules(spec.cookie_paths, table, where) if spec is not None else ()
    domains = compile_rules(spec.cookie_domains, table, where) if spec is not None else ()
    if gzip is None and not (redirects or paths or domains):
        return None
    return Filters(Gzip(gzip) if gzip is not None else None, redirects, paths, domains)


def filter_head(
    filters: Filters, status: int, uconn: UpstreamConnection, req: Request
) -> Compressor | None:
    """Rewrite the upstream's head (``uconn.lines``) for the client; the compressor the
    body must go through when it is sent gzip (None for a HEAD: no body follows)."""
    lines = uconn.lines
    if filters.rewrites and uconn.rewritable:
        uconn.rewritable = False
        _rewrite(filters, lines, req)
    gzip = filters.gzip
    if gzip is None:
        return None
    head = _head_of(lines)
    encoded = bool(head.get(b"content-encoding", b"").strip())
    if not gzip.eligible(status, head.get(b"content-type"), uconn.length, encoded):
        return None
    if gzip.vary:
        lines += _VARY
    if not gzip.client_ok(req, head, time.time()):
        return None
    # the upstream's body ends by its length or its chunks, not by its close
    framed = uconn.length >= 0 or any(kind == H_TE for kind, _ in uconn.special)
    uconn.lines = _gzipped(lines)
    uconn.length = -1
    if req.method == b"HEAD":
        return None
    compressor = gzip.compressor()
    compressor.eof_body = not framed
    return compressor


def file_head(
    gzip: Gzip, req: Request, ctype: bytes, size: int, extra: bytes, status: int = 200
) -> tuple[bytes, bool]:
    """A whole answer's extra header lines as gzip leaves them, and whether it is sent
    gzip: a file (200), or nonstop's own page or ``return`` text (``status``)."""
    flat: list[bytes] = []
    for line in extra.split(b"\r\n"):
        name, sep, value = line.partition(b": ")
        if sep:
            flat += (name, sep, value, b"\r\n")
    if not gzip.eligible(status, ctype, size, False):
        return extra, False
    if gzip.vary:
        flat += _VARY
    if not gzip.client_ok(req, _head_of(flat), time.time()):
        return b"".join(flat), False
    return b"".join(_gzipped(flat)), True


def _head_of(lines: list[bytes]) -> dict[bytes, bytes]:
    head: dict[bytes, bytes] = {}
    for i in range(0, len(lines), 4):
        name = lines[i].lower()
        if name in _GZIP_HEADERS:
            value = lines[i + 2]
            head[name] = head[name] + b", " + value if name in head else value
    return head


def _gzipped(lines: list[bytes]) -> list[bytes]:
    """The head once the body is compressed: no length, no ranges, a weak ETag
    (ngx_http_clear_content_length, _clear_accept_ranges, ngx_http_weak_etag)."""
    out: list[bytes] = []
    for i in range(0, len(lines), 4):
        name = lines[i]
        lower = name.lower()
        if lower in _CHANGED_BY_GZIP:
            if lower != b"etag":
                continue
            weak = weak_etag(lines[i + 2])
            if weak is not None:
                out += (name, b": ", weak, b"\r\n")
            continue
        out += lines[i : i + 4]
    return out + _ENCODING


def _rewrite(filters: Filters, lines: list[bytes], req: Request) -> None:
    for i in range(0, len(lines), 4):
        name = lines[i].lower()
        if name == b"location" and filters.redirects:
            lines[i + 2] = rewrite_redirect(filters.redirects, lines[i + 2], req)
        elif name == b"refresh" and filters.redirects:
            lines[i + 2] = rewrite_refresh(filters.redirects, lines[i + 2], req)
        elif name == b"set-cookie" and (filters.cookie_paths or filters.cookie_domains):
            lines[i + 2] = rewrite_cookie(
                filters.cookie_paths, filters.cookie_domains, lines[i + 2], req
            )
