"""GET /metrics' text, made from plain data: read back with prometheus_client's parser."""

from __future__ import annotations

from typing import Any

from prometheus_client.parser import text_string_to_metric_families

from nonstop.admin.metrics import EventCounts, Scrape, exposition
from nonstop.events import DeployEvent, HealthEvent, ReloadEvent
from nonstop.proxy.metrics import BOUNDS, ProxyMetrics, merge

BUILD = {"version": "1.2.3", "python": "3.11.7", "data_plane": "compiled"}


def parsed(scrape: Scrape) -> dict[str, Any]:
    """family name -> {(sample name, sorted labels): value}, and each family's type."""
    text = exposition(scrape).decode()
    out: dict[str, Any] = {}
    for family in text_string_to_metric_families(text):
        out[family.name] = (
            family.type,
            {(s.name, tuple(sorted(s.labels.items()))): s.value for s in family.samples},
        )
    return out


def scrape_of(data_plane: dict[str, Any] | None, **kw: Any) -> Scrape:
    return Scrape(
        data_plane=data_plane,
        upstreams=kw.get("upstreams", {}),
        apps=kw.get("apps", {}),
        events=kw.get("events", EventCounts()),
        build=BUILD,
    )


def two_processes() -> dict[str, Any]:
    one, two = ProxyMetrics(), ProxyMetrics()
    one.tally("api", "10.0.0.1:80").count(200, 0.003)
    one.tally("api", "10.0.0.1:80").count(503, 0.3)
    two.tally("api", "10.0.0.2:80").count(200, 0.02)
    two.tally("api", "10.0.0.2:80").failed(connecting=True)
    two.local.count(404, 0.0)
    two.retried("api")
    return merge(
        [
            one.snapshot({"in_flight": 1, "connections": {"127.0.0.1:80": 2}}),
            two.snapshot({"in_flight": 2, "connections": {"127.0.0.1:80": 1}}),
        ]
    )


def test_requests_are_counters_by_upstream_server_and_status_class() -> None:
    families = parsed(scrape_of(two_processes()))
    kind, samples = families["nonstop_requests"]
    assert kind == "counter"
    server = (("server", "10.0.0.1:80"), ("upstream", "api"))
    assert samples[("nonstop_requests_total", (("code", "2xx"), *server))] == 1
    assert samples[("nonstop_requests_total", (("code", "5xx"), *server))] == 1
    local = (("code", "4xx"), ("server", ""), ("upstream", ""))
    assert samples[("nonstop_requests_total", local)] == 1
    assert sum(samples.values()) == 4


def test_the_duration_histogram_is_cumulative_per_upstream() -> None:
    kind, samples = parsed(scrape_of(two_processes()))["nonstop_request_duration_seconds"]
    assert kind == "histogram"

    def bucket(le: str) -> float:
        value: float = samples[
            ("nonstop_request_duration_seconds_bucket", (("le", le), ("upstream", "api")))
        ]
        return value

    assert bucket("0.005") == 1
    assert bucket("0.025") == 2
    assert bucket("0.5") == bucket("10.0") == bucket("+Inf") == 3
    assert samples[("nonstop_request_duration_seconds_count", (("upstream", "api"),))] == 3
    total = samples[("nonstop_request_duration_seconds_sum", (("upstream", "api"),))]
    assert abs(total - 0.323) < 1e-9
    assert len([k for k in samples if k[0].endswith("_bucket")]) == 2 * (len(BOUNDS) + 1)


def test_failures_retries_and_what_is_open_now() -> None:
    families = parsed(scrape_of(two_processes()))
    _, failures = families["nonstop_upstream_failures"]
    key = (("server", "10.0.0.2:80"), ("stage", "connect"), ("upstream", "api"))
    assert failures[("nonstop_upstream_failures_total", key)] == 1
    assert sum(failures.values()) == 1
    _, retries = families["nonstop_upstream_retries"]
    assert retries == {("nonstop_upstream_retries_total", (("upstream", "api"),)): 1}
    assert families["nonstop_requests_in_flight"][1] == {("nonstop_requests_in_flight", ()): 3}
    _, connections = families["nonstop_connections"]
    assert connections == {("nonstop_connections", (("listener", "127.0.0.1:80"),)): 3}


