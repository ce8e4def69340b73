"""Accepting client connections on one listening socket, and pausing when out of descriptors.

The event loop's own ``create_server`` is not used for the proxy's listeners because of
what it does when the process runs out of file descriptors: libuv accepts and closes the
connections waiting in the queue (its "EMFILE trick"), or the server stops listening for
good, and nothing is logged.  An ``Acceptor`` does what nginx does
(``ngx_event_accept``): on EMFILE/ENFILE it stops accepting, logs
``accept() failed (24: Too many open files)`` (at most once a second), and tries again
shortly; meanwhile the connections already open keep being served and the new ones wait
in the kernel's accept queue — no connection is closed unanswered — and accepting
resumes by itself as soon as descriptors are free again.

It accepts one connection per readiness event, as nginx without ``multi_accept``: when
several processes share one listening socket, each takes a connection at a time, which
keeps the split even.
"""

from __future__ import annotations

import asyncio
import errno
import logging
import socket
import time
from collections.abc import Callable

__all__ = ["AcceptErrors", "Acceptor"]

log = logging.getLogger("nonstop")

RETRY = 0.1  # seconds between attempts while descriptors are exhausted
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
# the peer went away before its connection was accepted: nothing to do about it
_GONE = frozenset({errno.ECONNABORTED, errno.EPROTO, errno.EPERM, errno.ECONNRESET})


class AcceptErrors:
    """The accept() failures of one process, logged at most once a second (nginx's words)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._last = float("-inf")
        self.count = 0  # every failure since the process started

    def failed(self, exc: OSError) -> None:
        self.count += 1
        now = self._clock()
        if now - self._last >= 1.0:
            self._last = now
            log.critical("accept() failed (%d: %s)", exc.errno, exc.strerror)


class Acceptor:
    """Serves ``factory``'s protocol on every connection accepted from ``sock``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        factory: Callable[[], asyncio.Protocol],
        errors: AcceptErrors,
    ) -> None:
        sock.setblocking(False)
        self.sockets = (sock,)
        self._loop = loop
        self._sock = sock
        self._factory = factory
        self._errors = errors
        self._retry: asyncio.TimerHandle | None = None
        self._closed = False
        self._pending: set[asyncio.Task[object]] = set()
        loop.add_reader(sock.fileno(), self._accept)

    @property
    def paused(self) -> bool:
        return self._retry is not None

    def _accept(self) -> None:
        try:
            conn, _ = self._sock.accept()
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            if exc.errno in _GONE:
                return
            self._errors.failed(exc)
            if exc.errno in _EXHAUSTED:
                self._pause()
            return
        conn.setblocking(False)
        task = self._loop.create_task(self._loop.connect_accepted_socket(self._factory, conn))
        self._pending.add(task)
        task.add_done_callback(self._connected)

    def _connected(self, task: asyncio.Task[object]) -> None:
        self._pending.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.info("accepted connection lost before it started: %s", task.exception())

    def _pause(self) -> None:
        """Out of descriptors: stop watching the socket, look again in ``RETRY``."""
        self._loop.remove_reader(self._sock.fileno())
        self._retry = self._loop.call_later(RETRY, self._resume)

    def _resume(self) -> None:
        self._retry = None
        if not self._closed:
            self._loop.add_reader(self._sock.fileno(), self._accept)
            self._accept()

    def close(self) -> None:
        """Stop accepting and close this process's copy of the socket."""
        if self._closed:
            return
        self._closed = True
        if self._retry is not None:
            self._retry.cancel()
            self._retry = None
        else:
            self._loop.remove_reader(self._sock.fileno())
        self._sock.close()

    async def wait_closed(self) -> None:
        """Connections accepted before ``close`` finish starting."""
        if self._pending:
            await asyncio.gather(*self._pending, return_exceptions=True)
