"""``stub_status`` beside a real nginx: the same page, the same counts.

One worker each (nginx's counts are its workers' sum; nonstop's a worker's own). The
counts are compared as differences between two looks, so the connections each server's
start-up probe made do not matter: three requests on three connections, then the page
again, is four connections accepted and handled and four requests, in both.
"""

from __future__ import annotations

import re
import socket
from pathlib import Path

import pytest
from tests.support.backends import free_port
from tests.support.proc import NginxProcess, NonstopProcess, nginx_conf, start_engine

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]

PAGE = re.compile(
    rb"Active connections: (\d+) \nserver accepts handled requests\n (\d+) (\d+) (\d+) \n"
    rb"Reading: (\d+) Writing: (\d+) Waiting: (\d+) \n"
)


def _get(port: int, path: str) -> tuple[bytes, bytes]:
    """One request on a connection of its own, read to the server's close."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(f"GET {path} HTTP/1.1\r\nHost: t\r\nConnection: close\r\n\r\n".encode())
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head, _, body = data.partition(b"\r\n\r\n")
    return head, body


def _looks(engine: str, tmp_path: Path) -> tuple[bytes, list[int], list[int]]:
    prefix = tmp_path / engine
    prefix.mkdir()
    port = free_port()
    server = (
        f"server {{ listen 127.0.0.1:{port}; location / {{ return 204; }}"
        " location = /basic_status { stub_status; } }"
    )
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, server))
    proc: NginxProcess | NonstopProcess
    if engine == "nonstop-nginx":  # the nginx engine: the model rendered back for nginx
        proc = NonstopProcess(conf, [port], ["--engine", "nginx"]).start()
    else:
        proc = start_engine(engine, prefix, conf, port)
    try:
        head, first = _get(port, "/basic_status")
        for _ in range(3):
            assert _get(port, "/")[0].startswith(b"HTTP/1.1 204")
        _, second = _get(port, "/basic_status")
    finally:
        proc.stop()
    before, after = PAGE.fullmatch(first), PAGE.fullmatch(second)
    assert before is not None and after is not None, (first, second)
    return head, [int(n) for n in before.groups()], [int(n) for n in after.groups()]


def test_stub_status_shows_nginxs_page_and_counts(tmp_path: Path) -> None:
    nginx = _looks("nginx", tmp_path)
    nonstop = _looks("nonstop", tmp_path)
    rendered = _looks("nonstop-nginx", tmp_path)
    for head, before, after in (nginx, nonstop, rendered):
        assert b"Content-Type: text/plain" in head
        deltas = [a - b for a, b in zip(after[1:4], before[1:4], strict=True)]
        assert deltas == [4, 4, 4]  # accepts, handled, requests
        assert after[0] == 1 and after[4:] == [0, 1, 0]  # only the asking connection
