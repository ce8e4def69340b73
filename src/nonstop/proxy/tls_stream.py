"""Server-side TLS between a listener's TCP transport and a ``ClientConnection``.

``TlsStream`` is two things at once: the protocol of the accepted TCP connection, and
the transport the ``ClientConnection`` reads from and writes to.  Bytes from the socket
go into OpenSSL through a memory BIO and come out decrypted into one buffer that every
stream shares (each record is copied out before anything else runs); what the
connection writes is encrypted at once and handed to the TCP transport in one write.

Why not the event loop's own TLS layer: that one is general (any protocol, start_tls,
flow control of its own, a write backlog), and on a keep-alive connection carrying
small requests its bookkeeping cost ~4,000 instructions per request (61.3k against
57.4k with this layer, callgrind) -- several percent of all the CPU nonstop spends on a
request.  This one does only what a server-side
HTTP connection needs:

- The connection is told of the TCP connection at once (``connection_made``), before
  the handshake, so the connection bound counts it and the connection's header
  deadline bounds the handshake, as nginx's ``client_header_timeout`` does.  What it
  writes before the handshake is done waits for it.
- A failed handshake is logged at ``info``, as nginx logs it, and the socket closed.
- The peer's ``close_notify`` and a bare TCP FIN both reach the connection as
  ``eof_received``; it decides whether a response still in flight goes out.
- ``close`` sends ``close_notify`` and closes without waiting for the peer's, as nginx
  does -- unless the response was cut off (``ClientConnection.truncated``): then the
  socket closes without it, so the client cannot take a partial body for a whole one.
  ``abort`` resets.
- ``write_eof`` is a lingering close, as on a plain socket: ``close_notify``, our half
  of the TCP connection shut, and what the client still sends discarded unread.
- Reading pauses and resumes with the connection; nothing is read after the peer's
  ``close_notify`` or FIN.  The TCP transport's write flow control is passed straight
  through.
"""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Callable
from typing import Any, Final, cast

from nonstop.proxy.protocol import ClientConnection

__all__ = ["TlsStream"]

log = logging.getLogger("nonstop")

HANDSHAKE: Final = 0
OPEN: Final = 1
DRAINING: Final = 2  # after write_eof: what arrives is discarded
CLOSED: Final = 3

# Where decrypted bytes land, shared by every stream: each record is copied out of it
# before anything else runs.  A TLS record holds at most 16 KiB.
READ_SIZE: Final = 64 * 1024
READ_VIEW: Final = memoryview(bytearray(READ_SIZE))