def test_servers_releases_and_build_come_from_the_control_plane() -> None:
    upstreams = {
        "web": [
            {"address": "127.0.0.1:8001", "state": "up", "health_ok": True, "conns": 4},
            {"address": "127.0.0.1:8002", "state": "draining", "draining": True, "conns": 1},
            {"address": "127.0.0.1:8003", "state": "unhealthy", "health_ok": False},
        ]
    }
    apps = {"web": {"live": {"release": "v7", "slot": 1}}, "idle": {"live": None}}
    families = parsed(scrape_of(None, upstreams=upstreams, apps=apps))
    assert "nonstop_requests" not in families  # an engine that counts none: no such series

    def values(name: str) -> list[float]:
        return [v for _, v in sorted(families[name][1].items())]

    assert values("nonstop_upstream_server_healthy") == [1, 1, 0]
    assert values("nonstop_upstream_server_draining") == [0, 1, 0]
    assert values("nonstop_upstream_server_up") == [1, 0, 0]
    assert values("nonstop_upstream_server_in_flight") == [4, 1]
    release = (("app", "web"), ("release", "v7"), ("slot", "1"))
    assert families["nonstop_release_info"][1] == {("nonstop_release_info", release): 1}
    build = tuple(sorted(BUILD.items()))
    assert families["nonstop_build_info"][1] == {("nonstop_build_info", build): 1}


def test_deploys_rollbacks_and_reloads_are_counted_from_the_event_stream() -> None:
    counts = EventCounts()

    def done(app: str, outcome: str, kind: str) -> DeployEvent:
        return DeployEvent(app, 1, "done", 1.0, "", (("outcome", outcome), ("kind", kind)))

    for event in (
        DeployEvent("web", 1, "begin", 0.0, ""),
        done("web", "ok", "deploy"),
        done("web", "rolled_back", "deploy"),
        done("web", "ok", "rollback"),
        done("api", "refused", "deploy"),
        HealthEvent("api", "127.0.0.1:1", False, "refused"),
        ReloadEvent(True),
        ReloadEvent(False, "bad"),
        ReloadEvent(True),
    ):
        counts.observe(event)
    families = parsed(scrape_of(None, events=counts))
    _, deploys = families["nonstop_deploys"]
    assert deploys == {
        ("nonstop_deploys_total", (("app", "api"), ("outcome", "refused"))): 1,
        ("nonstop_deploys_total", (("app", "web"), ("outcome", "ok"))): 1,
        ("nonstop_deploys_total", (("app", "web"), ("outcome", "rolled_back"))): 1,
    }
    _, rollbacks = families["nonstop_rollbacks"]
    assert rollbacks == {("nonstop_rollbacks_total", (("app", "web"), ("outcome", "ok"))): 1}
    _, reloads = families["nonstop_config_reloads"]
    assert reloads == {
        ("nonstop_config_reloads_total", (("outcome", "ok"),)): 2,
        ("nonstop_config_reloads_total", (("outcome", "refused"),)): 1,
    }


def test_label_values_are_escaped_and_read_back_as_they_were() -> None:
    metrics = ProxyMetrics()
    odd = 'up"stream\\with\nnewline'
    metrics.tally(odd, "unix:/run/a b.sock").count(200, 0.0)
    _, samples = parsed(scrape_of(metrics.snapshot({})))["nonstop_requests"]
    labels = (("code", "2xx"), ("server", "unix:/run/a b.sock"), ("upstream", odd))
    assert samples == {("nonstop_requests_total", labels): 1}
