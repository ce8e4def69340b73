"""``nonstop run``: the daemon's main loop.

Signal handlers only enqueue (as gunicorn's arbiter does); the loop dispatches: SIGHUP
and the admin ``reload`` re-read the config, SIGTERM/SIGINT shut down in one order.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import time
from typing import Any

from nonstop.admin.server import AdminServer
from nonstop.config import load
from nonstop.config.model import Config
from nonstop.errors import ConfigError
from nonstop.proxy.server import ProxyServer

__all__ = ["Daemon", "admin_socket_path", "setup_logging"]

log = logging.getLogger("nonstop")


class _NginxFormatter(logging.Formatter):
    """``2026/11/24 23:59:59 [error] 1234#0: message``, as nginx's error log reads."""

    _names = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "warn",
        logging.ERROR: "error",
        logging.CRITICAL: "crit",
    }

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = getattr(record, "nginx_level", None) or self._names.get(record.levelno, "error")
        return f"{stamp} [{level}] {os.getpid()}#0: {record.getMessage()}"


def setup_logging(config: Config | None) -> None:
    root = logging.getLogger("nonstop")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if config is not None and config.error_log and config.error_log != "stderr":
        os.makedirs(os.path.dirname(config.error_log) or ".", exist_ok=True)
        handler = logging.FileHandler(config.error_log)
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(_NginxFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False


def admin_socket_path(config: Config) -> str:
    path = config.admin.socket
    if not os.path.isabs(path):
        path = os.path.join(config.prefix, path)
    return path


class Daemon:
    def __init__(self, path: str, prefix: str | None, shutdown_timeout: float = 30.0) -> None:
        self.path = path
        self.prefix = prefix
        self.shutdown_timeout = shutdown_timeout
        self.events: asyncio.Queue[str] = asyncio.Queue()
        self.proxy: ProxyServer | None = None
        self.admin: AdminServer | None = None
        self.started = time.time()
        self.reloads = 0

    async def run(self, config: Config) -> None:
        loop = asyncio.get_running_loop()
        self.proxy = ProxyServer(config, loop)
        await self.proxy.start()
        self.admin = AdminServer(
            admin_socket_path(config),
            {"reload": self._admin_reload, "status": self._admin_status, "stop": self._stop},
        )
        await self.admin.start()
        for signum, event in (
            (signal.SIGTERM, "stop"),
            (signal.SIGINT, "stop"),
            (signal.SIGHUP, "reload"),
            (signal.SIGUSR1, "reopen"),
        ):
            loop.add_signal_handler(signum, self.events.put_nowait, event)
        addresses = ", ".join(f"{h}:{p}" for h, p in self.proxy.bound_ports())
        log.info("nonstop %s started, listening on %s", os.getpid(), addresses)
        try:
            while True:
                event = await self.events.get()
                if event == "stop":
                    break
                if event == "reload":
                    await self.reload()
                if event == "reopen":
                    self.proxy.state.access_logs.reopen()
        finally:
            for signum in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGUSR1):
                loop.remove_signal_handler(signum)
            log.info("shutting down: finishing in-flight requests")
            await self.admin.close()
            await self.proxy.shutdown(self.shutdown_timeout)
            log.info("exit")

    async def reload(self) -> dict[str, Any]:
        """Re-read the config; a config that fails validation changes nothing."""
        assert self.proxy is not None
        try:
            config = load(self.path, self.prefix)
            await self.proxy.reload(config)
        except ConfigError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        except OSError as exc:
            log.error("reload refused, the running config stays: %s", exc)
            return {"ok": False, "error": str(exc)}
        self.reloads += 1
        setup_logging(config)
        for notice in config.notices:
            log.info("%s", notice)
        log.info("configuration reloaded from %s", self.path)
        return {"ok": True, "files": list(config.files)}

    async def _admin_reload(self, _request: dict[str, Any]) -> dict[str, Any]:
        return await self.reload()

    async def _admin_status(self, _request: dict[str, Any]) -> dict[str, Any]:
        assert self.proxy is not None
        state = self.proxy.state
        return {
            "ok": True,
            "pid": os.getpid(),
            "uptime": round(time.time() - self.started, 3),
            "config": self.path,
            "reloads": self.reloads,
            "connections": len(state.connections),
            "listen": [f"{h}:{p}" for h, p in self.proxy.bound_ports()],
            "upstreams": {
                name: backend.balancer.snapshot() for name, backend in state.upstreams.items()
            },
        }

    async def _stop(self, _request: dict[str, Any]) -> dict[str, Any]:
        self.events.put_nowait("stop")
        return {"ok": True}
