"""The same nginx.conf run by a real nginx and by nonstop: the backends see the same thing.

Each scenario sends the same requests through both and compares the order in which the
backends were chosen and the statuses clients got.
"""

from __future__ import annotations

import http.client
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, nginx_conf, start_engine

pytestmark = pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed")


def config(port: int, prefix: Path, upstream: str, location: str = "") -> str:
    return nginx_conf(
        prefix,
        f"""
  upstream app {{
    {upstream}
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      {location}
    }}
  }}""",
    )


def run(
    engine: str,
    tmp: Path,
    upstream: str,
    requests: list[tuple[str, str, str | None]],
    location: str = "",
) -> list[tuple[int, str]]:
    port = free_port()
    prefix = tmp / engine
    prefix.mkdir()
    conf = prefix / "nginx.conf"
    conf.write_text(config(port, prefix, upstream, location))
    proc = start_engine(engine, prefix, conf, port)
    out = []
    try:
        for method, path, source in requests:
            c = http.client.HTTPConnection(
                "127.0.0.1", port, timeout=10, source_address=(source, 0) if source else None
            )
            c.request(method, path, body=b"x" if method == "POST" else None)
            resp = c.getresponse()
            body = resp.read().decode()
            # error pages name the server; only upstream answers are compared by body
            out.append((resp.status, body if resp.status == 200 else ""))
            c.close()
    finally:
        proc.stop()
    return out


SCENARIOS = {
    "weighted_round_robin": ("{a} weight=5; {b}; {c};", [("GET", "/", None)] * 14, ""),
    "dead_server_failover": (
        "{dead}; {a}; {b} weight=2;",
        [("GET", "/", None)] * 9,
        "",
    ),
    "post_not_retried_after_close": (
        "{closer}; {a};",
        [("POST", "/", None), ("GET", "/", None), ("POST", "/", None)],
        "",
    ),
    "hash_argument": (
        "hash $arg_k; {a}; {b}; {c};",
        [("GET", f"/?k={k}", None) for k in ("user1", "user2", "/a/b", "z", "q", "user1")],
        "",
    ),
    "hash_consistent": (
        "hash $arg_k consistent; {a}; {b} weight=2; {c};",
        [("GET", f"/?k={k}", None) for k in ("user1", "user2", "/a/b", "k9", "k10")],
        "",
    ),
    "ip_hash": (
        "ip_hash; {a}; {b}; {c};",
        [("GET", "/", f"127.0.{n}.{n}") for n in range(1, 13)],
        "",
    ),
    "least_conn_weighted": ("least_conn; {a} weight=2; {b};", [("GET", "/", None)] * 6, ""),
    "backup": ("{dead}; {a} backup;", [("GET", "/", None)] * 3, ""),
    "status_retry": (
        "{s503}; {a};",
        [("GET", "/", None)] * 4,
        "proxy_next_upstream error timeout http_503;",
    ),
}


@pytest.mark.nginx
@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_backends_see_the_same_choices_through_nginx_and_nonstop(name: str, tmp_path: Path):
    template, requests, location = SCENARIOS[name]
    results = {}
    # The same ports for both runs: consistent hashing depends on the address strings.
    keys = ("a", "b", "c", "closer", "s503")
    ports = {key: free_port() for key in keys}
    dead = free_port()
    for engine in ("nginx", "nonstop"):
        started = {key: RecordingBackend(name=key, port=ports[key]).start() for key in keys}
        started["closer"].fail_mode = "close"
        started["s503"].fail_mode = "status/503"
        try:
            fields = {k: f"server {v.address}" for k, v in started.items()}
            fields["dead"] = f"server 127.0.0.1:{dead}"
            upstream = template.format(**fields)
            answers = run(engine, tmp_path, upstream, requests, location)
            seen = {k: len(v.received) for k, v in started.items()}
        finally:
            for backend in started.values():
                backend.stop()
        results[engine] = (answers, seen)
    assert results["nonstop"] == results["nginx"]
