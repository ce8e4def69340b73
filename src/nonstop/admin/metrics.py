"""``GET /metrics``: the Prometheus text, made from plain data when someone scrapes.

What is exposed comes from three places, each read only at scrape time:

- the data plane's counters (``Engine.metrics``: requests by upstream server and status
  class, the duration histogram, failures, retries, what is open now), summed over its
  processes;
- the control plane's view (``Engine.status`` and the deployer): each server's health,
  drain and load, each app's live release;
- the control plane's event stream, counted as it passes (``EventCounts``): deploys and
  rollbacks by outcome, reloads.

``exposition`` turns a ``Scrape`` (plain data) into the text (``admin.exposition``): the
hot path only adds integers, and nothing is formatted until someone asks.  The names
follow Prometheus' practice (docs/observability.md lists each one): a
``nonstop_`` prefix, base units (seconds), ``_total`` on counters, ``_info`` for facts.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from nonstop.admin.exposition import Family, pairs, render
from nonstop.admin.http import AdminHttp, HttpRequest, HttpResponse
from nonstop.events import DeployEvent, Event, EventBus, ReloadEvent
from nonstop.proxy.metrics import BOUNDS, CLASSES

__all__ = ["CONTENT_TYPE", "EventCounts", "Scrape", "add_metrics", "build_info", "exposition"]

# the text format generate_latest writes, which every Prometheus version reads
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


@dataclass
class EventCounts:
    """Deploys, rollbacks and reloads counted from the event stream since the start.

    A deploy counts when its ``done`` event passes: under ``rollbacks`` when it was a
    ``nonstop rollback`` (a deploy of the previous release), else under ``deploys``;
    by app and outcome (``ok``, ``refused``, ``rolled_back``, ``failed``).
    """

    deploys: dict[tuple[str, str], int] = field(default_factory=dict)
    rollbacks: dict[tuple[str, str], int] = field(default_factory=dict)
    reloads: dict[str, int] = field(default_factory=dict)

    def observe(self, event: Event) -> None:
        if isinstance(event, DeployEvent) and event.kind == "done":
            fields = dict(event.fields)
            key = (event.app, str(fields.get("outcome", "unknown")))
            counts = self.rollbacks if fields.get("kind") == "rollback" else self.deploys
            counts[key] = counts.get(key, 0) + 1
        elif isinstance(event, ReloadEvent):
            outcome = "ok" if event.ok else "refused"
            self.reloads[outcome] = self.reloads.get(outcome, 0) + 1

    async def follow(self, bus: EventBus) -> None:
        """Count ``bus``'s events until cancelled."""
        with bus.subscribe() as events:
            async for event in events:
                self.observe(event)


@dataclass(frozen=True)
class Scrape:
    """Everything one scrape shows, as plain data."""

    data_plane: Mapping[str, Any] | None  # merged snapshot; None: the engine counts none
    upstreams: Mapping[str, list[Mapping[str, Any]]]  # Engine.status()["upstreams"]
    apps: Mapping[str, Any]  # Deployer.status()
    events: EventCounts
    build: Mapping[str, str]


def build_info() -> dict[str, str]:
    """nonstop's version, Python's, and whether the data plane runs compiled."""
    import nonstop.proxy.protocol

    compiled = not str(nonstop.proxy.protocol.__file__).endswith(".py")
    return {
        "version": nonstop.__version__,
        "python": sys.version.split()[0],  # as `nonstop --version` says it
        "data_plane": "compiled" if compiled else "interpreted",
    }


def add_metrics(http: AdminHttp, gather: Callable[[], Awaitable[Scrape]]) -> None:
    """Serve ``GET /metrics`` on the admin listener, from what ``gather`` returns."""

    async def metrics(_request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, exposition(await gather()), CONTENT_TYPE)

    http.route("GET", "/metrics", metrics)


def exposition(scrape: Scrape) -> bytes:
    """The Prometheus text for ``scrape``."""
    build = Family(
        "nonstop_build_info", "gauge", "nonstop's version and how it runs", list(scrape.build)
    )
    build.add(list(scrape.build.values()), 1)
    families = [build]
    if scrape.data_plane is not None:
        families += _data_plane(scrape.data_plane)
    families += _servers(scrape.upstreams)
    families += _releases(scrape.apps)
    families += _events(scrape.events)
    return render(families)


