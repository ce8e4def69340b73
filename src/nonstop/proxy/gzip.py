"""Compression as nginx's gzip filter does it.

``Gzip`` is a location's ``GzipSpec`` compiled.  ``eligible`` is the filter's header test
(ngx_http_gzip_header_filter: status 200, 403 or 404, no Content-Encoding yet, a type in
gzip_types, a known length not below gzip_min_length); a response that passes it gets
``Vary: Accept-Encoding`` under gzip_vary whether or not this client is sent gzip.
``client_ok`` is ngx_http_gzip_ok (ngx_http_core_module.c): the Accept-Encoding token and
its q-value, gzip_disable, gzip_http_version, and for a request that came through a proxy
(a Via header) the gzip_proxied rules on the response's Expires, Cache-Control,
Last-Modified and ETag.  ``Compressor`` streams: zlib's compressobj takes the body as it
comes and only the deflate output leaves, so a large or endless body is never held whole.
Pure but for zlib: the protocol and the file server act on the answers.
"""

from __future__ import annotations

import re
import zlib
from typing import Final

from nonstop.config.model import GzipSpec
from nonstop.config.rewrite import compile_regex
from nonstop.proxy.request import Request

__all__ = ["COMPRESSIBLE_STATUS", "Compressor", "Gzip", "accepts_gzip", "weak_etag"]

# ngx_http_gzip_header_filter compresses only these
COMPRESSIBLE_STATUS: Final = frozenset({200, 403, 404})
_CACHE_BITS: Final = ("no-cache", "no-store", "private")


class Gzip:
    """A location's gzip settings, compiled."""

    __slots__ = (
        "any_type",
        "disable",
        "disable_msie6",
        "level",
        "min_length",
        "min_version",
        "proxied",
        "types",
        "vary",
    )

    def __init__(self, spec: GzipSpec) -> None:
        self.types = frozenset(t.encode("latin-1") for t in spec.types)
        self.any_type = "*" in spec.types
        self.level = spec.comp_level
        self.min_length = spec.min_length
        self.proxied = spec.proxied
        self.vary = spec.vary
        self.disable = tuple(compile_regex(r) for r in spec.disable)
        self.disable_msie6 = spec.disable_msie6
        self.min_version = spec.http_version

    def eligible(self, status: int, ctype: bytes | None, length: int, encoded: bool) -> bool:
        """The response may be compressed (and is varied on Accept-Encoding)."""
        if status not in COMPRESSIBLE_STATUS or encoded:
            return False
        if 0 <= length < self.min_length:
            return False
        if self.any_type:
            return True
        if ctype is None:
            return False
        return ctype.partition(b";")[0].strip().lower() in self.types

    def client_ok(self, req: Request, head: dict[bytes, bytes], now: float) -> bool:
        """ngx_http_gzip_ok: whether this request is sent gzip; ``head``: the response's
        headers by lowercased name (the ones gzip_proxied looks at)."""
        if not accepts_gzip(req.header(b"accept-encoding")):
            return False
        agent = req.header(b"user-agent")
        if self.disable_msie6 and agent is not None and _msie6(agent):
            return False
        if self.min_version == "1.1" and req.version == "1.0":
            return False
        if req.header(b"via") is not None and not self._proxied_ok(req, head, now):
            return False
        if self.disable and agent is not None:
            text = agent.decode("latin-1")
            if any(regex.search(text) for regex in self.disable):
                return False
        return True

    def _proxied_ok(self, req: Request, head: dict[bytes, bytes], now: float) -> bool:
        proxied = self.proxied
        if "off" in proxied:
            return False
        if "any" in proxied:
            return True
        if "auth" in proxied and req.header(b"authorization") is not None:
            return True
        expires = head.get(b"expires")
        if expires is not None:
            if "expired" not in proxied:
                return False
            when = _http_time(expires)
            return when is not None and when < now  # the proxy's Date is our clock
        control = head.get(b"cache-control")
        if control is not None:
            words = {w.strip().lower() for w in control.decode("latin-1").split(",")}
            words = {w.partition("=")[0] for w in words}
            return any(bit in proxied and bit in words for bit in _CACHE_BITS)
        if "no_last_modified" in proxied and b"last-modified" in head:
            return False
        return not ("no_etag" in proxied and b"etag" in head)

    def compressor(self) -> Compressor:
        return Compressor(self.level)


class Compressor:
    """A gzip stream: ``compress`` what comes, ``finish`` once at the end."""

    __slots__ = ("eof_body", "stream")

    def __init__(self, level: int) -> None:
        self.stream = zlib.compressobj(level, zlib.DEFLATED, 31)  # 31: gzip framing
        self.eof_body = False  # the upstream's close ends the body it compresses

    def compress(self, data: bytes) -> bytes:
        return self.stream.compress(data)

    def finish(self) -> bytes:
        return self.stream.flush()


def accepts_gzip(value: bytes | None) -> bool:
    """ngx_http_gzip_accept_encoding: a "gzip" token (at the start or after "," or " "),
    then nothing, "," or ";q=" with a q-value above 0 (q=0 refuses it)."""
    if value is None or len(value) < 4:
        return False
    if value.startswith(b"gzip,"):
        return True
    lower = value.lower()
    start = 0
    while True:
        at = lower.find(b"gzip", start)
        if at < 0:
            return False
        if at == 0 or lower[at - 1 : at] in (b",", b" "):
            break
        start = at + 4
    rest = lower[at + 4 :].lstrip(b" ")
    if not rest or rest.startswith(b","):
        return True
    if not rest.startswith(b";"):
        return False
    rest = rest[1:].lstrip(b" ")
    if not rest:
        return True
    if not rest.startswith(b"q=") or len(rest) < 3:
        return False
    return _quantity(rest[2:]) > 0


_Q: Final = re.compile(rb"([01])(?:\.([0-9]*))?")


def _quantity(raw: bytes) -> int:
    """ngx_http_gzip_quantity: the q-value in thousandths-ish as nginx counts it; 0 for
    anything it cannot read."""
    end = len(raw)
    for sep in (b",", b" "):
        at = raw.find(sep)
        if 0 <= at < end:
            end = at
    found = _Q.fullmatch(raw[:end])
    if found is None:
        return 0
    digits = found.group(2) or b""
    if len(digits) > 3:
        return 0
    q = int(found.group(1)) * 100 + sum(c - 48 for c in digits)  # nginx adds the digits
    return 0 if q > 100 else q


def _msie6(agent: bytes) -> bool:
    """ngx_http_process_user_agent: MSIE 4, 5, or 6 without SV1 (and not Opera)."""
    at = agent.find(b"MSIE ")
    if at < 0 or at + 7 >= len(agent) or b"Opera" in agent:
        return False
    if agent[at + 6 : at + 7] != b".":
        return False
    major = agent[at + 5 : at + 6]
    if major in (b"4", b"5"):
        return True
    return major == b"6" and b"SV1" not in agent[at + 8 :]


def _http_time(value: bytes) -> float | None:
    # imported here: only gzip_proxied's expired/no_last_modified read a date, and
    # email.utils costs every process ~0.7 MiB once imported
    from email.utils import parsedate_to_datetime

    try:
        return parsedate_to_datetime(value.decode("latin-1")).timestamp()
    except (TypeError, ValueError, IndexError):
        return None


def weak_etag(value: bytes) -> bytes | None:
    """ngx_http_weak_etag: a strong ETag made weak; None: not an ETag, dropped."""
    if value.startswith(b"W/"):
        return value
    if value.startswith(b'"'):
        return b"W/" + value
    return None
