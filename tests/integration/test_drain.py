"""``nonstop drain`` / ``undrain`` on a front's static upstream, on real sockets, with the
embedded engine and with a real nginx (``engine = "nginx"``)."""

from __future__ import annotations

import http.client
import json
import threading
import time

import pytest
from tests.integration.conftest import Proxy
from tests.support.backends import RecordingBackend

from nonstop.admin.client import AdminClient
from nonstop.engines.nginx import find_nginx

CONF = """
events {{}}
http {{
  access_log off;
  upstream app {{
    server {a};
    server {b};
    keepalive 8;
  }}
  server {{
    listen 127.0.0.1:{{port}};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

NGINX_TOML = """
state_dir = "state"
engine = "nginx"

[upstreams.app]
servers = [ {{ address = "{a}" }}, {{ address = "{b}" }} ]
keepalive = 8

[[servers]]
listen = ["127.0.0.1:{{port}}"]
locations = [ {{ path = "/", pass = "app" }} ]
"""

ENGINES = [
    pytest.param((CONF, "nginx.conf"), id="embedded"),
    pytest.param(("worker_processes 2;\n" + CONF, "nginx.conf"), id="embedded, 2 workers"),
    pytest.param(
        (NGINX_TOML, "nonstop.toml"),
        id="nginx",
        marks=pytest.mark.skipif(find_nginx() is None, reason="nginx is not installed"),
    ),
]


def _get(port: int, path: str, results: list[tuple[int, str]]) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        results.append((resp.status, resp.getheader("X-Backend") or ""))
        resp.read()
    finally:
        conn.close()


def _slow_requests(
    p: Proxy, server: RecordingBackend, path: str, count: int
) -> tuple[list[tuple[int, str]], list[threading.Thread]]:
    """Send ``count`` slow requests at once; return once one of them reached ``server``."""
    answers: list[tuple[int, str]] = []
    threads = [threading.Thread(target=_get, args=(p.port, path, answers)) for _ in range(count)]
    for thread in threads:
        thread.start()
    deadline = time.monotonic() + 10
    while not any(seen.startswith("/sleep") for seen in server.paths()):
        assert time.monotonic() < deadline, "no slow request reached the server to drain"
        time.sleep(0.01)
    return answers, threads


def _state(p: Proxy, address: str) -> str:
    done = p.process.cli("status", "--json")
    assert done.returncode == 0, done.stderr
    servers = json.loads(done.stdout)["upstreams"]["app"]
    return str(next(s["state"] for s in servers if s["address"] == address))


@pytest.mark.parametrize("engine", ENGINES)
def test_drain_waits_for_requests_in_flight_then_no_request_goes_to_the_server(
    backends, proxy, engine: tuple[str, str]
) -> None:
    b1, b2 = backends(2)
    p = proxy(engine[0].format(a=b1.address, b=b2.address), engine[1])
    slow, threads = _slow_requests(p, b1, "/sleep/1.5", 4)
    drain = p.process.cli("drain", "app", b1.address, "--timeout", "20s")
    finished_before_drain_returned = len(slow)
    for thread in threads:
        thread.join(30)
    assert drain.returncode == 0, drain.stderr
    assert f"{b1.address} of upstream app is drained" in drain.stderr
    assert finished_before_drain_returned == 4  # drain returned after the slow ones ended
    assert all(status == 200 for status, _ in slow)
    assert _state(p, b1.address) == "draining"
    b1.clear()
    answers: list[tuple[int, str]] = []
    for _ in range(20):
        _get(p.port, "/", answers)
    assert answers == [(200, b2.name)] * 20 and b1.paths() == []
    # a reload keeps it drained
    assert p.process.cli("reload").returncode == 0
    answers.clear()
    for _ in range(10):
        _get(p.port, "/", answers)
    assert {backend for _, backend in answers} == {b2.name}
    undrain = p.process.cli("undrain", "app", b1.address)
    assert undrain.returncode == 0, undrain.stderr
    answers.clear()
    for _ in range(10):
        _get(p.port, "/", answers)
    assert {backend for _, backend in answers} == {b1.name, b2.name}
    assert _state(p, b1.address) == "up"


@pytest.mark.parametrize("engine", ENGINES)
@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["nope", "127.0.0.1:1"], 'no upstream "nope"'),
        (["app", "127.0.0.1:1"], "has no server 127.0.0.1:1"),
    ],
)
def test_draining_what_the_config_does_not_have_is_a_usage_error(
    backends, proxy, args: list[str], message: str, engine: tuple[str, str]
) -> None:
    b1, b2 = backends(2)
    p = proxy(engine[0].format(a=b1.address, b=b2.address), engine[1])
    done = p.process.cli("drain", *args)
    assert done.returncode == 2 and message in done.stderr


@pytest.mark.parametrize("engine", ENGINES)
def test_a_drain_that_outlasts_its_timeout_says_so_and_the_server_stays_drained(
    backends, proxy, engine: tuple[str, str]
) -> None:
    b1, b2 = backends(2)
    p = proxy(engine[0].format(a=b1.address, b=b2.address), engine[1])
    slow, threads = _slow_requests(p, b1, "/sleep/3", 2)
    done = p.process.cli("drain", "app", b1.address, "--timeout", "200ms", "--json")
    assert done.returncode == 1
    answer = json.loads(done.stdout)
    assert answer["in_flight"] >= 1 and "stays drained" in answer["error"]
    for thread in threads:
        thread.join(30)
    assert all(status == 200 for status, _ in slow)  # in-flight requests were not cut
    assert _state(p, b1.address) == "draining"


@pytest.mark.parametrize("engine", ENGINES)
def test_one_request_drains_several_servers_together_and_undrains_them(
    backends, proxy, engine: tuple[str, str]
) -> None:
    b1, b2, b3 = backends(3)
    text = engine[0].format(a=b1.address, b=b2.address)
    third = (
        f"server {b3.address};" if engine[1] == "nginx.conf" else f'{{ address = "{b3.address}" }}'
    )
    if engine[1] == "nginx.conf":
        text = text.replace(f"server {b2.address};", f"server {b2.address};\n    {third}")
    else:
        text = text.replace(
            f'{{ address = "{b2.address}" }}', f'{{ address = "{b2.address}" }}, {third}'
        )
    p = proxy(text, engine[1])
    status = json.loads(p.process.cli("status", "--json").stdout)
    admin = AdminClient(status["admin_socket"])  # where the daemon says it listens
    sent = time.monotonic()
    slow, threads = _slow_requests(p, b1, "/sleep/1", 2)
    pair = [b1.address, b2.address]
    answer = admin.call("drain", upstream="app", addresses=pair, timeout=20)
    # answered once the slow request (1 s at b1, sent after ``sent``) was done
    assert time.monotonic() - sent >= 1.0
    for thread in threads:
        thread.join(30)
    assert answer == {"ok": True, "upstream": "app", "addresses": pair, "in_flight": 0}
    assert [status for status, _ in slow] == [200, 200]
    assert [_state(p, a) for a in (*pair, b3.address)] == ["draining", "draining", "up"]
    answers: list[tuple[int, str]] = []
    for _ in range(10):
        _get(p.port, "/", answers)
    assert answers == [(200, b3.name)] * 10
    assert admin.call("undrain", upstream="app", addresses=pair)["ok"]
    assert [_state(p, a) for a in (*pair, b3.address)] == ["up", "up", "up"]
