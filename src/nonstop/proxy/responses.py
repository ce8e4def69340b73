"""Responses the proxy writes itself: error pages, redirects, ``return`` bodies.

Every response that does not come from an upstream is made by ``local_response``: the
refusals of a request head, the 503 past the connection bound, ``return``, 404 without
``proxy_pass``, 413, and the 5xx of a failed upstream exchange.  Bodies mirror nginx's
built-in pages (src/http/ngx_http_special_response.c) so that clients and monitoring that
parse them see the same shape.
"""

from __future__ import annotations

import time
from http import HTTPStatus
from typing import Final

__all__ = [
    "CONTINUE",
    "REDIRECTS",
    "SERVER_LINE",
    "DateCache",
    "absolute_url",
    "error_page",
    "http_date",
    "local_response",
    "reason",
    "return_response",
    "status_line",
]

REDIRECTS: Final = frozenset({301, 302, 303, 307, 308})
NO_BODY_STATUS: Final = frozenset({204, 304})
SERVER_LINE: Final = b"Server: nonstop\r\n"
CONTINUE: Final = b"HTTP/1.1 100 Continue\r\n\r\n"

_EXTRA_REASONS = {
    444: "No Response",
    494: "Request Header Or Cookie Too Large",
    499: "Client Closed Request",
}


def reason(code: int) -> str:
    try:
        return HTTPStatus(code).phrase
    except ValueError:
        return _EXTRA_REASONS.get(code, "Unknown")


_STATUS_LINES: Final[dict[int, bytes]] = {}


def status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        line = f"HTTP/1.1 {code} {reason(code)}\r\n".encode("latin-1")
        _STATUS_LINES[code] = line
    return line


_PAGES: Final[dict[int, bytes]] = {}


def error_page(code: int) -> bytes:
    """The HTML body nginx sends for its own error and redirect responses."""
    page = _PAGES.get(code)
    if page is None:
        title = f"{code} {reason(code)}" if code != 494 else f"400 {reason(494)}"
        page = (
            f"<html>\r\n<head><title>{title}</title></head>\r\n<body>\r\n"
            f"<center><h1>{title}</h1></center>\r\n<hr><center>nonstop</center>\r\n"
            "</body>\r\n</html>\r\n"
        ).encode("latin-1")
        _PAGES[code] = page
    return page


def local_response(
    status: int,
    body: bytes,
    ctype: bytes,
    date: bytes,
    keep: bool,
    extra: bytes = b"",
    head_only: bool = False,
    length: int = -1,
) -> bytes:
    """A whole response of our own: status line, ``Server``, ``Date`` (the line from
    ``DateCache``), type and length of ``body``, ``extra`` header lines (each with its
    CRLF), Connection, then ``body`` unless ``head_only`` (a HEAD request, or a body
    that follows separately: then ``length`` is its length)."""
    parts = [status_line(status), SERVER_LINE, date]
    if length < 0:
        length = len(body)
    if length or status not in NO_BODY_STATUS:
        parts.append(b"Content-Type: " + ctype + b"\r\nContent-Length: ")
        parts.append(str(length).encode() + b"\r\n")
    parts.append(extra)
    parts.append(b"Connection: keep-alive\r\n\r\n" if keep else b"Connection: close\r\n\r\n")
    if not head_only:
        parts.append(body)
    return b"".join(parts)


def return_response(
    code: int, text: str | None, scheme: str, authority: str, port: int
) -> tuple[bytes, bytes, bytes]:
    """Body, content type and extra header lines of ``return code [text]``: a redirect
    to ``text`` (made absolute on this request's scheme, host and port, as nginx's
    port_in_redirect on does), ``text`` as the body, or nginx's page for ``code``."""
    if code in REDIRECTS and text is not None:
        if text.startswith("/"):
            text = absolute_url(scheme, authority, port, text)
        return error_page(code), b"text/html", b"Location: " + text.encode("latin-1") + b"\r\n"
    if text is not None:
        return text.encode("latin-1"), b"text/plain", b""
    return error_page(code) if code >= 300 else b"", b"text/html", b""


def absolute_url(scheme: str, authority: str, port: int, path: str) -> str:
    """A redirect to ``path`` made absolute as nginx's header filter makes it
    (absolute_redirect and port_in_redirect on, server_name_in_redirect off)."""
    default = 443 if scheme == "https" else 80
    if port != default:
        authority += f":{port}"
    return f"{scheme}://{authority}{path}"


# Formatted dates by whole second: formatting costs more than the rest of a small file's
# answer; a site's files share few modification times.
_DATES: dict[int, bytes] = {}
_DATES_MAX: Final = 4096


def http_date(seconds: float) -> bytes:
    """``seconds`` since the epoch as an HTTP date (``Thu, 01 Jan 1970 00:00:01 GMT``)."""
    key = int(seconds)
    date = _DATES.get(key)
    if date is None:
        if len(_DATES) >= _DATES_MAX:
            _DATES.clear()
        date = _DATES[key] = _format_date(key)
    return date


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = (
    "Jan",
    "Feb",
    "Mar",
    "Apr",
    "May",
    "Jun",
    "Jul",
    "Aug",
    "Sep",
    "Oct",
    "Nov",
    "Dec",
)


def _format_date(seconds: int) -> bytes:
    # RFC 9110's IMF-fixdate, as email.utils.formatdate(usegmt=True) writes it (that
    # module's import costs every process ~0.7 MiB for this one line)
    t = time.gmtime(seconds)
    return (
        f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year:04d} "
        f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT"
    ).encode("ascii")


class DateCache:
    """The ``Date`` header line; ``current`` is refreshed by the server tick.

    Like nginx's cached time (ngx_time_update), it may lag the clock by up to a tick,
    and costs the hot path one attribute read.
    """

    __slots__ = ("_second", "current")

    def __init__(self) -> None:
        self._second = -1
        self.current = b""
        self.update()

    @property
    def second(self) -> int:
        """The time ``current`` shows, for headers that must agree with it (Expires)."""
        return self._second

    def update(self, clock: float = 0.0) -> None:
        """Follow the clock (``clock``: a time to show instead, for tests)."""
        now = int(clock or time.time())
        if now != self._second:
            self._second = now
            # once a second, each second once: not through http_date's cache, which
            # keeps the few dates files and Expires repeat
            self.current = b"Date: " + _format_date(now) + b"\r\n"
