"""The control channel between the control process and one worker: framed messages with
file descriptors.

One end of a unix ``socketpair`` in each process.  A message is a ``(kind, id, body)``
tuple, pickled (both ends are the same nonstop, and the socket pair is private to them),
in a frame of a 4-byte length and a 2-byte count of the descriptors it carries; the
descriptors (listening sockets, log files) travel with the frame's first bytes as
``SCM_RIGHTS``, at most ``SCM_BATCH`` with each piece of it the kernel takes (its limit is
253 a call), so a message may carry more than that.  The kernel delivers them no later
than those bytes, so they are queued as they arrive and a frame takes its count of them
from the queue once it is complete.

Kinds: ``call`` (answered by a ``reply`` with the same id), ``cast`` (no answer) and
``reply``.  What a call names is the receiving side's business (``nonstop.workers``): a
new message is a new name there, nothing here.

The control process does not trust what a worker sends: a worker may run as nginx.conf's
``user``, parses every request, and must not be a way to root.  Its channels are made
with ``replies``: frames are unpickled with only those classes and exception classes
(of Python's and nonstop's) allowed, so no pickle a worker writes can call anything
else; descriptors it sends are closed, and a frame above ``MAX_REPLY`` closes the
channel (the worker is replaced).  What the answers hold is checked by the receiver
(``nonstop.workers.replies``).

Sending never blocks the event loop: what the socket does not take at once is queued and
written when it is writable again.
"""

from __future__ import annotations

import array
import asyncio
import builtins
import io
import logging
import os
import pickle
import socket
import struct
import sys
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

from nonstop.listeners import SCM_BATCH

__all__ = ["Channel", "Message", "trusted_module"]

log = logging.getLogger("nonstop")

Message = tuple[str, int, Any]
_HEADER = struct.Struct("!IH")
_CHUNK = 256 * 1024
_ANCILLARY = socket.CMSG_SPACE(SCM_BATCH * 4)  # room for one piece's descriptors
MAX_REPLY = 16 * 1024 * 1024  # a frame from a worker: status and counters, never this much


def trusted_module(module: str) -> bool:
    """Whether a worker may send classes of ``module``: Python's builtins, or nonstop's."""
    return module in ("builtins", "nonstop") or module.startswith("nonstop.")


class _Replies(pickle.Unpickler):
    """An unpickler that builds only ``allowed`` classes and exceptions."""

    def __init__(self, data: bytes, allowed: frozenset[type]) -> None:
        super().__init__(io.BytesIO(data))
        self._allowed = allowed

    def find_class(self, module: str, name: str) -> Any:
        found: Any = None
        if module == "builtins":
            found = getattr(builtins, name, None)
        elif trusted_module(module):
            found = getattr(sys.modules.get(module), name, None)  # imported already, or none
        if found in self._allowed or (isinstance(found, type) and issubclass(found, Exception)):
            return found  # not SystemExit or KeyboardInterrupt: they would stop this process
        raise pickle.UnpicklingError(f"a worker may not send {module}.{name}")


class Channel:
    """Frames in and out of one end of a socket pair; ``on_message`` gets each one with
    the descriptors it carried, ``on_close`` is called once when the other end is gone."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        sock: socket.socket,
        on_message: Callable[[Message, list[int]], None],
        on_close: Callable[[], None],
        replies: frozenset[type] | None = None,
    ) -> None:
        """``replies``: the other end is a worker, sending only these classes (and
        exceptions); None: the other end is the control process, trusted."""
        sock.setblocking(False)
        self._replies = replies
        self._loop = loop
        self._sock = sock
        self._on_message = on_message
        self._on_close = on_close
        self._in = bytearray()
        self._fds: deque[int] = deque()
        self._out: deque[tuple[memoryview, list[int]]] = deque()
        self.closed = False
        loop.add_reader(sock.fileno(), self._readable)

    # -- sending ----------------------------------------------------------------------

    def send(self, message: Message, fds: Sequence[int] = ()) -> None:
        """Queue ``message`` with duplicates of ``fds``, closed once sent: the caller may
        close its own as soon as this returns, even if the message waits."""
        if self.closed:
            return
        if len(fds) > 0xFFFF:  # the frame's count
            raise ValueError(f"{len(fds)} descriptors in one message: at most 65535")
        body = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
        frame = _HEADER.pack(len(body), len(fds)) + body
        if len(fds) > SCM_BATCH * len(frame):  # each piece carrying some needs a byte
            raise ValueError(f"{len(fds)} descriptors for a frame of {len(frame)} bytes")
        idle = not self._out
        self._out.append((memoryview(frame), [os.dup(fd) for fd in fds]))
        if idle:
            self._flush()
            if self._out and not self.closed:
                self._loop.add_writer(self._sock.fileno(), self._writable)

    def _writable(self) -> None:
        self._flush()
        if not self._out and not self.closed:
            self._loop.remove_writer(self._sock.fileno())

    def _flush(self) -> None:
        while self._out:
            data, fds = self._out[0]
            now, later = fds[:SCM_BATCH], fds[SCM_BATCH:]
            pieces_left = -(-len(later) // SCM_BATCH)  # each needs a byte of the frame
            piece = data[: min(_CHUNK, len(data) - pieces_left)]
            try:
                if now:
                    ancillary = [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", now))]
                    sent = self._sock.sendmsg([piece], ancillary)
                else:
                    sent = self._sock.send(piece)
            except (BlockingIOError, InterruptedError):
                return
            except OSError:
                self.close()
                return
            _close_all(now)  # in the message from here on, with the bytes just sent
            if sent == len(data):
                self._out.popleft()
            else:
                self._out[0] = (data[sent:], later)

    # -- receiving --------------------------------------------------------------------

    def _readable(self) -> None:
        try:
            data, ancillary, _flags, _ = self._sock.recvmsg(_CHUNK, _ANCILLARY)
        except (BlockingIOError, InterruptedError):
            return
        except OSError:
            data, ancillary = b"", []
        for level, kind, raw in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
                given = array.array("i")
                given.frombytes(raw[: len(raw) - len(raw) % given.itemsize])
                if self._replies is not None:  # a worker has no descriptor to give
                    for fd in given:
                        os.close(fd)
                else:
                    self._fds.extend(given)
        if not data:
            self.close()
            return
        self._in += data
        while len(self._in) >= _HEADER.size:
            length, count = _HEADER.unpack_from(self._in)
            if self._replies is not None and length > MAX_REPLY:
                log.error("worker channel: a frame of %d bytes; closed", length)
                self.close()
                return
            end = _HEADER.size + length
            if len(self._in) < end:
                break
            frame = bytes(self._in[_HEADER.size : end])
            del self._in[:end]
            try:
                message = self._load(frame)
            except Exception as exc:  # a worker that sent what it may not: it is let go
                log.error("worker channel: %s; closed", exc)
                self.close()
                return
            fds = [self._fds.popleft() for _ in range(min(count, len(self._fds)))]
            self._on_message(message, fds)
            if self.closed:
                return

    def _load(self, frame: bytes) -> Any:
        if self._replies is None:
            return pickle.loads(frame)
        return _Replies(frame, self._replies).load()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        fd = self._sock.fileno()
        if fd >= 0:
            self._loop.remove_reader(fd)
            self._loop.remove_writer(fd)
        self._sock.close()
        while self._fds:
            os.close(self._fds.popleft())
        for _data, fds in self._out:
            _close_all(fds)
        self._out.clear()
        self._on_close()


def _close_all(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)
    fds.clear()