class TlsStream:
    __slots__ = (
        "app",
        "close_after_handshake",
        "connected",
        "context",
        "early",
        "incoming",
        "loop",
        "outgoing",
        "paused",
        "peer_done",
        "pending",
        "read",
        "sslobj",
        "state",
        "tcp",
        "write_tls",
    )

    def __init__(self, context: ssl.SSLContext, app: ClientConnection) -> None:
        self.context = context
        self.app = app
        self.state = HANDSHAKE
        self.connected = False  # the connection was told connection_made
        self.paused = False  # the connection paused reading
        self.peer_done = False  # close_notify or FIN came: nothing more is read
        self.early: list[bytes] = []  # written before the handshake finished
        self.close_after_handshake = False
        self.tcp: asyncio.Transport | None = None
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.sslobj: ssl.SSLObject | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        # the object's C methods, bound once (see tls_object.DirectSSLObject)
        self.read: Callable[[int, memoryview], int] = _not_yet
        self.pending: Callable[[], int] = _nothing_pending
        self.write_tls: Callable[[bytes], int] = _not_yet

    # -- the TCP transport's protocol ---------------------------------------------------
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.tcp = cast("asyncio.Transport", transport)
        self.loop = asyncio.get_running_loop()
        try:
            sslobj = self.context.wrap_bio(self.incoming, self.outgoing, server_side=True)
        except ssl.SSLError as exc:
            self._failed("SSL_new()", exc)
            return
        self.sslobj = sslobj
        # with a buffer, read returns a count (typeshed says bytes)
        self.read = cast("Callable[[int, memoryview], int]", sslobj.read)
        self.pending = sslobj.pending
        self.write_tls = sslobj.write
        self.connected = True
        self.app.connection_made(cast("asyncio.Transport", self))

    def data_received(self, data: bytes) -> None:
        state = self.state
        if state == OPEN:
            if self.peer_done:
                return  # nothing is read after close_notify
            self.incoming.write(data)
            if not self.paused:
                self._read()
        elif state == HANDSHAKE:
            self.incoming.write(data)
            self._handshake()
        elif state == DRAINING:
            self.app.data_received(b"")  # lingering: only the time of arrival counts

    def eof_received(self) -> bool | None:
        """A FIN without close_notify: the connection decides, as with a plain socket."""
        state = self.state
        if state in (OPEN, DRAINING):
            self._end_of_input()
        else:
            if state == HANDSHAKE:
                self._log_info("peer closed connection in SSL handshake while SSL handshaking")
            self._close_tcp()
        return True  # closing is ours

    def connection_lost(self, exc: Exception | None) -> None:
        self.state = CLOSED
        self.early.clear()
        # let the SSL object and its buffers go now rather than at the next GC pass
        self.sslobj = None
        self.read = _not_yet
        self.pending = _nothing_pending
        self.write_tls = _not_yet
        if self.connected:
            self.connected = False
            self.app.connection_lost(exc)

    def pause_writing(self) -> None:
        if self.connected:
            self.app.pause_writing()

    def resume_writing(self) -> None:
        if self.connected:
            self.app.resume_writing()

    # -- the connection's transport ------------------------------------------------------
    def write(self, data: bytes) -> None:
        if not data:
            return
        state = self.state
        if state == OPEN:
            try:
                sent = self.write_tls(data)
                while sent < len(data):  # a memory BIO takes everything; just in case
                    data = data[sent:]
                    sent = self.write_tls(data)
            except ssl.SSLError as exc:
                self._flush()
                self._failed("SSL_write()", exc)
                return
            self._flush()
        elif state == HANDSHAKE:
            self.early.append(bytes(data))
        # DRAINING, CLOSED: our side is shut

    def close(self) -> None:
        """Send ``close_notify`` after what was written (not after a cut-off response),
        then close the socket once the bytes before it have left."""
        state = self.state
        if state == CLOSED:
            return
        if state == HANDSHAKE and self.early and not self.close_after_handshake:
            # An answer written before the handshake ended (the 503 of a full server)
            # goes out once it is done; a second close gives up waiting.
            self.close_after_handshake = True
            return
        if state == OPEN and not self.app.truncated:
            self._notify()
        self._close_tcp()

    def abort(self) -> None:
        self.state = CLOSED
        tcp = self.tcp
        if tcp is not None:
            tcp.abort()

    def is_closing(self) -> bool:
        tcp = self.tcp
        return self.state == CLOSED or tcp is None or tcp.is_closing()

    def pause_reading(self) -> None:
        self.paused = True
        tcp = self.tcp
        if tcp is not None and not tcp.is_closing():
            tcp.pause_reading()

    def resume_reading(self) -> None:
        if not self.paused:
            return
        self.paused = False
        if self.peer_done:
            return  # after a FIN the socket must not be read again
        state = self.state
        loop = self.loop
        if state == OPEN and loop is not None and (self.incoming.pending or self.pending()):
            # Records that came before the pause go first; the socket is read again
            # only after them, so a FIN behind them cannot overtake them.
            loop.call_soon(self._read_later)
        elif state in (OPEN, DRAINING):
            self._resume_tcp()

    def can_write_eof(self) -> bool:
        return self.state == OPEN

    def write_eof(self) -> None:
        """Shut our side (close_notify, then TCP's half-close) and linger: what the
        client still sends is discarded until the connection closes."""
        if self.state != OPEN:
            return
        self._notify()
        self.state = DRAINING
        tcp = self.tcp
        if tcp is not None and tcp.can_write_eof():
            tcp.write_eof()

    def get_write_buffer_size(self) -> int:
        tcp = self.tcp
        return self.outgoing.pending + (tcp.get_write_buffer_size() if tcp is not None else 0)

    def set_write_buffer_limits(self, high: int | None = None, low: int | None = None) -> None:
        if self.tcp is not None:
            self.tcp.set_write_buffer_limits(high, low)

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        sslobj = self.sslobj
        if sslobj is not None and self.state != HANDSHAKE:
            if name == "ssl_object":
                return sslobj
            if name == "sslcontext":
                return sslobj.context
            if name == "cipher":
                return sslobj.cipher()
            if name == "peercert":
                return sslobj.getpeercert()
        tcp = self.tcp
        return tcp.get_extra_info(name, default) if tcp is not None else default

    # -- inside ----------------------------------------------------------------------------
    def _handshake(self) -> None:
        sslobj = self.sslobj
        assert sslobj is not None
        try:
            sslobj.do_handshake()
        except ssl.SSLWantReadError:
            self._flush()
            return
        except (ssl.SSLError, ValueError) as exc:
            self._flush()  # the alert, if OpenSSL wrote one
            self._failed("SSL_do_handshake()", exc)
            return
        self.state = OPEN
        self._flush()  # the handshake's last flight and the session tickets
        early = self.early
        if early:
            self.early = []
            for data in early:
                self.write(data)
        if self.close_after_handshake:
            self.close()
        elif self.state == OPEN and not self.paused and (self.incoming.pending or self.pending()):
            self._read()  # the first request came with the client's Finished

    def _read(self) -> None:
        """Hand each whole record in the BIO to the connection, one at a time."""
        incoming = self.incoming
        read = self.read
        pending = self.pending
        app = self.app
        ended = False
        try:
            while incoming.pending or pending():
                if app.transport is not None:
                    # What the connection wrote this turn goes out before the next record
                    # is read: should that one be broken, OpenSSL writes nothing after
                    # it and the stream closes, and the answer would wait for the
                    # turn's end (proxy/outbox.py) in vain.
                    app.transport.send()
                    if self.state != OPEN:
                        return  # the write failed (_failed closed the stream)
                n = read(READ_SIZE, READ_VIEW)
                if n == 0:
                    ended = True  # close_notify
                    break
                app.data_received(READ_VIEW[:n].tobytes())
                if self.paused or self.state != OPEN:
                    break
        except ssl.SSLWantReadError:
            pass  # a record not yet whole
        except ssl.SSLZeroReturnError:
            ended = True
        except ssl.SSLError as exc:
            self._flush()  # the alert, if OpenSSL wrote one
            self._failed("SSL_read()", exc)
            return
        if self.outgoing.pending:
            self._flush()  # what OpenSSL answered a key update with
        if ended and self.state == OPEN:
            self._end_of_input()

    def _read_later(self) -> None:
        """The records left in the BIO by a pause, then the socket again."""
        if self.state != OPEN or self.paused or self.peer_done:
            return
        try:
            self._read()
        except Exception:
            log.exception("internal error reading a TLS connection")
            self.abort()
            return
        if self.state == OPEN and not self.paused and not self.peer_done:
            self._resume_tcp()

    def _resume_tcp(self) -> None:
        tcp = self.tcp
        if tcp is not None and not tcp.is_closing():
            tcp.resume_reading()

    def _end_of_input(self) -> None:
        """The peer sends nothing more.  The connection keeps the stream open while a
        response is on its way (it closes it after); otherwise it closes now."""
        if self.peer_done:
            return
        self.peer_done = True
        if not self.app.eof_received():
            self.close()

    def _notify(self) -> None:
        """Queue close_notify behind what was written; the peer's is not awaited."""
        sslobj = self.sslobj
        if sslobj is None:
            return
        try:
            sslobj.unwrap()
        except (ssl.SSLError, ValueError):
            pass  # SSLWantReadError: the close_notify is written, the peer's is not read
        self._flush()

    def _flush(self) -> None:
        data = self.outgoing.read()
        if data:
            tcp = self.tcp
            if tcp is not None:
                tcp.write(data)

    def _failed(self, call: str, exc: BaseException) -> None:
        """TLS broke (a bad handshake or record): log it as nginx does, drop the socket."""
        reason = getattr(exc, "reason", None) or str(exc) or type(exc).__name__
        during = " while SSL handshaking" if self.state == HANDSHAKE else ""
        self._log_info(f"{call} failed ({reason}){during}")
        self.early.clear()
        self._close_tcp()

    def _log_info(self, message: str) -> None:
        tcp = self.tcp
        peer = tcp.get_extra_info("peername") if tcp is not None else None
        client = peer[0] if isinstance(peer, tuple) else "unix:"
        self.app.state.log_error("info", f"{message}, client: {client}")

    def _close_tcp(self) -> None:
        self.state = CLOSED
        tcp = self.tcp
        if tcp is not None and not tcp.is_closing():
            tcp.close()


def _not_yet(*args: object) -> int:
    raise ssl.SSLWantReadError("the handshake has not started")


def _nothing_pending() -> int:
    return 0
