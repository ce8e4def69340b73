"""The data plane's counters: counted where the access log line is written, summed
across processes by a pure ``merge``."""

from __future__ import annotations

import json
import re
from pathlib import Path

from protocol_support import conf, get, make_proxy, ok

from nonstop.proxy.metrics import (
    BOUNDS,
    MAX_TALLIES,
    ProxyMetrics,
    Tally,
    empty,
    merge,
)


def _server(snapshot: dict[str, object], upstream: str, server: str) -> dict[str, object]:
    found = [
        s
        for s in snapshot["servers"]  # type: ignore[attr-defined]
        if (s["upstream"], s["server"]) == (upstream, server)
    ]
    assert len(found) == 1, snapshot
    return found[0]  # type: ignore[no-any-return]


def test_a_duration_lands_in_the_first_bucket_that_holds_it() -> None:
    tally = Tally()
    for seconds in (0.0, BOUNDS[0], BOUNDS[0] + 1e-9, BOUNDS[-1], BOUNDS[-1] + 1):
        tally.count(200, seconds)
    assert tally.buckets[0] == 2
    assert tally.buckets[1] == 1
    assert tally.buckets[len(BOUNDS) - 1] == 1
    assert tally.buckets[len(BOUNDS)] == 1  # +Inf
    assert tally.codes == [0, 0, 5, 0, 0, 0]


def test_the_written_out_buckets_are_the_bounds() -> None:
    for i, bound in enumerate(BOUNDS):
        for seconds, index in ((bound, i), (bound + 1e-9, i + 1)):
            tally = Tally()
            tally.count(200, seconds)
            assert tally.buckets == [int(j == index) for j in range(len(BOUNDS) + 1)]


def test_a_status_outside_100_to_599_counts_as_other() -> None:
    tally = Tally()
    for status in (0, 101, 444, 499, 503, 600):
        tally.count(status, 0.0)
    assert tally.codes == [2, 1, 0, 0, 2, 1]


def test_merge_sums_the_snapshots_of_several_processes() -> None:
    one, two = ProxyMetrics(), ProxyMetrics()
    one.tally("app", "10.0.0.1:80").count(200, 0.001)
    one.tally("app", "10.0.0.1:80").failed(connecting=True)
    two.tally("app", "10.0.0.1:80").count(502, 0.2)
    two.tally("app", "10.0.0.2:80").count(200, 0.001)
    one.retried("app")
    two.retried("app")
    a = one.snapshot({"in_flight": 2, "connections": {"127.0.0.1:80": 3}})
    b = two.snapshot({"in_flight": 1, "tunnels": 1, "connections": {"127.0.0.1:80": 1}})
    before = json.dumps([a, b])
    merged = merge([a, b])
    assert json.dumps([a, b]) == before  # the inputs are left as they were
    first = _server(merged, "app", "10.0.0.1:80")
    assert first["codes"] == [0, 0, 1, 0, 0, 1]
    assert first["connect_failures"] == 1
    assert sum(first["buckets"]) == 2  # type: ignore[arg-type]
    assert _server(merged, "app", "10.0.0.2:80")["codes"] == [0, 0, 1, 0, 0, 0]
    assert merged["retries"] == {"app": 2}
    assert (merged["in_flight"], merged["tunnels"]) == (3, 1)
    assert merged["connections"] == {"127.0.0.1:80": 4}
    assert merge([merged]) == merged
    assert merge([]) == empty()


def test_a_snapshot_is_plain_data() -> None:
    metrics = ProxyMetrics()
    metrics.tally("app", "10.0.0.1:80").count(200, 0.3)
    snapshot = metrics.snapshot({})
    assert json.loads(json.dumps(snapshot)) == snapshot


def test_past_the_bound_new_servers_are_counted_together() -> None:
    metrics = ProxyMetrics()
    for i in range(MAX_TALLIES + 10):
        metrics.tally(f"10.0.{i // 256}.{i % 256}:80", "x").count(200, 0.0)
    assert len(metrics.tallies) == MAX_TALLIES + 1
    assert metrics.tallies[("other", "")].codes[2] == 11


