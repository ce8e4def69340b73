"""A worker process: the embedded proxy on the listening sockets the control process gave it.

``python -m nonstop.workers --channel FD`` is started by the control process
(``nonstop.workers.engine``) with one end of a socket pair as its only extra descriptor.
Everything else comes over that channel: the config, the listening sockets (as
``SCM_RIGHTS``), the apps' server sets, drains and health verdicts.  The worker runs an
``EmbeddedEngine`` without active checks (the control process runs them once for all
workers) and answers each call with what the engine method returned, or the error it
raised.  Each call runs as a task of its own, started in the order the calls came, so a
drain that waits does not hold up the set_servers behind it.

When the channel closes (the control process is gone, however it ended), the worker
stops accepting, finishes its in-flight requests within the shutdown grace and exits; it
never outlives the process that owns the listeners for long.  Its connections are not
cut: a SIGKILL or crash of the control process fails no request in flight.  SIGINT and SIGTERM are
ignored: a ^C at a terminal, or systemd's stop of the whole control group, reaches every
process at once, and the control process stops the workers in its own order (a stop
told over the channel).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any

from nonstop.config.model import Config
from nonstop.engines.base import IDLE_GRACE
from nonstop.engines.embedded import EmbeddedEngine
from nonstop.errorlog import setup_logging
from nonstop.errors import NonstopError
from nonstop.proxy.handed import Handed, install
from nonstop.servers import ServerState
from nonstop.statedir import restrict_umask
from nonstop.workers.channel import Channel, Message, trusted_module
from nonstop.workers.privileges import drop

__all__ = ["Worker", "main"]

log = logging.getLogger("nonstop")

Key = tuple[str, int]


class Worker:
    def __init__(self, channel_fd: int) -> None:
        self._fd = channel_fd
        self._engine: EmbeddedEngine | None = None
        self._config: Config | None = None
        self._sockets: dict[Key, socket.socket] = {}  # given, not yet listening
        self._grace = 30.0
        self._tasks: set[asyncio.Task[None]] = set()
        self._done: asyncio.Future[None] | None = None
        self._stopping = False
        # every call a worker answers: name -> what runs it
        self._calls: Mapping[str, Callable[..., Awaitable[Any]]] = {
            "start": self._start,
            "apply": self._apply,
            "set_servers": self._forward("set_servers"),
            "drain": self._forward("drain"),
            "servers": self._forward("servers"),
            "drain_server": self._forward("drain_server"),
            "undrain_server": self._forward("undrain_server"),
            "status": self._forward("status"),
            "metrics": self._forward("metrics"),
            "reopen_logs": self._reopen_logs,
            "mark_health": self._mark_health,
            "shutdown": self._shutdown,
        }

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self._done = loop.create_future()
        sock = socket.socket(fileno=self._fd)
        self.channel = Channel(loop, sock, self._message, self._lost)
        await self._done

    # -- the channel ------------------------------------------------------------------

    def _message(self, message: Message, fds: list[int]) -> None:
        kind, ident, body = message
        name, args = body
        task = asyncio.get_running_loop().create_task(
            self._call(ident if kind == "call" else 0, name, args, fds)
        )
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _call(self, ident: int, name: str, args: tuple[Any, ...], fds: list[int]) -> None:
        handler = self._calls.get(name)
        try:
            if handler is None:
                self._close_fds(fds)
                raise NonstopError(f"worker: no call {name!r}")
            # a call given descriptors owns them from here
            value = await (handler(*args, fds=fds) if fds else handler(*args))
        except Exception as exc:  # the caller gets it; the worker goes on
            if ident:
                self._reply(ident, False, exc)
            else:
                log.error("worker: %s failed: %s", name, exc)
            return
        if ident:
            self._reply(ident, True, value)

    def _reply(self, ident: int, ok: bool, value: object) -> None:
        if not ok and not _sendable(value):  # the control process takes no other class
            value = NonstopError(f"{type(value).__name__}: {value}")
        try:
            self.channel.send(("reply", ident, (ok, value)))
        except Exception as exc:  # an answer that does not pickle is an error of its own
            self.channel.send(("reply", ident, (False, NonstopError(f"worker: {exc!r}"))))

    def _lost(self) -> None:
        """The control process is gone (a crash, a SIGKILL): finish what is in flight and
        exit, as after an upgrade — a connection between requests is not closed under a
        client that may be sending on it, its next answer says ``Connection: close`` —
        while the next nonstop serves what waits on the listening sockets."""
        if not self._stopping:
            held = len(self._engine.proxy.state.connections) if self._engine is not None else 0
            log.warning(
                "worker process %d: the control process is gone; finishing %d connection(s)"
                " within %gs, then exiting",
                os.getpid(),
                held,
                self._grace,
            )
            asyncio.get_running_loop().create_task(self._shutdown(self._grace, IDLE_GRACE))

    # -- calls ------------------------------------------------------------------------

    def _forward(self, name: str) -> Callable[..., Awaitable[Any]]:
        async def call(*args: Any) -> Any:
            assert self._engine is not None
            return await getattr(self._engine, name)(*args)

        return call

    def _take(self, keys: list[Key], handed: Handed, fds: Sequence[int]) -> None:
        """The listening sockets (the first descriptors) and the files handed over."""
        for sock in self._sockets.values():
            sock.close()
        count = len(keys)
        self._sockets = {
            key: socket.socket(fileno=fd) for key, fd in zip(keys, fds[:count], strict=True)
        }
        install(handed, fds[count:])

    def _socket(self, key: Key) -> socket.socket:
        sock = self._sockets.pop(key, None)
        if sock is None:
            raise OSError(f"no listening socket for {key[0]}:{key[1]} from the control process")
        return sock

    async def _start(
        self,
        config: Config,
        keys: list[Key],
        servers: dict[str, tuple[ServerState, ...]],
        drained: dict[str, list[str]],
        marks: dict[tuple[str, str], bool],
        grace: float,
        handed: Handed,
        fds: Sequence[int] = (),
    ) -> None:
        self._take(keys, handed, fds)
        if config.worker_user is not None and os.geteuid() == 0:
            drop(config.worker_user)  # nginx.conf's user: root is not needed from here on
        restrict_umask(config.group)  # what it writes: 0600, or 0640 with the group
        setup_logging(config)
        self._config = config
        self._grace = grace
        engine = self._engine = EmbeddedEngine(config, sockets=self._socket, checked=False)
        for app, states in servers.items():
            await engine.set_servers(app, states)
        for (upstream, address), healthy in marks.items():
            engine.mark_health(upstream, address, healthy)
        for upstream, addresses in drained.items():
            for address in addresses:
                await engine.drain_server(upstream, address, 0.0)
        await engine.start()
        self._close_unused()

    async def _apply(
        self,
        config: Config,
        keys: list[Key],
        handed: Handed,
        fds: Sequence[int] = (),
    ) -> None:
        assert self._engine is not None
        self._take(keys, handed, fds)
        try:
            await self._engine.apply(config)
        finally:
            self._close_unused()
        self._config = config
        restrict_umask(config.group)
        setup_logging(config)

    async def _reopen_logs(self, handed: Handed, fds: Sequence[int] = ()) -> None:
        """SIGUSR1 to the control process: the error log and the access logs, reopened
        (as handed over, when the worker runs as nginx.conf's user)."""
        assert self._engine is not None
        install(handed, fds)
        setup_logging(self._config)
        await self._engine.reopen_logs()

    async def _mark_health(self, upstream: str, address: str, healthy: bool) -> None:
        if self._engine is not None:
            self._engine.mark_health(upstream, address, healthy)

    async def _shutdown(self, timeout: float, idle_grace: float = 0.0) -> None:
        if self._stopping:
            return
        self._stopping = True
        if self._engine is not None:
            await self._engine.shutdown(timeout, idle_grace)
        self._close_unused()
        assert self._done is not None
        if not self._done.done():
            self._done.set_result(None)

    def _close_unused(self) -> None:
        for sock in self._sockets.values():
            sock.close()
        self._sockets.clear()

    @staticmethod
    def _close_fds(fds: list[int]) -> None:
        for fd in fds:
            with contextlib.suppress(OSError):
                os.close(fd)


def _sendable(error: object) -> bool:
    """Whether the control process unpickles ``error``: an ``Exception`` of a module the
    channel trusts."""
    return isinstance(error, Exception) and trusted_module(type(error).__module__)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m nonstop.workers")
    parser.add_argument("--channel", type=int, required=True, metavar="FD")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    import uvloop

    uvloop.run(Worker(args.channel).run())
