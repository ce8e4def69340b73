"""The daemon side of the admin socket.

One JSON object per line in each direction: ``{"cmd": "reload", ...}`` in,
``{"ok": true, ...}`` or ``{"ok": false, "error": "..."}`` out.  The socket is created
with mode 0600: whoever can use it can deploy.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["AdminServer", "Handler"]

log = logging.getLogger("nonstop")

Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
MAX_REQUEST = 1024 * 1024


class AdminServer:
    def __init__(self, path: str, handlers: dict[str, Handler]) -> None:
        self.path = path
        self.handlers = handlers
        self._server: asyncio.AbstractServer | None = None

    async def start(self) -> None:
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

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 1.0)
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await reader.readline()
            try:
                request = json.loads(line)
                if not isinstance(request, dict):
                    raise ValueError("a request is a JSON object")
                handler = self.handlers.get(str(request.get("cmd")))
                if handler is None:
                    response: dict[str, Any] = {
                        "ok": False,
                        "error": f"unknown command {request.get('cmd')!r}",
                    }
                else:
                    response = await handler(request)
            except ValueError as exc:
                response = {"ok": False, "error": f"bad request: {exc}"}
            writer.write(json.dumps(response).encode() + b"\n")
            await writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            writer.close()


async def _answers(path: str) -> bool:
    try:
        _, writer = await asyncio.open_unix_connection(path)
    except OSError:
        return False
    writer.close()
    return True
