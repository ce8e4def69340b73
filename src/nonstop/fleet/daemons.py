"""The nonstop daemon of each host (and of the front), asked over the host's SSH connection.

Every step of a fleet deploy is one admin request to a daemon (``docs/admin-api.md``):
``status``, ``drain``, ``deploy`` with a hold, ``commit``, ``abort``...  They travel
through the SSH connection the deploy already holds to the host, on a direct stream-local
channel to the daemon's admin socket (``Connection.admin``): no process is started on the
host for them, where a ``nonstop`` command would cost a Python start-up each (hundreds of
milliseconds, more on a busy host).

Where the admin socket is follows from the host's nonstop config, which only the host can
read; its daemon says it in its ``status`` answer (``admin_socket``, beside ``config``).
It is learned once per config path, by one ``nonstop status --json -c CONFIG`` on one host;
the fleet's hosts share their paths, so every other host is first asked on the same socket,
and its answer must name the same config, else that host is asked with its own command.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from nonstop.fleet.errors import AdminUnreachable, HostError
from nonstop.fleet.ssh import Connection, Destination, Sessions

__all__ = ["Daemons", "last_json"]

Event = Callable[[dict[str, Any]], None]


def last_json(stdout: bytes) -> dict[str, Any] | None:
    """The answer a ``nonstop ... --json`` printed: the whole output when it is one
    (indented) JSON object, else its last line (after one line per event)."""
    import json

    text = stdout.decode("utf-8", "replace").strip()
    for candidate in (text, text.rsplit("\n", 1)[-1]):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


class Daemons:
    """The daemons of one fleet run, each reached at its admin socket over SSH."""

    def __init__(self, sessions: Sessions, remote_nonstop: str) -> None:
        self.sessions = sessions
        self.remote_nonstop = remote_nonstop
        self._sockets: dict[tuple[Destination, str], asyncio.Task[str]] = {}
        self._learned: dict[str, asyncio.Task[str]] = {}

    async def call(
        self,
        host: Destination,
        config: str,
        cmd: str,
        *,
        on_event: Event | None = None,
        timeout: float | None = None,
        **args: Any,
    ) -> dict[str, Any]:
        """``cmd`` to the daemon ``config`` runs on ``host``: its final answer
        (``{"ok": ...}``); ``HostError`` when the daemon cannot be asked."""
        conn = await self.sessions.get(host)
        path = await self._socket(conn, config)
        request = {"cmd": cmd, **args}
        return await conn.admin(path, request, on_event=on_event, timeout=timeout)

    async def find(self, host: Destination, config: str) -> str:
        """Where the daemon ``config`` runs on ``host`` listens (learned once)."""
        return await self._socket(await self.sessions.get(host), config)

    async def _socket(self, conn: Connection, config: str) -> str:
        """The admin socket of ``config``'s daemon on ``conn``'s host: found once, by
        concurrent callers together; a failed search is forgotten (a later step retries)."""
        key = (conn.destination, config)
        task = self._sockets.get(key)
        if task is None or _failed(task):
            task = asyncio.ensure_future(self._locate(conn, config))
            self._sockets[key] = task
        return await asyncio.shield(task)

    async def _locate(self, conn: Connection, config: str) -> str:
        learning = self._learned.get(config)
        if learning is None or _failed(learning):
            learning = asyncio.ensure_future(self._ask_cli(conn, config))
            self._learned[config] = learning
            return await asyncio.shield(learning)
        try:
            guess: str | None = await asyncio.shield(learning)
        except HostError:  # that host failed; this one is asked on its own
            guess = None
        if guess is not None and await self._serves(conn, guess, config):
            return guess
        return await self._ask_cli(conn, config)

    async def _serves(self, conn: Connection, path: str, config: str) -> bool:
        """Whether the daemon at ``path`` on this host is the one of ``config``."""
        try:
            answer = await conn.admin(path, {"cmd": "status", "app": None})
        except AdminUnreachable:
            return False
        return answer.get("config") == config

    async def _ask_cli(self, conn: Connection, config: str) -> str:
        """The admin socket of ``config``'s daemon on this host, from its status answer."""
        argv = [self.remote_nonstop, "status", "--json", "-c", config]
        done = await conn.run(argv, check=False)
        answer = last_json(done.stdout)
        if done.exit_status != 0 or answer is None:
            stderr = done.stderr.decode("utf-8", "replace").strip()[-300:]
            raise HostError(conn.name, f"`nonstop status` exited {done.exit_status}: {stderr}")
        path = answer.get("admin_socket")
        if not isinstance(path, str) or not path:
            raise HostError(
                conn.name, "its nonstop daemon does not say where its admin socket is: upgrade it"
            )
        return path


def _failed(task: asyncio.Task[str]) -> bool:
    return task.done() and (task.cancelled() or task.exception() is not None)
