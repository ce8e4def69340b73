"""Request-head rules: what a request head may hold, and what it routes to.

Pure decisions on a ``Request`` as the parser fills it: header line limits, the headers
that change how a request is framed or forwarded, method and version checks, the lone-LF
and HTTP/0.9 cases nginx answers, and the routing of the finished head (split the target,
validate the host, find the server and location).  A refusal raises ``Rejected`` with the
status nginx answers it with; ``ClientConnection`` turns that into the answer.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from nonstop.proxy.request import Request
from nonstop.proxy.uri import needs_parse, parse_target, valid_host

if TYPE_CHECKING:
    from nonstop.proxy.router import VirtualHosts

__all__ = [
    "MAX_HEAD_BYTES",
    "MAX_LINE",
    "SPECIAL_REQUEST_HEADERS",
    "Rejected",
    "check_head",
    "header_name",
    "mended",
    "route_request",
    "simple_request",
    "special_header",
]


class Rejected(Exception):
    """A request refused while parsing, with the status nginx answers it with."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


MAX_LINE: Final = 8192  # large_client_header_buffers 4 8k: one line (request line or header)
MAX_HEAD_BYTES: Final = 4 * 8192 + 1024  # the whole head, with some slack for line ends
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
# "?" as an int: ``b"?" in data`` first tries the operand as an int and formats a
# TypeError, which costs more than the search
QUERY: Final = ord("?")
HASH: Final = ord("#")
ROUTE_CACHE: Final = 4096  # (Host, path) pairs remembered per listen address

# Request header names as sent -> lowercased, the same object each time: saves a lower()
# per header, and the cached name's hash is computed once for every set and dict it
# meets.  Bounded in entries and in name length, since clients choose the names.
_LOWER: Final[dict[bytes, bytes]] = {}
# Names clients send most, as they spell them, by length: found by comparing bytes, where
# the cache must hash the name first (~400 instructions a header).
_USUAL: Final = (
    b"Host", b"Accept", b"Cookie", b"User-Agent", b"Connection", b"Referer",
    b"Content-Type", b"Content-Length", b"Accept-Encoding", b"Accept-Language",
    b"Authorization", b"Cache-Control", b"X-Forwarded-For", b"If-None-Match",
)  # fmt: skip
_USUAL_NAMES: Final = tuple(tuple(u for u in _USUAL if len(u) == n) for n in range(32))
_USUAL_LOWER: Final = tuple(tuple(u.lower() for u in names) for names in _USUAL_NAMES)


def header_name(name: bytes) -> bytes:
    """``name`` lowercased, from the cache when it was seen before."""
    size = len(name)
    if size < 32:
        usual = _USUAL_NAMES[size]
        for i in range(len(usual)):
            if name == usual[i]:
                return _USUAL_LOWER[size][i]
    lname = _LOWER.get(name)
    if lname is None:
        lname = name.lower()
        if len(_LOWER) < 4096 and len(name) <= 64:
            _LOWER[name] = lname
    return lname


def special_header(req: Request, lname: bytes, value: bytes) -> None:
    """Record one of SPECIAL_REQUEST_HEADERS on ``req``, refusing what nginx refuses."""
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


def check_head(
    req: Request, method: bytes, keep_alive: bool, version_of: Callable[[], str]
) -> None:
    """The rules of a whole head: method, keep-alive and version (set on ``req``)."""
    req.method = method
    if method == b"TRACE" or method == b"CONNECT":
        raise Rejected(405)  # nginx: "client sent TRACE method" (and CONNECT)
    req.keep_alive = keep_alive
    # llhttp accepts the versions 0.9, 1.0, 1.1 and 2.0, and without a Connection (or
    # Proxy-Connection) header keeps only 1.1 alive: then the version is the default
    # "1.1" without asking the parser, whose version string costs more than the rest
    # of this check (tests/unit/proxy pins this property of llhttp).
    if not keep_alive or req.connection_header:
        version = req.version = version_of()
        if version != "1.1":
            if version[0] != "1":
                raise Rejected(505)
            if req.chunked:
                raise Rejected(400)  # nginx: Transfer-Encoding in an HTTP/1.0 request


def mended(req: Request | None, data: bytes, exc: Exception) -> bytes | None:
    """A request line that ends in a lone LF, with its CR, when it is the first line
    of ``data``; else None.  nginx takes a lone LF as a line end (RFC 9112 section
    2.2); llhttp takes it after the version only with the flag that would also take
    a lone CR for one, so the line is mended and the read parsed again."""
    if req is None or req.headers or exc.args[:1] != ("Expected CRLF after version",):
        return None
    end = data.find(b"\n")
    line = data[:end]
    if end < 0 or b"\r" in line or req.url not in line:
        return None
    return line + b"\r" + data[end:]


def simple_request(req: Request | None, data: bytes, method: bytes) -> bool:
    """The read ends an HTTP/0.9 request line ("GET /"), which has no headers to
    wait for: nginx answers it at once."""
    if req is None or req.headers or data[-1:] != b"\n":
        return False
    start = data.rfind(b"\n", 0, len(data) - 1) + 1
    return data[start:].strip() == method + b" " + req.url


def route_request(req: Request, vhosts: VirtualHosts) -> None:
    """Split the URL, find the host, route the request.

    The result depends only on the Host header and the path, so it is cached per
    listen address; most traffic repeats a few of those pairs.  Routing is on
    nginx's $uri (``uri.parse_target``); a clean origin-form path is its own $uri.
    """
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
    # one bytes key: a path holds no space, so "path host" cannot be another pair's key,
    # and a bytes key costs a third of a (host, path) tuple's hashing and comparing
    host_header = req.http_host
    key = path if host_header is None else path + b" " + host_header
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
        if len(vhosts.cache) >= ROUTE_CACHE:
            vhosts.cache.clear()
        vhosts.cache[key] = (req.path, req.host, req.server_name, req.route)


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
