"""Active health checks for nginx's static upstreams (nginx OSS has none of its own).

nonstop probes every server of an ``[upstreams.*]`` with a ``health`` table and tells the
engine; a failing server is rendered ``down`` and nginx reloaded, a passing one comes back
the same way.  As with the embedded engine, a server never seen passing gets no traffic.
nginx's passive checks (``max_fails``/``fail_timeout``) are rendered as configured and
work beside these.
"""

from __future__ import annotations

import asyncio
import functools
import logging

from nonstop.config.model import Config, UpstreamSpec
from nonstop.engines.nginx.engine import NginxEngine
from nonstop.health.checker import HealthChecker, ProbeFn, probe

__all__ = ["NginxUpstreamChecks"]

log = logging.getLogger("nonstop")


class NginxUpstreamChecks:
    """One ``HealthChecker`` per checked upstream; flips become ``down`` in the render."""

    def __init__(self, engine: NginxEngine, probe_fn: ProbeFn = probe) -> None:
        self._engine = engine
        self._probe = probe_fn
        self._checkers: dict[str, HealthChecker] = {}

    def sync(self, config: Config) -> None:
        """Follow ``config`` (on start and after every reload); known health is kept."""
        checked = {up.name: up for up in config.upstreams if _checked(up)}
        for name in [n for n in self._checkers if n not in checked]:
            checker = self._checkers.pop(name)
            for address in checker.addresses():
                self._engine.set_down(name, address, False)
            asyncio.get_running_loop().create_task(checker.close())
        for name, up in checked.items():
            assert up.health is not None
            found = self._checkers.get(name)
            if found is None:
                checker = HealthChecker(
                    up.health, functools.partial(self._change, name), self._probe
                )
                self._checkers[name] = checker
            else:
                checker = found
                checker.update_spec(up.health)
            wanted = {s.address: s for s in up.servers if not s.is_unix}
            for address in checker.addresses():
                if address not in wanted:
                    self._engine.set_down(name, address, False)
                    asyncio.get_running_loop().create_task(checker.unwatch(address))
            for address, server in wanted.items():
                checker.watch(address, server.host, server.port)
                self._engine.set_down(name, address, not checker.healthy(address))

    def _change(self, name: str, address: str, healthy: bool, detail: str) -> None:
        self._engine.set_down(name, address, not healthy)
        log.warning(
            "upstream %s server %s is %s: %s", name, address, "up" if healthy else "down", detail
        )

    async def close(self) -> None:
        for checker in self._checkers.values():
            await checker.close()
        self._checkers.clear()


def _checked(up: UpstreamSpec) -> bool:
    return up.health is not None and not up.app and not up.implicit
