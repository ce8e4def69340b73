"""``GET /metrics``: the Prometheus text, made from plain data when someone scrapes.

What is exposed comes from three places, each read only at scrape time:

- the data plane's counters (``Engine.metrics``: requests by upstream server and status
  class, the duration histogram, failures, retries, what is open now), summed over its
  processes;
- the control plane's view (``Engine.status`` and the deployer): each server's health,
  drain and load, each app's live release;
- the control plane's event stream, counted as it passes (``EventCounts``): deploys and
  rollbacks by outcome, reloads.

``exposition`` turns a ``Scrape`` (plain data) into the text with prometheus_client's
exposition code and a collector of our own: the hot path never touches the library.
The names follow Prometheus' practice (docs/observability.md lists each one): a
``nonstop_`` prefix, base units (seconds), ``_total`` on counters, ``_info`` for facts.
"""

from __future__ import annotations

import platform
from collections.abc import Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from prometheus_client import CollectorRegistry, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from nonstop.admin.http import AdminHttp, HttpRequest, HttpResponse
from nonstop.events import DeployEvent, Event, EventBus, ReloadEvent
from nonstop.proxy.metrics import BOUNDS, CLASSES

__all__ = ["CONTENT_TYPE", "EventCounts", "Scrape", "add_metrics", "build_info", "exposition"]

CONTENT_TYPE = CONTENT_TYPE_LATEST


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

    try:
        release = version("nonstop")
    except PackageNotFoundError:
        release = "unknown"
    compiled = not str(nonstop.proxy.protocol.__file__).endswith(".py")
    return {
        "version": release,
        "python": platform.python_version(),
        "data_plane": "compiled" if compiled else "interpreted",
    }


class _Collector:
    def __init__(self, scrape: Scrape) -> None:
        self.scrape = scrape

    def collect(self) -> Iterator[Metric]:
        scrape = self.scrape
        info = InfoMetricFamily("nonstop_build", "nonstop's version and how it runs")
        info.add_metric([], dict(scrape.build))
        yield info
        if scrape.data_plane is not None:
            yield from _data_plane(scrape.data_plane)
        yield from _servers(scrape.upstreams)
        yield from _releases(scrape.apps)
        yield from _events(scrape.events)


def add_metrics(http: AdminHttp, gather: Callable[[], Awaitable[Scrape]]) -> None:
    """Serve ``GET /metrics`` on the admin listener, from what ``gather`` returns."""

    async def metrics(_request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, exposition(await gather()), CONTENT_TYPE)

    http.route("GET", "/metrics", metrics)


