"""The daemon side of the admin socket.

One JSON object per line in each direction: ``{"cmd": "reload", ...}`` in,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}`` out.  A long operation
(``deploy``, ``rollback``) first streams progress events on the same connection, one
``{"event": ...}`` object per line as they happen, and ends with its final
``{"ok": ..., "result": ...}`` line.  The socket is created with mode 0600: whoever can
use it can deploy.  docs/admin-api.md lists every command and payload.

Whatever a client sends, the daemon answers it or closes the connection, and never lets
it hold a resource unbounded: the request line must arrive within ``REQUEST_TIMEOUT``,
at most ``MAX_CONNECTIONS`` connections are served at once (one more is told so and
closed), and a line that is too long, not UTF-8, not JSON, nested too deep or of the
wrong shape is answered ``bad request`` with the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from nonstop.errors import NonstopError

__all__ = ["AdminServer", "Emit", "Handler", "StreamHandler"]

log = logging.getLogger("nonstop")

Emit = Callable[[dict[str, Any]], None]
Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
StreamHandler = Callable[[dict[str, Any], Emit], Awaitable[dict[str, Any]]]
MAX_REQUEST = 1024 * 1024
REQUEST_TIMEOUT = 10.0  # seconds from connect to the end of the request line
MAX_CONNECTIONS = 64  # served at once; deploys stream on theirs for minutes


def _line(data: dict[str, Any]) -> bytes:
    return json.dumps(data, default=str).encode() + b"\n"


class AdminServer:
    def __init__(
        self,
        path: str,
        handlers: dict[str, Handler],
        streams: dict[str, StreamHandler] | None = None,
        request_timeout: float = REQUEST_TIMEOUT,
        max_connections: int = MAX_CONNECTIONS,
    ) -> None:
        self.path = path
        self.handlers = handlers
        self.streams = streams or {}
        self.request_timeout = request_timeout
        self.max_connections = max_connections
        self.connections = 0
        self._server: asyncio.AbstractServer | None = None

    async def start(self, sock: socket.socket | None = None) -> None:
        """Listen on ``path`` — or on ``sock``, the same socket handed over by the nonstop
        this one upgrades."""
        if sock is not None:
            self._server = await asyncio.start_unix_server(
                self._serve, sock=sock, limit=MAX_REQUEST
            )
            return
        os.makedirs(os.path.dirname(self.path) or ".", exist_ok=True)
        if os.path.exists(self.path):
            if await _answers(self.path):
                raise OSError(f"another nonstop daemon already listens on {self.path}")
            os.unlink(self.path)
        old = os.umask(0o177)
        try:
            self._server = await asyncio.start_unix_server(
                self._serve, self.path, limit=MAX_REQUEST
            )
        finally:
            os.umask(old)
        os.chmod(self.path, 0o600)

    def fileno(self) -> int:
        """The listening socket's descriptor (handed to the new nonstop on an upgrade)."""
        assert self._server is not None
        sockets: Sequence[socket.socket] = getattr(self._server, "sockets", [])
        return sockets[0].fileno()

    async def close(self, unlink: bool = True) -> None:
        """Stop accepting; ``unlink=False`` after an upgrade, when the new nonstop accepts
        on the same socket."""
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        if unlink:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        def emit(event: dict[str, Any]) -> None:
            if not writer.is_closing():  # the client may have gone; the operation goes on
                writer.write(_line(event))

        self.connections += 1
        try:
            if self.connections > self.max_connections:
                response = _refusal(f"more than {self.max_connections} admin connections at once")
            else:
                response = await self._answer(reader, emit)
            if not writer.is_closing():  # gone mid-command (`nonstop deploy … | head -1`)
                writer.write(_line(response))
                await writer.drain()
        except ConnectionError:
            pass
        finally:
            self.connections -= 1
            writer.close()

    async def _answer(self, reader: asyncio.StreamReader, emit: Emit) -> dict[str, Any]:
        try:
            line = await asyncio.wait_for(reader.readuntil(b"\n"), self.request_timeout)
        except TimeoutError:
            return _refusal(f"no request line within {self.request_timeout:g}s")
        except asyncio.LimitOverrunError:
            return _refusal(f"a request line is at most {MAX_REQUEST} bytes")
        except asyncio.IncompleteReadError as exc:
            if not exc.partial.strip():
                raise ConnectionError("closed without a request") from exc
            line = exc.partial  # the client half-closed after a line without its newline
        try:
            return await self._dispatch(line, emit)
        except (ValueError, RecursionError) as exc:
            # json's errors, UnicodeDecodeError and the handlers' argument checks
            return _refusal(str(exc) if not isinstance(exc, RecursionError) else "nested too deep")
        except NonstopError as exc:
            return {"ok": False, "error": str(exc), "exit_code": exc.exit_code}

    async def _dispatch(self, line: bytes, emit: Emit) -> dict[str, Any]:
        # UTF-8 only: json.loads would take bytes as UTF-16 or UTF-32 by their NULs
        request = json.loads(line.decode("utf-8-sig"))  # a BOM, as before, is taken
        if not isinstance(request, dict):
            raise ValueError("a request is a JSON object")
        cmd = request.get("cmd")
        if not isinstance(cmd, str):
            raise ValueError('a request names its command as a string: {"cmd": "status"}')
        stream = self.streams.get(cmd)
        if stream is not None:
            return await stream(request, emit)
        handler = self.handlers.get(cmd)
        if handler is None:
            return {"ok": False, "error": f"unknown command {request.get('cmd')!r}", "exit_code": 2}
        return await handler(request)


def _refusal(reason: str) -> dict[str, Any]:
    return {"ok": False, "error": f"bad request: {reason}", "exit_code": 2}


async def _answers(path: str) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    return True
