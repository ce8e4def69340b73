"""Responses the proxy makes itself (``return``, errors) and ``add_header``.

nginx: ``return`` answers with variables expanded and keeps the connection alive;
relative redirects are made absolute with the request's host and the listen port
(ngx_http_header_filter_module.c); ``add_header`` without ``always`` applies only to
200, 201, 204, 206, 301, 302, 303, 304, 307 and 308 (ngx_http_headers_filter_module.c).
"""

from __future__ import annotations

from pathlib import Path

from protocol_support import LISTEN_PORT, conf, get, make_proxy, ok

ADD_HEADERS = 'add_header X-Frame-Options DENY; add_header X-Trace "t-$remote_addr" always;'


async def test_return_text_expands_variables(tmp_path: Path) -> None:
    location = 'return 200 "hello $remote_addr from $host$request_uri arg=$arg_q";'
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client("10.1.1.1")
    client.send(get("/p?q=42"))
    [resp] = client.responses()
    assert resp.status == 200
    assert resp.body == b"hello 10.1.1.1 from example.test/p?q=42 arg=42"
    assert resp.header("Content-Length") == str(len(resp.body))
    assert proxy.written_upstream() == b""


async def test_return_with_set_variable(tmp_path: Path) -> None:
    location = 'set $who "user-$arg_id"; return 200 "$who";'
    proxy = make_proxy(tmp_path, conf(location))
    client = proxy.client()
    client.send(get("/?id=7"))
    [resp] = client.responses()
    assert resp.body == b"user-7"


async def test_return_keeps_the_connection_alive(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf('return 200 "ok";'))
    client = proxy.client()
    client.send(get("/"))
    [resp] = client.responses()
    assert resp.header("Connection") == "keep-alive"
    assert not client.closed


async def test_return_redirect_with_absolute_url_keeps_the_query(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("return 301 https://$host$request_uri;"))
    client = proxy.client()
    client.send(get("/a?b=1"))
    [resp] = client.responses()
    assert resp.status == 301
    assert resp.header("Location") == "https://example.test/a?b=1"
    assert b"301 Moved Permanently" in resp.body


async def test_relative_redirect_is_made_absolute_with_the_listen_port(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("return 302 /login;"))
    client = proxy.client()
    client.send(get("/"))
    [resp] = client.responses()
    assert resp.status == 302
    assert resp.header("Location") == f"http://example.test:{LISTEN_PORT}/login"


async def test_return_444_closes_without_a_response(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("return 444;"))
    client = proxy.client()
    client.send(get("/"))
    assert client.take() == b""
    assert client.closed


async def test_return_for_head_has_headers_only(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf('return 200 "body";'))
    client = proxy.client()
    client.send(get("/", method="HEAD"))
    raw = client.take()
    assert raw.startswith(b"HTTP/1.1 200 OK\r\n")
    assert b"Content-Length: 4\r\n" in raw
    assert raw.endswith(b"\r\n\r\n")


async def test_add_header_applies_to_a_2xx_upstream_response(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server=ADD_HEADERS))
    client = proxy.client("10.2.2.2")
    client.send(get("/"))
    proxy.active().respond(ok(b"x"))
    [resp] = client.responses()
    assert resp.header("X-Frame-Options") == "DENY"
    assert resp.header("X-Trace") == "t-10.2.2.2"


async def test_add_header_without_always_skips_an_upstream_500(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server=ADD_HEADERS))
    client = proxy.client("10.2.2.2")
    client.send(get("/"))
    proxy.active().respond(ok(b"boom", status="500 Internal Server Error"))
    [resp] = client.responses()
    assert resp.status == 500
    assert resp.header("X-Frame-Options") is None
    assert resp.header("X-Trace") == "t-10.2.2.2"


async def test_add_header_always_applies_to_the_proxys_own_502(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(server=ADD_HEADERS))
    client = proxy.client("10.2.2.2")
    client.send(get("/"))
    proxy.active().hang_up()
    proxy.active().hang_up()
    [resp] = client.responses()
    assert resp.status == 502
    assert resp.header("X-Frame-Options") is None
    assert resp.header("X-Trace") == "t-10.2.2.2"


async def test_add_header_applies_to_a_redirect_from_return(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf("return 301 https://example.test/;", server=ADD_HEADERS))
    client = proxy.client()
    client.send(get("/"))
    [resp] = client.responses()
    assert resp.header("X-Frame-Options") == "DENY"


async def test_location_add_header_replaces_the_server_level_ones(tmp_path: Path) -> None:
    location = "proxy_pass http://app; add_header X-Loc 1;"
    proxy = make_proxy(tmp_path, conf(location, server=ADD_HEADERS))
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"x"))
    [resp] = client.responses()
    assert resp.header("X-Loc") == "1"
    assert resp.header("X-Frame-Options") is None
    assert resp.header("X-Trace") is None


async def test_uri_matching_no_location_is_404_and_stays_local(tmp_path: Path) -> None:
    block = conf().replace("location / {", "location /api/ {")
    proxy = make_proxy(tmp_path, block)
    client = proxy.client()
    client.send(get("/other"))
    [resp] = client.responses()
    assert resp.status == 404
    assert proxy.written_upstream() == b""


async def test_stub_status_counts_connections_and_requests_as_nginx_words_them(
    tmp_path: Path,
) -> None:
    """ngx_http_stub_status_module: active connections; accepts, handled, requests (this
    one included); Reading, Writing (this one included) and Waiting."""
    extra = "location = /basic_status { stub_status; }"
    proxy = make_proxy(tmp_path, conf("return 204;", extra_locations=extra), bystander=False)
    waiting = proxy.client()
    waiting.send(get("/"))  # answered, then kept alive: waiting
    assert [r.status for r in waiting.responses()] == [204]
    reading = proxy.client()
    reading.send(b"GET / HTTP/1.1\r\nHost: exa")  # half a head: reading
    asking = proxy.client()
    asking.send(get("/basic_status"))
    [resp] = asking.responses()
    assert (resp.status, resp.header("Content-Type")) == (200, "text/plain")
    assert resp.body == (
        b"Active connections: 3 \nserver accepts handled requests\n 3 3 3 \n"
        b"Reading: 1 Writing: 1 Waiting: 1 \n"
    )
    asking.send(get("/basic_status", method="POST"))
    assert [r.status for r in asking.responses()] == [405]


def test_stub_status_in_a_server_block_is_refused_by_the_embedded_engine(
    tmp_path: Path,
) -> None:
    import pytest

    from nonstop.config import load
    from nonstop.errors import ConfigError

    path = tmp_path / "nginx.conf"
    path.write_text(
        "events {}\nhttp { server { listen 8080; stub_status; location / { return 204; } } }\n"
    )
    with pytest.raises(ConfigError, match="stub_status in a server block is outside"):
        load(str(path))
    assert load(str(path), engine="nginx").servers[0].raw  # the nginx engine passes it on
