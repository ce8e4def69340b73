"""The data plane's request counters: plain ints in one object per process.

A request is counted once, where its access log line is written (``ProxyState.record``),
so the counts equal the log's lines.  Counting is a few integer additions on a ``Tally``
the request's upstream server keeps a reference to (``Peer.tally``): no lock, no label
look-up, no library on the hot path.  The Prometheus text is made from a ``snapshot``
when someone scrapes (``nonstop.metrics``), never per request.

``snapshot`` returns plain data (dicts, lists, numbers: JSON- and pickle-able) and
``merge`` sums any number of them, so that several processes' counts can be shipped over
a channel and added up into one.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Final

__all__ = [
    "BOUNDS",
    "CLASSES",
    "MAX_TALLIES",
    "ProxyMetrics",
    "Tally",
    "empty",
    "merge",
]

# The request-duration histogram's upper bounds in seconds (Prometheus' defaults, which
# span a fast proxied GET to a slow report).
BOUNDS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Status classes by index: status // 100, and 0 for a status outside 100-599.
CLASSES: Final = ("other", "1xx", "2xx", "3xx", "4xx", "5xx")
# Distinct (upstream, server) pairs counted apart; past that (a proxy_pass computed from
# the request can name many addresses) they are counted together under upstream "other".
MAX_TALLIES: Final = 4096


class Tally:
    """One upstream server's counts; server "" counts requests nonstop answered itself
    (``return``, no location, an error before any server was tried).

    Each count is an int attribute of its own, not an item of a list: compiled, an
    attribute is a native integer added in place, where a list item is a Python int
    boxed anew on every request.  ``codes`` and ``buckets`` read them as lists.
    """

    __slots__ = (
        "b0",
        "b1",
        "b2",
        "b3",
        "b4",
        "b5",
        "b6",
        "b7",
        "b8",
        "b9",
        "b10",
        "b11",
        "c0",
        "c1",
        "c2",
        "c3",
        "c4",
        "c5",
        "connect_failures",
        "response_failures",
        "seconds",
    )

    def __init__(self) -> None:
        self.c0 = self.c1 = self.c2 = self.c3 = self.c4 = self.c5 = 0  # by CLASSES
        # by BOUNDS, not cumulative; b11: above the last bound
        self.b0 = self.b1 = self.b2 = self.b3 = self.b4 = self.b5 = 0
        self.b6 = self.b7 = self.b8 = self.b9 = self.b10 = self.b11 = 0
        self.seconds = 0.0
        self.connect_failures = 0
        self.response_failures = 0

    def count(self, status: int, seconds: float) -> None:
        code = status // 100
        if code == 2:
            self.c2 += 1
        elif code == 3:
            self.c3 += 1
        elif code == 4:
            self.c4 += 1
        elif code == 5:
            self.c5 += 1
        elif code == 1:
            self.c1 += 1
        else:
            self.c0 += 1
        self.seconds += seconds
        # BOUNDS written out, one float comparison each (a unit test holds them together):
        # a loop over the tuple would box every bound on every request
        if seconds <= 0.005:
            self.b0 += 1
        elif seconds <= 0.01:
            self.b1 += 1
        elif seconds <= 0.025:
            self.b2 += 1
        elif seconds <= 0.05:
            self.b3 += 1
        elif seconds <= 0.1:
            self.b4 += 1
        elif seconds <= 0.25:
            self.b5 += 1
        elif seconds <= 0.5:
            self.b6 += 1
        elif seconds <= 1.0:
            self.b7 += 1
        elif seconds <= 2.5:
            self.b8 += 1
        elif seconds <= 5.0:
            self.b9 += 1
        elif seconds <= 10.0:
            self.b10 += 1
        else:
            self.b11 += 1

    def failed(self, connecting: bool) -> None:
        if connecting:
            self.connect_failures += 1
        else:
            self.response_failures += 1

    @property
    def codes(self) -> list[int]:
        """The counts by status class, indexed as CLASSES."""
        return [self.c0, self.c1, self.c2, self.c3, self.c4, self.c5]

    @property
    def buckets(self) -> list[int]:
        """The counts by duration, indexed as BOUNDS, then one above them all."""
        return [
            self.b0,
            self.b1,
            self.b2,
            self.b3,
            self.b4,
            self.b5,
            self.b6,
            self.b7,
            self.b8,
            self.b9,
            self.b10,
            self.b11,
        ]


class ProxyMetrics:
    """All of one process's counters; lives as long as the proxy (across reloads)."""

    __slots__ = ("local", "retries", "tallies")

    def __init__(self) -> None:
        self.tallies: dict[tuple[str, str], Tally] = {}
        self.local = self.tally("", "")
        self.retries: dict[str, int] = {}

    def tally(self, upstream: str, server: str) -> Tally:
        """The counts of ``server`` of ``upstream``, made on first use."""
        key = (upstream, server)
        found = self.tallies.get(key)
        if found is None:
            if len(self.tallies) >= MAX_TALLIES:
                key = ("other", "")
                found = self.tallies.get(key)
            if found is None:
                found = self.tallies[key] = Tally()
        return found

    def requests(self) -> int:
        """Every request counted so far (each ends in one of the classes)."""
        return sum(t.c0 + t.c1 + t.c2 + t.c3 + t.c4 + t.c5 for t in self.tallies.values())

    def retried(self, upstream: str) -> None:
        self.retries[upstream] = self.retries.get(upstream, 0) + 1

    def snapshot(self, gauges: Mapping[str, Any]) -> dict[str, Any]:
        """The counts as plain data, with ``gauges`` (in flight, connections) beside."""
        return {
            "servers": [
                {
                    "upstream": upstream,
                    "server": server,
                    "codes": t.codes,
                    "buckets": t.buckets,
                    "seconds": t.seconds,
                    "connect_failures": t.connect_failures,
                    "response_failures": t.response_failures,
                }
                for (upstream, server), t in self.tallies.items()
            ],
            "retries": dict(self.retries),
            "in_flight": int(gauges.get("in_flight", 0)),
            "tunnels": int(gauges.get("tunnels", 0)),
            "connections": dict(gauges.get("connections", {})),
        }