def _data_plane(snap: Mapping[str, Any]) -> list[Family]:
    requests = Family(
        "nonstop_requests_total",
        "counter",
        "Requests answered (one access log line each), by upstream, server and status class",
        ["upstream", "server", "code"],
    )
    failures = Family(
        "nonstop_upstream_failures_total",
        "counter",
        "Tries of an upstream server that failed: connecting, or before its response ended",
        ["upstream", "server", "stage"],
    )
    histograms: dict[str, tuple[list[int], float]] = {}
    for entry in snap.get("servers", ()):
        upstream, server = str(entry["upstream"]), str(entry["server"])
        where = pairs(("upstream", "server"), (upstream, server))
        for code, count in zip(CLASSES, entry["codes"], strict=True):
            if count:
                requests.add_text(f'{where},code="{code}"', count)
        if server:
            failures.add_text(f'{where},stage="connect"', entry["connect_failures"])
            failures.add_text(f'{where},stage="response"', entry["response_failures"])
        buckets, seconds = histograms.get(upstream, ([0] * (len(BOUNDS) + 1), 0.0))
        summed = [a + b for a, b in zip(buckets, entry["buckets"], strict=True)]
        histograms[upstream] = (summed, seconds + float(entry["seconds"]))
    duration = Family(
        "nonstop_request_duration_seconds",
        "histogram",
        "Time from a request's first byte to the end of its answer",
        ["upstream"],
    )
    for upstream, (buckets, seconds) in sorted(histograms.items()):
        if any(buckets):
            duration.add_histogram([upstream], _cumulative(buckets), seconds)
    retries = Family(
        "nonstop_upstream_retries_total",
        "counter",
        "Requests passed to another server after a try failed (proxy_next_upstream)",
        ["upstream"],
    )
    for upstream, count in sorted(snap.get("retries", {}).items()):
        retries.add([upstream], count)
    in_flight = Family("nonstop_requests_in_flight", "gauge", "Requests being answered now")
    in_flight.add([], snap.get("in_flight", 0))
    tunnels = Family(
        "nonstop_upgraded_connections",
        "gauge",
        "Connections upgraded to a tunnel (WebSocket) open now",
    )
    tunnels.add([], snap.get("tunnels", 0))
    connections = Family(
        "nonstop_connections", "gauge", "Client connections open now, by listener", ["listener"]
    )
    for listener, count in sorted(snap.get("connections", {}).items()):
        connections.add([listener], count)
    return [requests, duration, failures, retries, in_flight, tunnels, connections]


def _cumulative(buckets: list[int]) -> list[tuple[float, int]]:
    out, running = [], 0
    for bound, count in zip((*BOUNDS, math.inf), buckets, strict=True):
        running += count
        out.append((bound, running))
    return out


def _servers(upstreams: Mapping[str, list[Mapping[str, Any]]]) -> list[Family]:
    labels = ["upstream", "server"]
    healthy = Family(
        "nonstop_upstream_server_healthy",
        "gauge",
        "1 when the server's health check passes (or it has none), else 0",
        labels,
    )
    draining = Family(
        "nonstop_upstream_server_draining",
        "gauge",
        "1 while the server is taken out of selection to drain, else 0",
        labels,
    )
    selectable = Family(
        "nonstop_upstream_server_up",
        "gauge",
        "1 when new requests may go to the server (state up), else 0",
        labels,
    )
    in_flight = Family(
        "nonstop_upstream_server_in_flight", "gauge", "Requests on the server now", labels
    )
    for upstream, servers in sorted(upstreams.items()):
        for server in servers:
            where = pairs(labels, (upstream, str(server.get("address", ""))))
            healthy.add_text(where, 1 if server.get("health_ok", True) else 0)
            draining.add_text(where, 1 if server.get("draining") else 0)
            selectable.add_text(where, 1 if server.get("state") == "up" else 0)
            conns = server.get("conns")
            if isinstance(conns, int):
                in_flight.add_text(where, conns)
    return [healthy, draining, selectable, in_flight]


def _releases(apps: Mapping[str, Any]) -> list[Family]:
    info = Family(
        "nonstop_release_info",
        "gauge",
        "The release each app serves, and its slot",
        ["app", "release", "slot"],
    )
    for app, status in sorted(apps.items()):
        live = status.get("live") if isinstance(status, Mapping) else None
        if live:
            info.add([app, str(live["release"]), str(live["slot"])], 1)
    return [info]


def _events(counts: EventCounts) -> list[Family]:
    out = []
    for name, text, table in (
        ("nonstop_deploys_total", "Deploys that ended, by app and outcome", counts.deploys),
        (
            "nonstop_rollbacks_total",
            "Rollbacks (nonstop rollback after a deploy ended) by app and outcome",
            counts.rollbacks,
        ),
    ):
        family = Family(name, "counter", text, ["app", "outcome"])
        for (app, outcome), count in sorted(table.items()):
            family.add([app, outcome], count)
        out.append(family)
    reloads = Family(
        "nonstop_config_reloads_total", "counter", "Configuration reloads, by outcome", ["outcome"]
    )
    for outcome, count in sorted(counts.reloads.items()):
        reloads.add([outcome], count)
    out.append(reloads)
    return out
