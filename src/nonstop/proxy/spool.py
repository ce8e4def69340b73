"""A response read ahead of a slow client: nginx's ``proxy_buffering on``.

Without it the proxy relays at the client's pace: when the client's socket stops taking
bytes (``pause_writing``), reading from the upstream pauses too, and the app's
connection stays busy until the slowest client has its last byte.  With it, what the
upstream sends while the client is behind goes into a ``Spool``: memory up to
``proxy_buffer_size`` + ``proxy_buffers`` (nginx's buffers), then an unlinked temporary
file under the state directory up to ``proxy_max_temp_file_size``
(ngx_event_pipe.c: ``ngx_event_pipe_write_chain_to_temp_file``).  The upstream connection
is then free as soon as the response is read: it goes back to the keep-alive pool, and the
client is fed from the spool as it takes bytes (``pump`` on each ``resume_writing``).
Past the file's limit the upstream is paused until the client catches up, as nginx does.

A spool exists only while a client is behind, so a fast client never meets one: the
hot path does not change.  Tunnels (101) are never spooled.
"""

from __future__ import annotations

import os
from typing import IO, TYPE_CHECKING, Final

from nonstop.proxy.handed import temporary_file

if TYPE_CHECKING:
    from nonstop.config.model import ProxyBuffering
    from nonstop.proxy.protocol import ClientConnection
    from nonstop.proxy.router import Route

__all__ = ["Spool", "reads_ahead"]

CHUNK: Final = 64 * 1024  # read back from the file this much at a time


def reads_ahead(route: Route, accel: bytes) -> bool:
    """Whether this response is read ahead of the client: proxy_buffering, unless the
    upstream said otherwise with ``X-Accel-Buffering: yes|no`` and proxy_ignore_headers
    does not name it (ngx_http_upstream_process_buffering)."""
    spec = route.spec
    if spec is None:
        return False
    buffering = spec.buffering
    if accel and buffering.accel_buffering:
        value = accel.lower()
        if value == b"yes":
            return True
        if value == b"no":
            return False
    return buffering.enabled


class Spool:
    """What the upstream sent that the client has not taken yet; ``write`` replaces the
    connection's ``write`` while it exists."""

    __slots__ = (
        "closed",
        "conn",
        "done",
        "done_close",
        "done_status",
        "file",
        "file_limit",
        "full",
        "memory",
        "memory_limit",
        "memory_size",
        "read_at",
        "state_dir",
        "write_at",
    )

    def __init__(self, conn: ClientConnection, limits: ProxyBuffering, state_dir: str) -> None:
        self.conn = conn
        self.memory: list[bytes] = []
        self.memory_size = 0
        self.memory_limit = limits.memory
        self.file_limit = limits.max_temp_file_size
        self.state_dir = state_dir
        self.file: IO[bytes] | None = None
        self.read_at = 0  # file offsets: what the client was given, what was written
        self.write_at = 0
        self.full = False  # the upstream is paused until the client catches up
        self.done = False  # the response is read whole: finish once the client has it
        self.done_status = 0
        self.done_close = False
        self.closed = False

    @property
    def size(self) -> int:
        return self.memory_size + self.write_at - self.read_at

    def write(self, data: bytes) -> None:
        """Keep ``data`` for the client: in memory, or past the buffers in the file."""
        if self.closed:
            return
        file = self.file
        if file is None and self.memory_size + len(data) > self.memory_limit and self.file_limit:
            file = self.file = temporary_file(self.state_dir, "proxy_temp")
            self._append(b"".join(self.memory))
            self.memory = []
            self.memory_size = 0
        if file is not None:
            self._append(data)
            over = self.write_at - self.read_at > self.file_limit
        else:
            self.memory.append(data)
            self.memory_size += len(data)
            over = self.memory_size > self.memory_limit
        if over and not self.full:
            self.full = True
            self._upstream_reading(False)

    def _append(self, data: bytes) -> None:
        file = self.file
        if file is not None and data:
            os.pwrite(file.fileno(), data, self.write_at)
            self.write_at += len(data)

    def finish(self, status: int, close: bool) -> None:
        """The upstream's response ended: the request ends when the client has it all."""
        self.done = True
        self.done_status = status
        self.done_close = close
        if not self.size:
            self._drained()

    def pump(self) -> None:
        """Give the client what it takes now: until its socket is full again, or all."""
        conn = self.conn
        transport = conn.transport
        while not conn.write_paused and not self.closed:
            if transport is None or transport.is_closing():
                self.close()
                return
            if self.memory:
                data = b"".join(self.memory)
                self.memory = []
                self.memory_size = 0
                transport.write_through(data)  # at once: write_paused must see it
                continue
            file = self.file
            if file is None or self.read_at >= self.write_at:
                self._drained()
                return
            count = min(CHUNK, self.write_at - self.read_at)
            chunk = os.pread(file.fileno(), count, self.read_at)
            if not chunk:
                self.close()
                transport.abort()  # the file lost bytes: the body cannot be whole
                return
            self.read_at += len(chunk)
            if self.read_at == self.write_at:
                self.read_at = self.write_at = 0  # all given out: reuse the file from its start
                os.ftruncate(file.fileno(), 0)
            transport.write_through(chunk)
        if self.full and self.size <= max(self.file_limit, self.memory_limit) // 2:
            self.full = False
            self._upstream_reading(True)

    def _drained(self) -> None:
        """The client has everything: the connection writes straight to it again."""
        conn = self.conn
        self.close()
        conn.spool = None
        if conn.transport is not None:
            conn.write = conn.transport.write
        if self.full:
            self._upstream_reading(True)
        if self.done:
            conn._finish(self.done_status, self.done_close)

    def _upstream_reading(self, on: bool) -> None:
        uconn = self.conn.exchange.uconn
        transport = uconn.transport if uconn is not None else None
        if transport is None or (uconn is not None and uconn.closed):
            return
        if on:
            transport.resume_reading()
        else:
            transport.pause_reading()

    def close(self) -> None:
        self.closed = True
        self.memory = []
        self.memory_size = 0
        file = self.file
        self.file = None
        if file is not None:
            file.close()
