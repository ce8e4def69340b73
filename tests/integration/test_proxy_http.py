"""The embedded proxy on real sockets: framing, headers, bodies, errors."""

from __future__ import annotations

import json
import socket
import time

from tests.support.backends import RecordingBackend
from tests.support.proc import raw_request


def conf(upstream: str, location: str = "", server: str = "", http: str = "") -> str:
    return f"""
events {{}}
http {{
  access_log off;
  {http}
  upstream app {{
    {upstream}
  }}
  server {{
    listen 127.0.0.1:{{port}};
    {server}
    location / {{
      proxy_pass http://app;
      {location}
    }}
  }}
}}
"""


def servers(*backends: object, extra: str = "") -> str:
    return "\n".join(f"server {b.address}{extra};" for b in backends)  # type: ignore[attr-defined]


def test_get_is_proxied_with_nginx_default_host_header(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    status, headers, body = p.request("GET", "/echo?x=1")
    assert status == 200
    seen = json.loads(body)
    assert seen["target"] == "/echo?x=1"
    hdrs = {k.lower(): v for k, v in seen["headers"]}
    assert hdrs["host"] == "app"  # $proxy_host, nginx's default
    assert hdrs["connection"] == "close"  # no keepalive configured
    assert headers["server"] == "nonstop"


def test_xff_append_joins_incoming_lines_with_comma(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1), "proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"))
    data = raw_request(
        p.port,
        b"GET /echo HTTP/1.1\r\nHost: a\r\nX-Forwarded-For: 1.2.3.4\r\n"
        b"X-Forwarded-For: 5.6.7.8, 9.9.9.9\r\nConnection: close\r\n\r\n",
    )
    seen = json.loads(data.split(b"\r\n\r\n", 1)[1])
    xff = [v for k, v in seen["headers"] if k.lower() == "x-forwarded-for"]
    assert xff == ["1.2.3.4, 5.6.7.8, 9.9.9.9, 127.0.0.1"]


def test_xff_replace_with_remote_addr_and_empty_value_removes_header(backends, proxy):
    (b1,) = backends(1)
    p = proxy(
        conf(
            servers(b1),
            'proxy_set_header X-Forwarded-For $remote_addr; proxy_set_header Accept-Encoding "";'
            " proxy_set_header Host $http_host;",
        )
    )
    _, _, body = p.request(
        "GET", "/echo", headers={"X-Forwarded-For": "6.6.6.6", "Accept-Encoding": "gzip"}
    )
    hdrs = json.loads(body)["headers"]
    names = [k.lower() for k, _ in hdrs]
    assert ("X-Forwarded-For", "127.0.0.1") in [(k, v) for k, v in hdrs]
    assert "accept-encoding" not in names
    assert dict((k.lower(), v) for k, v in hdrs)["host"] == f"127.0.0.1:{p.port}"


def test_hop_by_hop_headers_and_connection_named_ones_are_not_forwarded(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    data = raw_request(
        p.port,
        b"GET /echo HTTP/1.1\r\nHost: a\r\nConnection: close, X-Secret\r\nX-Secret: 1\r\n"
        b"Keep-Alive: timeout=5\r\nTE: trailers\r\nProxy-Connection: keep-alive\r\n"
        b"X-Kept: yes\r\n\r\n",
    )
    names = [k.lower() for k, _ in json.loads(data.split(b"\r\n\r\n", 1)[1])["headers"]]
    for gone in ("x-secret", "keep-alive", "te", "proxy-connection"):
        assert gone not in names
    assert "x-kept" in names


def test_keepalive_pool_reuses_upstream_connections(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1) + " keepalive 4;", 'proxy_set_header Connection "";'))
    for _ in range(20):
        assert p.request("GET", "/")[0] == 200
    assert len(b1.received) == 20
    assert b1.connections <= 2


