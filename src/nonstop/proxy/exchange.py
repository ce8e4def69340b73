"""Per-request state of a client connection: one request's exchange with an upstream.

A ``ClientConnection`` owns one ``Exchange`` and resets it for every request it serves,
so the hot path allocates no state object per request.  It holds what one request's
handling decides and tracks -- its route and upstream, the peer being tried and the
connection to it, the request body on its way (and kept for a retry), and the framing
of the response -- and nothing about the client connection itself.
"""

from __future__ import annotations

import asyncio
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from nonstop.proxy.connection_pool import UpstreamConnection
    from nonstop.proxy.gzip import Compressor
    from nonstop.proxy.router import Route
    from nonstop.proxy.server import Backend
    from nonstop.proxy.upstream import Attempt, Peer

__all__ = ["Exchange"]


class Exchange:
    """One request's upstream exchange and response framing; reused (``reset``)."""

    __slots__ = (
        "attempt",
        "body_buf",
        "body_buf_size",
        "body_done",
        "body_file",
        "body_retained",
        "buffering",
        "cached",
        "client_chunked",
        "connect_task",
        "expected_body",
        "file_sending",
        "first_try",
        "gzip",
        "peer",
        "request_sent",
        "resp_bytes",
        "resp_chunked",
        "resp_close",
        "resp_eof_body",
        "resp_started",
        "resp_status",
        "route",
        "uconn",
        "upstream",
        "upstream_keep",
        "upstream_mark",
    )

    def __init__(self) -> None:
        self.body_file: IO[bytes] | None = None  # a buffered body past client_body_buffer_size
        self.reset()

    def reset(self) -> None:
        """Forget the last request: the state of a request not yet handled."""
        self.upstream_mark = -1  # unsent request bytes when the upstream stopped taking them
        self.route: Route | None = None
        self.upstream: Backend | None = None
        self.attempt: Attempt | None = None
        self.peer: Peer | None = None  # the peer being tried, until its outcome is counted
        self.uconn: UpstreamConnection | None = None
        self.connect_task: asyncio.Task[None] | None = None
        self.first_try = 0.0
        self.request_sent = False
        self.body_buf: list[bytes] = []
        self.body_buf_size = 0
        if self.body_file is not None:
            self.drop_body_file()
        self.buffering = False  # reading the whole body before choosing an upstream
        self.file_sending = False  # a buffered body's file is not yet all written upstream
        self.body_retained = True  # every body byte sent is also in body_buf, for a retry
        self.body_done = False
        self.client_chunked = False
        self.expected_body = False
        self.resp_started = False
        self.resp_status = 0
        self.resp_bytes = 0
        self.resp_chunked = False  # the body is re-framed chunked to the client
        self.resp_close = False
        self.resp_eof_body = False  # the upstream's close ends the body
        self.upstream_keep = False
        self.cached = False  # the try is on a reused keep-alive connection
        self.gzip: Compressor | None = None  # the response body is compressed (proxy/gzip.py)

    def drop_body_file(self) -> None:
        body_file = self.body_file
        self.body_file = None
        if body_file is not None:
            body_file.close()
