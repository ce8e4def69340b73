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
    "bucket",
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
    (``return``, no location, an error before any server was tried)."""

    __slots__ = ("buckets", "codes", "connect_failures", "response_failures", "seconds")

    def __init__(self) -> None:
        self.codes = [0, 0, 0, 0, 0, 0]  # by CLASSES
        self.buckets = [0] * (len(BOUNDS) + 1)  # by BOUNDS, not cumulative; last: +Inf
        self.seconds = 0.0
        self.connect_failures = 0
        self.response_failures = 0

    def count(self, status: int, seconds: float) -> None:
        code = status // 100
        self.codes[code if 0 < code < 6 else 0] += 1
        self.buckets[bucket(seconds)] += 1
        self.seconds += seconds

    def failed(self, connecting: bool) -> None:
        if connecting:
            self.connect_failures += 1
        else:
            self.response_failures += 1


def bucket(seconds: float) -> int:
    """The index of the first of ``BOUNDS`` that holds ``seconds`` (len(BOUNDS): none).

    Written out, not a loop over BOUNDS: compiled, each test is one float comparison,
    where a loop would box every bound on every request (a unit test holds the two
    together)."""
    if seconds <= 0.005:
        return 0
    if seconds <= 0.01:
        return 1
    if seconds <= 0.025:
        return 2
    if seconds <= 0.05:
        return 3
    if seconds <= 0.1:
        return 4
    if seconds <= 0.25:
        return 5
    if seconds <= 0.5:
        return 6
    if seconds <= 1.0:
        return 7
    if seconds <= 2.5:
        return 8
    if seconds <= 5.0:
        return 9
    if seconds <= 10.0:
        return 10
    return 11


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

    def retried(self, upstream: str) -> None:
        self.retries[upstream] = self.retries.get(upstream, 0) + 1

    def snapshot(self, gauges: Mapping[str, Any]) -> dict[str, Any]:
        """The counts as plain data, with ``gauges`` (in flight, connections) beside."""
        return {
            "servers": [
                {
                    "upstream": upstream,
                    "server": server,
                    "codes": list(t.codes),
                    "buckets": list(t.buckets),
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