def exposition(scrape: Scrape, process: bool = True) -> bytes:
    """The Prometheus text for ``scrape`` (with the process' CPU, memory and files)."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(_Collector(scrape))
    if process:
        ProcessCollector(registry=registry)
    return generate_latest(registry)


def _data_plane(snap: Mapping[str, Any]) -> Iterator[Metric]:
    requests = CounterMetricFamily(
        "nonstop_requests",
        "Requests answered (one access log line each), by upstream, server and status class",
        labels=["upstream", "server", "code"],
    )
    failures = CounterMetricFamily(
        "nonstop_upstream_failures",
        "Tries of an upstream server that failed: connecting, or before its response ended",
        labels=["upstream", "server", "stage"],
    )
    histograms: dict[str, tuple[list[int], float]] = {}
    for entry in snap.get("servers", ()):
        upstream, server = str(entry["upstream"]), str(entry["server"])
        for code, count in zip(CLASSES, entry["codes"], strict=True):
            if count:
                requests.add_metric([upstream, server, code], count)
        if server:
            failures.add_metric([upstream, server, "connect"], entry["connect_failures"])
            failures.add_metric([upstream, server, "response"], entry["response_failures"])
        buckets, seconds = histograms.get(upstream, ([0] * (len(BOUNDS) + 1), 0.0))
        summed = [a + b for a, b in zip(buckets, entry["buckets"], strict=True)]
        histograms[upstream] = (summed, seconds + float(entry["seconds"]))
    yield requests
    duration = HistogramMetricFamily(
        "nonstop_request_duration_seconds",
        "Time from a request's first byte to its last answer byte handed to the kernel",
        labels=["upstream"],
    )
    for upstream, (buckets, seconds) in sorted(histograms.items()):
        if not any(buckets):
            continue
        cumulative, running = [], 0
        for bound, count in zip((*map(_float, BOUNDS), "+Inf"), buckets, strict=True):
            running += count
            cumulative.append((bound, running))
        duration.add_metric([upstream], cumulative, seconds)
    yield duration
    yield failures
    retries = CounterMetricFamily(
        "nonstop_upstream_retries",
        "Requests passed to another server after a try failed (proxy_next_upstream)",
        labels=["upstream"],
    )
    for upstream, count in sorted(snap.get("retries", {}).items()):
        retries.add_metric([upstream], count)
    yield retries
    yield GaugeMetricFamily(
        "nonstop_requests_in_flight", "Requests being answered now", value=snap.get("in_flight", 0)
    )
    yield GaugeMetricFamily(
        "nonstop_upgraded_connections",
        "Connections upgraded to a tunnel (WebSocket) open now",
        value=snap.get("tunnels", 0),
    )
    connections = GaugeMetricFamily(
        "nonstop_connections", "Client connections open now, by listener", labels=["listener"]
    )
    for listener, count in sorted(snap.get("connections", {}).items()):
        connections.add_metric([listener], count)
    yield connections


def _float(bound: float) -> str:
    return repr(float(bound))


def _servers(upstreams: Mapping[str, list[Mapping[str, Any]]]) -> Iterator[Metric]:
    labels = ["upstream", "server"]
    healthy = GaugeMetricFamily(
        "nonstop_upstream_server_healthy",
        "1 when the server's health check passes (or it has none), else 0",
        labels=labels,
    )
    draining = GaugeMetricFamily(
        "nonstop_upstream_server_draining",
        "1 while the server is taken out of selection to drain, else 0",
        labels=labels,
    )
    selectable = GaugeMetricFamily(
        "nonstop_upstream_server_up",
        "1 when new requests may go to the server (state up), else 0",
        labels=labels,
    )
    in_flight = GaugeMetricFamily(
        "nonstop_upstream_server_in_flight",
        "Requests on the server now",
        labels=labels,
    )
    for upstream, servers in sorted(upstreams.items()):
        for server in servers:
            where = [upstream, str(server.get("address", ""))]
            healthy.add_metric(where, 1 if server.get("health_ok", True) else 0)
            draining.add_metric(where, 1 if server.get("draining") else 0)
            selectable.add_metric(where, 1 if server.get("state") == "up" else 0)
            conns = server.get("conns")
            if isinstance(conns, int):
                in_flight.add_metric(where, conns)
    yield from (healthy, draining, selectable, in_flight)


def _releases(apps: Mapping[str, Any]) -> Iterator[Metric]:
    info = InfoMetricFamily(
        "nonstop_release", "The release each app serves, and its slot", labels=["app"]
    )
    for app, status in sorted(apps.items()):
        live = status.get("live") if isinstance(status, Mapping) else None
        if live:
            info.add_metric([app], {"release": str(live["release"]), "slot": str(live["slot"])})
    yield info


def _events(counts: EventCounts) -> Iterator[Metric]:
    for name, text, table in (
        ("nonstop_deploys", "Deploys that ended, by app and outcome", counts.deploys),
        (
            "nonstop_rollbacks",
            "Rollbacks (nonstop rollback after a deploy ended) by app and outcome",
            counts.rollbacks,
        ),
    ):
        family = CounterMetricFamily(name, text, labels=["app", "outcome"])
        for (app, outcome), count in sorted(table.items()):
            family.add_metric([app, outcome], count)
        yield family
    reloads = CounterMetricFamily(
        "nonstop_config_reloads", "Configuration reloads, by outcome", labels=["outcome"]
    )
    for outcome, count in sorted(counts.reloads.items()):
        reloads.add_metric([outcome], count)
    yield reloads
