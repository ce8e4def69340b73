"""An in-memory ``asyncio.Transport`` for protocol tests: bytes in, bytes out, no sockets.

A test connects a protocol with ``FakeTransport.connect(protocol)``, pushes bytes with
``feed``, reads what the protocol wrote with ``written``/``take``, and ends the
connection from the far side with ``lose`` or ``feed_eof``.  ``close`` and ``abort`` by
the protocol only record the fact: as with a real transport, ``connection_lost`` is not
called from inside them; a test that wants it calls ``lose``.

The proxy's connections hold their writes to the end of the loop's turn
(``nonstop.proxy.outbox``).  Each delivery here is a turn of its own unless a test says
otherwise: ``feed`` ends the turn after each chunk, ``feed_eof`` after the EOF (in the
turn of what came before it), ``lose`` comes in a new one, and reading what was written
(``writes``, ``written``, ``take``) ends the current turn first, as the loop would have
before any peer could read.
"""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Callable
from typing import Any

from nonstop.proxy.outbox import HeldTransport

__all__ = ["FakeTransport"]


class FakeTransport(asyncio.Transport):
    """Records writes, close/abort and the pause state of reading."""

    def __init__(
        self,
        peername: tuple[str, int] | str | None = ("127.0.0.1", 50000),
        sockname: tuple[str, int] | str | None = ("127.0.0.1", 8080),
        sock: socket.socket | None = None,
    ) -> None:
        super().__init__()
        self.peername = peername
        self.sockname = sockname
        self.sock = sock
        self.protocol: asyncio.Protocol | None = None
        self._writes: list[bytes] = []
        self._end_turn: Callable[[], None] | None = None
        self.closed = False
        self.aborted = False
        self.reading = True
        self.write_eof_called = False
        self.lost = False
        self.write_limits: tuple[int | None, int | None] = (None, None)
        # With ``holding``, written bytes count as unsent until ``drain``: a peer that
        # reads slower than the protocol writes.
        self.holding = False
        self.unsent = 0

    # -- driving the protocol (the far side of the connection) ------------------------
    def connect(self, protocol: asyncio.Protocol) -> FakeTransport:
        """Attach ``protocol`` and call its ``connection_made``."""
        self.protocol = protocol
        protocol.connection_made(self)
        held = getattr(protocol, "transport", None)
        if isinstance(held, HeldTransport):
            self._end_turn = held.outbox.flush
        return self

    def feed(self, *chunks: bytes, turn_ends: bool = True) -> None:
        """Deliver each chunk with its own ``data_received`` call, each in its own turn
        of the loop (``turn_ends=False``: the turn goes on, as when other connections'
        events come in the same poll)."""
        assert self.protocol is not None, "connect() first"
        for chunk in chunks:
            self.protocol.data_received(chunk)
            if turn_ends:
                self.end_turn()

    def feed_eof(self) -> bool | None:
        """The peer's EOF; a false answer closes the transport, as uvloop's does."""
        assert self.protocol is not None, "connect() first"
        keep = self.protocol.eof_received()
        if not keep:
            self.close()
        self.end_turn()
        return keep

    def end_turn(self) -> None:
        """What the loop does when a turn's events are handled: send what was held."""
        if self._end_turn is not None:
            self._end_turn()

    def lose(self, exc: Exception | None = None) -> None:
        """The connection is gone: ``connection_lost`` is called once."""
        if self.lost or self.protocol is None:
            return
        self.end_turn()
        self.lost = True
        self.closed = True
        self.protocol.connection_lost(exc)

    # -- what the protocol did ---------------------------------------------------------
    @property
    def writes(self) -> list[bytes]:
        """Each write that reached the transport (the turn ended first)."""
        self.end_turn()
        return self._writes

    def written(self) -> bytes:
        return b"".join(self.writes)

    def take(self) -> bytes:
        """Everything written since the last ``take``."""
        writes = self.writes
        data = b"".join(writes)
        writes.clear()
        return data

    # -- asyncio.Transport ---------------------------------------------------------------
    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self.closed:
            return  # a real transport drops writes after close
        self._writes.append(bytes(data))
        if self.holding:
            self.unsent += len(data)

    def writelines(self, list_of_data: Any) -> None:
        for data in list_of_data:
            self.write(data)

    def write_eof(self) -> None:
        self.write_eof_called = True

    def can_write_eof(self) -> bool:
        return True

    def close(self) -> None:
        self.closed = True

    def abort(self) -> None:
        self.aborted = True
        self.closed = True

    def is_closing(self) -> bool:
        return self.closed

    def pause_reading(self) -> None:
        self.reading = False

    def resume_reading(self) -> None:
        self.reading = True

    def is_reading(self) -> bool:
        return self.reading and not self.closed

    def get_write_buffer_size(self) -> int:
        return self.unsent

    def drain(self) -> None:
        """The peer took every byte written so far."""
        self.unsent = 0

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        self.write_limits = (high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        if name == "peername":
            return self.peername
        if name == "sockname":
            return self.sockname
        if name == "socket":
            return self.sock
        return default
