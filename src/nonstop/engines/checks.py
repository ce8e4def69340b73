"""Active health checks of the static ``[upstreams.*]`` that have a ``health`` table.

Shared by both engines: one ``HealthChecker`` per checked upstream reports flips, and the
engine applies them through ``mark(upstream, address, healthy)`` and each one goes on
the event stream — — the embedded proxy on
the upstream (its one owner of peer state), nginx as ``down`` in the render (nginx OSS
has no active checks of its own).  ``sync`` runs after start and after every reload:
checkers follow the server lists, and each watched server's known health is marked
again — a server whose line changed is a new server to the data plane, which would
otherwise wait unhealthy for a flip that never comes.  A server never seen passing gets
no traffic; a server no longer checked is marked healthy (no longer held down).

Every task a checker starts is the checker's; the ones unwatching a server are kept
here until ``close`` awaits them.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable, Iterable

from nonstop.config.model import UpstreamSpec
from nonstop.events import EventBus, HealthEvent
from nonstop.health.checker import HealthChecker, ProbeFn, probe
from nonstop.tasks import TaskOwner

__all__ = ["Mark", "UpstreamChecks"]

log = logging.getLogger("nonstop")

Mark = Callable[[str, str, bool], None]


def _never_seen(_upstream: str, _address: str) -> bool:
    return False


class UpstreamChecks:
    """One ``HealthChecker`` per checked upstream; every flip goes to ``mark``."""

    def __init__(
        self, mark: Mark, probe_fn: ProbeFn = probe, events: EventBus | None = None
    ) -> None:
        self._mark = mark
        self._probe = probe_fn
        self._events = events
        self._checkers: dict[str, HealthChecker] = {}
        self._ending = TaskOwner("active checks")  # unwatching servers, closing checkers

    def sync(
        self,
        upstreams: Iterable[UpstreamSpec],
        known: Callable[[str, str], bool] = _never_seen,
    ) -> None:
        """Follow the running upstreams; ``known(upstream, address)``: the health the data
        plane carried over for a server not watched yet."""
        checked = {up.name: up for up in upstreams if _checked(up)}
        for name in [n for n in self._checkers if n not in checked]:
            checker = self._checkers.pop(name)
            for address in checker.addresses():
                self._mark(name, address, True)
            self._ending.spawn(checker.close())
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
                    self._mark(name, address, True)
                    self._ending.spawn(checker.unwatch(address))
            for address, server in wanted.items():
                checker.watch(address, server.host, server.port, known(name, address))
                self._mark(name, address, checker.healthy(address))

    def _change(self, name: str, address: str, healthy: bool, detail: str) -> None:
        self._mark(name, address, healthy)
        if self._events is not None:
            self._events.publish(HealthEvent(name, address, healthy, detail))
        log.warning(
            "upstream %s server %s is %s: %s", name, address, "up" if healthy else "down", detail
        )

    async def close(self) -> None:
        for checker in self._checkers.values():
            await checker.close()
        self._checkers.clear()
        await self._ending.close()


def _checked(up: UpstreamSpec) -> bool:
    return up.health is not None and not up.app and not up.implicit
