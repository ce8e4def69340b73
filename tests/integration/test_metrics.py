"""GET /metrics of a real daemon on real sockets, checked against its JSON access log."""

from __future__ import annotations

import http.client
import json
import re
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, Load, deployed
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def scrape(port: int) -> Samples:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as answer:
        assert answer.status == 200
        assert answer.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text = answer.read().decode()
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def total(samples: Samples, name: str, **labels: str) -> float:
    want = set(labels.items())
    return sum(v for (n, have), v in samples.items() if n == name and want <= have)


def log_lines(path: Path) -> list[dict[str, object]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines()]


class MetricsDaemon(AppDaemon):
    """The test app's daemon with a JSON access log and an HTTP admin listener."""

    def write(self, command: str, **options: object) -> None:
        super().write(command, **options)
        if not hasattr(self, "admin_port"):
            self.admin_port = free_port()
        with self.config.open("a") as handle:  # the [[servers]] table is the last one
            handle.write('access_log = "logs/access.log"\naccess_log_format = "json"\n')
            handle.write(f'\n[admin]\nlisten = "127.0.0.1:{self.admin_port}"\n')

    @property
    def log(self) -> Path:
        return self.dir / "logs" / "access.log"

    def scrape(self) -> Samples:
        return scrape(self.admin_port)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[MetricsDaemon]:
    d = MetricsDaemon(tmp_path / "d", pyapp_command(), verify="300ms")
    d.start()
    try:
        yield d
    finally:
        d.stop()


def test_the_request_counters_equal_the_access_log_lines_under_load(
    daemon: MetricsDaemon,
) -> None:
    deployed(daemon, "v1")
    with Load(daemon.port, clients=8, limit=30.0, slow_ms=20) as load:
        load.wait_requests(400, timeout=30.0)
    assert load.failed == []
    deadline = time.monotonic() + 10.0
    while True:  # the log is written four times a second: wait for the last batch
        lines = log_lines(daemon.log)
        samples = daemon.scrape()
        counted = total(samples, "nonstop_requests_total")
        if counted == len(lines) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert counted == len(lines) >= load.ok >= 400
    by_server = Counter((str(line["upstream"]), f"{line['status']}"[0] + "xx") for line in lines)
    for (server, code), count in by_server.items():
        assert total(samples, "nonstop_requests_total", server=server, code=code) == count
    assert total(samples, "nonstop_request_duration_seconds_count", upstream="web") == len(lines)
    assert total(samples, "nonstop_requests_in_flight") == 0
    ids = [str(line["request_id"]) for line in lines]
    assert all(re.fullmatch("[0-9a-f]{32}", i) for i in ids) and len(set(ids)) == len(ids)


def test_a_scrape_shows_the_live_release_and_each_deploy_and_rollback_by_outcome(
    daemon: MetricsDaemon,
) -> None:
    deployed(daemon, "v1")
    deployed(daemon, "v2")
    samples = daemon.scrape()
    assert total(samples, "nonstop_deploys_total", app="web", outcome="ok") == 2
    [(_, live)] = [k for k in samples if k[0] == "nonstop_release_info"]
    assert dict(live)["release"] == "v2" and dict(live)["app"] == "web"
    done = daemon.cli("rollback", "web")
    assert done.returncode == 0, done.stdout + done.stderr
    samples = daemon.scrape()
    assert total(samples, "nonstop_rollbacks_total", app="web", outcome="ok") == 1
    assert total(samples, "nonstop_release_info", app="web", release="v1") == 1
    assert total(samples, "nonstop_release_info", release="v2") == 0
    build = [dict(k[1]) for k in samples if k[0] == "nonstop_build_info"]
    assert build and build[0]["data_plane"] in ("compiled", "interpreted")
    ports = [s for s in samples if s[0] == "nonstop_upstream_server_healthy"]
    assert ports and all(samples[s] == 1 for s in ports)


def test_a_dead_server_shows_as_connect_failures_and_retries_and_the_app_gets_the_logged_id(
    tmp_path: Path,
) -> None:
    live = RecordingBackend(name="live").start()
    dead = free_port()
    port, admin = free_port(), free_port()
    config = tmp_path / "nonstop.toml"
    config.write_text(
        f"""
state_dir = "state"
[admin]
listen = "127.0.0.1:{admin}"
[upstreams.api]
servers = ["127.0.0.1:{dead}", "{live.address}"]
[[servers]]
listen = ["127.0.0.1:{port}"]
access_log = "logs/access.log"
access_log_format = "json"
locations = [ {{ path = "/", pass = "api" }} ]
"""
    )
    proc = NonstopProcess(config, [port]).start()
    try:
        for _ in range(6):
            conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
            conn.request("GET", "/x", headers={"X-Request-ID": "chosen-by-the-client"})
            assert conn.getresponse().status == 200
            conn.close()
        samples = scrape(admin)
        failures = total(
            samples,
            "nonstop_upstream_failures_total",
            upstream="api",
            server=f"127.0.0.1:{dead}",
            stage="connect",
        )
        assert failures >= 1  # the dead one fails out (max_fails 1) after its first failure
        assert total(samples, "nonstop_upstream_retries_total", upstream="api") == failures
        assert total(samples, "nonstop_requests_total", server=live.address, code="2xx") == 6
        sent = [r.header("x-request-id") for r in live.received]
        deadline = time.monotonic() + 5.0
        while len(log_lines(tmp_path / "logs" / "access.log")) < 6 and time.monotonic() < deadline:
            time.sleep(0.05)
        logged = [line["request_id"] for line in log_lines(tmp_path / "logs" / "access.log")]
        assert sent == logged and "chosen-by-the-client" not in sent
    finally:
        proc.stop()
        live.stop()
