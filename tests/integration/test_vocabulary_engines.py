"""One vocabulary, both engines: what `check` accepts, `run` serves and nginx accepts."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from tests.support.proc import raw_request

from nonstop.config.vocabulary import VARIABLES

SET_EVERY_VARIABLE = "\n".join(
    f"      proxy_set_header X-V-{name.replace('_', '-')} ${name};"
    for name in (*VARIABLES, "http_user_agent", "arg_x", "cookie_s")
)


def _conf(upstream: str) -> str:
    return f"""
events {{}}
http {{
  access_log off;
  upstream app {{
    server {upstream};
  }}
  server {{
    listen 127.0.0.1:{{port}};
    location / {{
      proxy_pass http://app;
{SET_EVERY_VARIABLE}
    }}
  }}
}}
"""


@pytest.mark.nginx
def test_check_with_the_nginx_engine_accepts_every_variable_of_the_vocabulary(
    tmp_path: Path,
) -> None:
    conf = tmp_path / "site.conf"
    conf.write_text(_conf("127.0.0.1:9").replace("{port}", "8081"))
    done = subprocess.run(
        [sys.executable, "-m", "nonstop", "check", "--engine", "nginx", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert "test is successful" in done.stderr


def test_the_embedded_engine_forwards_remote_port_and_server_addr(backends, proxy) -> None:
    (b1,) = backends(1)
    p = proxy(_conf(b1.address))
    with socket.create_connection(("127.0.0.1", p.port), timeout=10) as sock:
        client_port = sock.getsockname()[1]
        sock.sendall(b"GET /echo?x=1 HTTP/1.1\r\nHost: h\r\nConnection: close\r\n\r\n")
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    assert data.startswith(b"HTTP/1.1 200")
    seen = {k.lower(): v for k, v in json.loads(data.split(b"\r\n\r\n", 1)[1])["headers"]}
    assert seen["x-v-remote-port"] == str(client_port)
    assert seen["x-v-server-addr"] == "127.0.0.1"
    assert seen["x-v-server-port"] == str(p.port)
    assert seen["x-v-request"] == "GET /echo?x=1 HTTP/1.1"
    assert seen["x-v-arg-x"] == "1"
    assert raw_request(p.port, b"GET / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.1 200")