def empty() -> dict[str, Any]:
    """A snapshot of a process that counted nothing."""
    return {"servers": [], "retries": {}, "in_flight": 0, "tunnels": 0, "connections": {}}


def merge(snapshots: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Sum snapshots (one per process) into one: counters and gauges alike add up."""
    servers: dict[tuple[str, str], dict[str, Any]] = {}
    retries: dict[str, int] = {}
    connections: dict[str, int] = {}
    in_flight = tunnels = 0
    for snap in snapshots:
        for entry in snap.get("servers", ()):
            key = (str(entry["upstream"]), str(entry["server"]))
            into = servers.get(key)
            if into is None:
                servers[key] = {
                    **entry,
                    "codes": list(entry["codes"]),
                    "buckets": list(entry["buckets"]),
                }
                continue
            into["codes"] = [a + b for a, b in zip(into["codes"], entry["codes"], strict=True)]
            into["buckets"] = [
                a + b for a, b in zip(into["buckets"], entry["buckets"], strict=True)
            ]
            into["seconds"] += entry["seconds"]
            into["connect_failures"] += entry["connect_failures"]
            into["response_failures"] += entry["response_failures"]
        for name, count in snap.get("retries", {}).items():
            retries[name] = retries.get(name, 0) + count
        for name, count in snap.get("connections", {}).items():
            connections[name] = connections.get(name, 0) + count
        in_flight += snap.get("in_flight", 0)
        tunnels += snap.get("tunnels", 0)
    return {
        "servers": list(servers.values()),
        "retries": retries,
        "in_flight": in_flight,
        "tunnels": tunnels,
        "connections": connections,
    }