def test_request_bodies_are_streamed_with_length_and_chunked(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    status, _, body = p.request("POST", "/echo", body=b"x" * 100_000)
    assert status == 200
    assert len(json.loads(body)["body"]) == 100_000
    data = raw_request(
        p.port,
        b"POST /echo HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n"
        b"\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n",
    )
    assert json.loads(data.split(b"\r\n\r\n", 1)[1])["body"] == "hello world"


def test_chunked_response_is_relayed_chunked_to_http11_and_raw_to_http10(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    status, headers, body = p.request("GET", "/chunked")
    assert (status, body) == (200, b"hello world")
    assert headers["transfer-encoding"] == "chunked"
    data = raw_request(p.port, b"GET /chunked HTTP/1.0\r\n\r\n")
    assert data.endswith(b"\r\n\r\nhello world")


def test_large_response_arrives_whole(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    status, _, body = p.request("GET", "/big/5000000")
    assert status == 200 and len(body) == 5_000_000


def test_head_and_204_have_no_body_and_connection_stays_usable(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1) + " keepalive 2;", 'proxy_set_header Connection "";'))
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(b"HEAD /big/100 HTTP/1.1\r\nHost: a\r\n\r\n")
        head = sock.recv(65536)
        assert b"Content-Length: 100" in head and head.endswith(b"\r\n\r\n")
        sock.sendall(b"GET /status/204 HTTP/1.1\r\nHost: a\r\n\r\n")
        head = sock.recv(65536)
        assert head.startswith(b"HTTP/1.1 204") and head.endswith(b"\r\n\r\n")
        sock.sendall(b"GET / HTTP/1.1\r\nHost: a\r\nConnection: close\r\n\r\n")
        assert sock.recv(65536).endswith(b"b1")


def test_expect_100_continue_gets_interim_response(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(
            b"POST /echo HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n"
        )
        assert sock.recv(1024) == b"HTTP/1.1 100 Continue\r\n\r\n"
        sock.sendall(b"hello")
        data = sock.recv(65536)
    assert data.startswith(b"HTTP/1.1 200")
    assert b'"body": "hello"' in data
    names = [k.lower() for k, _ in b1.received[0].headers]
    assert "expect" not in names


def test_body_over_client_max_body_size_gets_413_before_reaching_backend(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1), server="client_max_body_size 10;"))
    data = raw_request(
        p.port,
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 11\r\nExpect: 100-continue\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 413")
    assert b"100 Continue" not in data
    data = raw_request(
        p.port,
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"6\r\nhello \r\n6\r\nworld!\r\n0\r\n\r\n",
    )
    assert data.startswith(b"HTTP/1.1 413")
    assert all(r.body != b"hello world!" for r in b1.received)


def test_malformed_request_gets_400_and_close(backends, proxy):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    data = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\nBad Header\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")
    data = raw_request(p.port, b"GET / HTTP/1.1\r\nConnection: close\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400")  # HTTP/1.1 without Host
    assert b1.received == []


def test_websocket_upgrade_is_tunnelled_with_the_map_idiom(backends, proxy):
    (b1,) = backends(1)
    p = proxy(
        conf(
            servers(b1),
            "proxy_set_header Upgrade $http_upgrade;"
            " proxy_set_header Connection $connection_upgrade;",
            http="map $http_upgrade $connection_upgrade { default upgrade; '' close; }",
        )
    )
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(
            b"GET /upgrade HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\r\n"
        )
        head = b""
        while b"\r\n\r\n" not in head:
            head += sock.recv(1024)
        assert head.startswith(b"HTTP/1.1 101")
        for i in range(3):
            sock.sendall(b"ping %d" % i)
            assert sock.recv(1024) == b"ping %d" % i
    seen = b1.received[0]
    assert seen.header("upgrade") == "websocket"
    assert seen.header("connection") == "upgrade"


def test_return_redirect_keeps_the_query_string(proxy):
    p = proxy(
        """
events {}
http {
  server {
    listen 127.0.0.1:{port};
    return 301 https://$host$request_uri;
  }
}
"""
    )
    data = raw_request(p.port, b"GET /a/b?x=1&y=2 HTTP/1.1\r\nHost: example.com\r\n\r\n", 2)
    assert data.startswith(b"HTTP/1.1 301")
    assert b"Location: https://example.com/a/b?x=1&y=2\r\n" in data


def test_server_name_and_exact_location_routing(backends, proxy):
    b1, b2, b3 = backends(3)
    p = proxy(
        f"""
events {{}}
http {{
  access_log off;
  server {{
    listen 127.0.0.1:{{port}} default_server;
    location / {{ proxy_pass http://{b1.address}; }}
  }}
  server {{
    listen 127.0.0.1:{{port}};
    server_name api.example.com *.example.org;
    location / {{ proxy_pass http://{b2.address}; }}
    location = /exact {{ proxy_pass http://{b3.address}; }}
    location /static/ {{ return 200 "static"; }}
  }}
}}
"""
    )
    assert p.request("GET", "/", headers={"Host": "other"})[2] == b"b1"
    assert p.request("GET", "/", headers={"Host": "api.example.com"})[2] == b"b2"
    assert p.request("GET", "/", headers={"Host": "x.y.example.org:8080"})[2] == b"b2"
    assert p.request("GET", "/exact", headers={"Host": "api.example.com"})[2] == b"b3"
    assert p.request("GET", "/exact/no", headers={"Host": "api.example.com"})[2] == b"b2"
    assert p.request("GET", "/static/x", headers={"Host": "api.example.com"})[2] == b"static"


def test_access_log_is_written_in_combined_format(backends, proxy, tmp_path):
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)).replace("access_log off;", f"access_log {tmp_path}/access.log;"))
    p.request("GET", "/x?y=1", headers={"User-Agent": "tester", "Referer": "http://r/"})
    log = tmp_path / "access.log"
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and not (log.exists() and log.read_text()):
        time.sleep(0.05)
    line = log.read_text().strip()
    assert line.startswith("127.0.0.1 - - [")
    assert line.endswith('"GET /x?y=1 HTTP/1.1" 200 2 "http://r/" "tester"')


def test_proxy_pass_to_a_unix_socket_reaches_the_app_with_host_localhost(tmp_path, proxy):
    sock = tmp_path / "app.sock"
    backend = RecordingBackend(name="unix", unix=str(sock)).start()
    try:
        p = proxy(
            "events {}\nhttp {\n  access_log off;\n  server {\n    listen 127.0.0.1:{port};\n"
            f"    location /api/ {{ proxy_pass http://unix:{sock}:/v2/; }}\n"
            f"    location / {{ proxy_pass http://unix:{sock}:; }}\n  }}\n}}\n"
        )
        status, _, body = p.request("GET", "/echo?x=1")
        assert status == 200
        seen = json.loads(body)
        assert seen["target"] == "/echo?x=1"
        assert {k.lower(): v for k, v in seen["headers"]}["host"] == "localhost"
        p.request("GET", "/api/a?b")
        assert backend.paths()[-1] == "/v2/a?b"
    finally:
        backend.stop()
