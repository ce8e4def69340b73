"""The same log_format through a real nginx and through nonstop, on the same requests.

Each engine writes a default-escaped and a JSON line per request; the fields that do not
depend on the clock, the connection or the server's own response head (time, ports,
request ids, bytes_sent) are compared whole.
"""

from __future__ import annotations

import base64
import json
import socket
import time
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, nginx_conf, start_engine

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]

FIELDS = (
    "$remote_addr|$remote_user|$request|$status|$body_bytes_sent|$http_referer|"
    "$http_user_agent|$http_x_odd|$request_method|$server_name|$host|$scheme|$https|"
    "$request_length|$sent_http_x_missing|$upstream_status|$upstream_cache_status|$args|"
    "$uri|$request_uri|$connection_requests|$pipe|$server_protocol|$content_length"
)
JSON_FIELDS = (
    "{"
    + ",".join(
        f'"{name}":"${name}"'
        for name in (
            "remote_user",
            "request",
            "status",
            "http_referer",
            "http_user_agent",
            "http_x_odd",
            "args",
            "upstream_status",
            "upstream_cache_status",
            "request_length",
        )
    )
    + "}"
)

AUTH = "Authorization: Basic " + base64.b64encode(b"alice:secret").decode()
REQUESTS = [
    ("GET", "/a?x=1&y=%22", ('Referer: http://r.test/?q="1"', "User-Agent: curl/8 (\\x)")),
    ("GET", "/odd", ('X-Odd: q"b\\c\té\xe9'.encode().decode("latin-1"), AUTH)),
    ("GET", "/empty?", ()),
    ("HEAD", "/head", ()),
    ("POST", "/post", ("Content-Length: 5",)),
    ("GET", "/local", ("User-Agent: ", "Referer: -")),
    ("GET", "/quiet", ()),
]


def _config(port: int, prefix: Path, backend: str) -> str:
    return nginx_conf(
        prefix,
        f"""
  log_format diff '{FIELDS}';
  log_format diffjson escape=json '{JSON_FIELDS}';
  upstream app {{ server {backend}; }}
  server {{
    listen 127.0.0.1:{port};
    server_name example.test;
    access_log {prefix}/logs/diff.log diff;
    access_log {prefix}/logs/json.log diffjson buffer=4k flush=1s;
    access_log {prefix}/logs/combined.log;
    location / {{ proxy_pass http://app; }}
    location /local {{ return 204; }}
    location /quiet {{ access_log off; return 204; }}
  }}""",
    )


def _send(port: int, method: str, target: str, headers: tuple[str, ...]) -> None:
    head = [f"{method} {target} HTTP/1.1", "Host: Example.TEST:80", *headers, "Connection: close"]
    data = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1")
    if method == "POST":
        data += b"hello"
    with socket.create_connection(("127.0.0.1", port), timeout=5) as sock:
        sock.sendall(data)
        while sock.recv(65536):
            pass


def _read(path: Path, count: int) -> list[str]:
    deadline = time.monotonic() + 10
    lines: list[str] = []
    while time.monotonic() < deadline:
        if path.exists():
            lines = path.read_bytes().decode("latin-1").splitlines()
            if len(lines) >= count:
                return lines
        time.sleep(0.05)
    raise AssertionError(f"{path}: {len(lines)} lines after 10 s, wanted {count}")


def _logs(engine: str, tmp: Path) -> dict[str, list[str]]:
    backend = RecordingBackend(name="app").start()
    port = free_port()
    prefix = tmp / engine
    (prefix / "logs").mkdir(parents=True)
    conf = prefix / "nginx.conf"
    conf.write_text(_config(port, prefix, backend.address))
    proc = start_engine(engine, prefix, conf, port)
    try:
        for method, target, headers in REQUESTS:
            _send(port, method, target, headers)
        logged = len(REQUESTS) - 1  # /quiet has access_log off
        out = {
            "diff": _read(prefix / "logs" / "diff.log", logged),
            "combined": _read(prefix / "logs" / "combined.log", logged),
        }
    finally:
        proc.stop()
        backend.stop()
    out["json"] = _read(prefix / "logs" / "json.log", logged)  # the stop wrote the buffer
    return out


def test_log_lines_are_the_same_through_nginx_and_nonstop(tmp_path: Path) -> None:
    nginx = _logs("nginx", tmp_path)
    nonstop = _logs("nonstop", tmp_path)
    assert nonstop["diff"] == nginx["diff"]
    assert [json.loads(line.encode("latin-1")) for line in nonstop["json"]] == [
        json.loads(line.encode("latin-1")) for line in nginx["json"]
    ]

    def untimed(line: str) -> str:  # combined without its [$time_local]
        before, _, after = line.partition(" [")
        return before + " " + after.partition("] ")[2]

    assert [untimed(line) for line in nonstop["combined"]] == [
        untimed(line) for line in nginx["combined"]
    ]
