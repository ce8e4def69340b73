"""Responses the proxy writes itself: error pages, redirects, ``return`` bodies.

Bodies mirror nginx's built-in pages (src/http/ngx_http_special_response.c) so that
clients and monitoring that parse them see the same shape.
"""

from __future__ import annotations

import time
from email.utils import formatdate
from http import HTTPStatus

__all__ = ["REDIRECTS", "DateCache", "error_page", "reason", "status_line"]

REDIRECTS = frozenset({301, 302, 303, 307, 308})

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


_STATUS_LINES: dict[int, bytes] = {}


def status_line(code: int) -> bytes:
    line = _STATUS_LINES.get(code)
    if line is None:
        line = f"HTTP/1.1 {code} {reason(code)}\r\n".encode("latin-1")
        _STATUS_LINES[code] = line
    return line


_PAGES: dict[int, bytes] = {}


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

    def update(self) -> None:
        now = int(time.time())
        if now != self._second:
            self._second = now
            self.current = b"Date: " + formatdate(now, usegmt=True).encode("ascii") + b"\r\n"