async def test_a_proxied_request_is_counted_for_its_server_with_its_duration(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    upstream = proxy.active()
    assert proxy.state.gauges()["in_flight"] == 1
    proxy.clock.advance(0.2)
    upstream.respond(ok(b"hi"))
    [resp] = client.responses()
    assert resp.status == 200
    snapshot = proxy.state.metrics.snapshot(proxy.state.gauges())
    counted = _server(snapshot, "app", upstream.address)
    assert counted["codes"] == [0, 0, 1, 0, 0, 0]
    assert counted["buckets"][BOUNDS.index(0.25)] == 1  # type: ignore[index]
    assert abs(counted["seconds"] - 0.2) < 1e-9  # type: ignore[operator]
    assert snapshot["in_flight"] == 0


async def test_a_failed_try_counts_a_failure_of_its_server_and_a_retry(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf())
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    first.hang_up()
    second = proxy.active()
    second.respond(ok(b"fine"))
    [resp] = client.responses()
    assert resp.status == 200
    snapshot = proxy.state.metrics.snapshot({})
    failed = _server(snapshot, "app", first.address)
    assert (failed["connect_failures"], failed["response_failures"]) == (0, 1)
    assert failed["codes"] == [0] * 6  # the request is the second server's
    assert _server(snapshot, "app", second.address)["codes"][2] == 1  # type: ignore[index]
    assert snapshot["retries"] == {"app": 1}


async def test_an_answer_of_nonstop_own_is_counted_without_a_server(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(location="return 204;"))
    client = proxy.client()
    client.send(get("/"), get("/again"))
    assert [r.status for r in client.responses()] == [204, 204]
    local = _server(proxy.state.metrics.snapshot({}), "", "")
    assert local["codes"] == [0, 0, 2, 0, 0, 0]


async def test_the_app_gets_the_request_id_the_json_log_has(tmp_path: Path) -> None:
    log = tmp_path / "access.json"
    proxy = make_proxy(tmp_path, conf(server=f"access_log {log} json;"))
    client = proxy.client()
    client.send(get("/a", "X-Request-ID: from-the-client"))
    upstream = proxy.active()
    head = upstream.take().decode("latin-1")
    proxy.clock.advance(0.05)
    upstream.respond(ok(b"hello"))
    assert client.responses()[0].status == 200
    sent = re.findall(r"(?im)^x-request-id: (.*)\r$", head)
    assert len(sent) == 1 and re.fullmatch("[0-9a-f]{32}", sent[0])  # the client's replaced
    proxy.state.access_logs.flush()
    [line] = log.read_text().splitlines()
    entry = json.loads(line)
    assert entry["request_id"] == sent[0]
    assert (entry["method"], entry["target"], entry["status"]) == ("GET", "/a", 200)
    assert entry["upstream"] == upstream.address
    assert entry["duration"] == 0.05  # a number, and the upstream's a string, as nginx writes it
    assert entry["upstream_duration"] == "0.050"
    assert entry["bytes"] == 5


async def test_a_configured_x_request_id_is_sent_instead(tmp_path: Path) -> None:
    proxy = make_proxy(
        tmp_path,
        conf(location="proxy_pass http://app; proxy_set_header X-Request-ID $http_x_trace;"),
    )
    client = proxy.client()
    client.send(get("/", "X-Trace: abc"))
    head = proxy.active().take().decode("latin-1")
    assert re.findall(r"(?im)^x-request-id: (.*)\r$", head) == ["abc"]


async def test_a_refused_head_is_logged_by_the_default_server_and_counted(tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    proxy = make_proxy(tmp_path, conf(server=f"access_log {log};"))
    client = proxy.client()
    client.send(b"GET / HTTP/1.1\r\nHost: example.test\r\nBad Header\r\n\r\n")
    assert client.responses()[0].status == 400
    proxy.state.access_logs.flush()
    [line] = log.read_text().splitlines()
    assert ' HTTP/1.1" 400 ' in line
    local = _server(proxy.state.metrics.snapshot({}), "", "")
    assert local["codes"] == [0, 0, 0, 0, 1, 0]
