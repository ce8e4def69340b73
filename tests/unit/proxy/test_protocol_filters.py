"""The response filters on the wire: gzip streamed through the proxy, proxy_redirect,
proxy_cookie_* and proxy_pass_header (proxy/response_filter.py)."""

from __future__ import annotations

import gzip
import os
import zlib
from pathlib import Path
from typing import Any

from protocol_support import conf, get, make_proxy, ok

GZ = "Accept-Encoding: gzip"
PAGE = b"<p>compress me</p>" * 100


def gzip_proxy(tmp_path: Path, location: str = "proxy_pass http://app;", http: str = "") -> Any:
    return make_proxy(
        tmp_path,
        conf(servers=1, location=location, extra_http=f"gzip on; {http}"),
        idle_per_server=1,
    )


async def test_a_compressed_answer_loses_its_length_ranges_and_strong_etag(tmp_path: Path) -> None:
    proxy = gzip_proxy(tmp_path)
    client = proxy.client()
    client.send(get("/", GZ))
    up = proxy.active()
    up.respond(ok(PAGE, "Content-Type: text/html", 'ETag: "v1"', "Accept-Ranges: bytes"))
    [resp] = client.responses()
    assert resp.header("Content-Encoding") == "gzip"
    assert resp.chunked and resp.header("Content-Length") is None
    assert resp.header("ETag") == 'W/"v1"'
    assert resp.header("Accept-Ranges") is None
    assert gzip.decompress(resp.body) == PAGE
    assert proxy.idle_count() == 1  # the upstream's framing was kept: reused


async def test_the_body_is_compressed_as_it_comes_not_held_whole(tmp_path: Path) -> None:
    proxy = gzip_proxy(tmp_path)
    client = proxy.client()
    client.send(get("/", GZ))
    up = proxy.active()
    body = os.urandom(400_000).hex().encode()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nTransfer-Encoding: chunked\r\n\r\n")
    sent = b""
    stream = zlib.decompressobj(31)
    for i in range(0, len(body) // 2, 32768):
        piece = body[i : i + 32768]
        up.respond(b"%x\r\n%b\r\n" % (len(piece), piece))
        sent += piece
    early = client.take()
    assert early.count(b"\r\n") > 10, "nothing left before the upstream finished"
    partial = stream.decompress(_chunks(early.partition(b"\r\n\r\n")[2]))
    assert 0 < len(partial) <= len(sent) and sent.startswith(partial)
    rest = body[len(sent) :]
    up.respond(b"%x\r\n%b\r\n0\r\n\r\n" % (len(rest), rest))
    [resp] = [r for r in _parse_tail(early + client.take())]
    assert gzip.decompress(resp) == body


def _chunks(data: bytes) -> bytes:
    out = b""
    while data:
        size_line, _, data = data.partition(b"\r\n")
        if not size_line:
            break
        size = int(size_line, 16)
        out += data[:size]
        data = data[size + 2 :]
    return out


def _parse_tail(data: bytes) -> list[bytes]:
    return [_chunks(data.partition(b"\r\n\r\n")[2])]


async def test_an_http10_client_gets_the_compressed_body_ended_by_the_close(
    tmp_path: Path,
) -> None:
    proxy = gzip_proxy(tmp_path, http="gzip_http_version 1.0;")
    client = proxy.client()
    client.send(get("/", GZ, version="1.0"))
    proxy.active().respond(ok(PAGE, "Content-Type: text/html"))
    [resp] = client.responses()
    assert resp.header("Content-Encoding") == "gzip" and not resp.chunked
    assert resp.header("Connection") == "close" and client.closed
    assert gzip.decompress(resp.body) == PAGE


async def test_an_http10_client_is_not_sent_gzip_by_default(tmp_path: Path) -> None:
    proxy = gzip_proxy(tmp_path)
    client = proxy.client()
    client.send(get("/", GZ, version="1.0"))
    proxy.active().respond(ok(PAGE, "Content-Type: text/html"))
    [resp] = client.responses()
    assert resp.header("Content-Encoding") is None and resp.body == PAGE


async def test_a_body_ended_by_the_upstreams_close_is_compressed_to_its_end(
    tmp_path: Path,
) -> None:
    proxy = gzip_proxy(tmp_path)
    client = proxy.client()
    client.send(get("/", GZ))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nConnection: close\r\n\r\n", PAGE)
    up.hang_up()
    [resp] = client.responses()
    assert resp.chunked and gzip.decompress(resp.body) == PAGE
    assert not client.closed


async def test_an_upstream_cut_short_cuts_the_compressed_answer_without_an_end(
    tmp_path: Path,
) -> None:
    proxy = gzip_proxy(tmp_path)
    client = proxy.client()
    client.send(get("/", GZ))
    up = proxy.active()
    up.respond(b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 5000\r\n\r\n")
    up.respond(PAGE[:1000])
    up.hang_up()
    data = client.take()
    assert client.closed
    assert not data.endswith(b"0\r\n\r\n"), "a cut body must not look complete"


async def test_head_gets_the_gzip_head_and_no_body(tmp_path: Path) -> None:
    proxy = gzip_proxy(tmp_path)
    client = proxy.client()
    client.send(get("/", GZ, method="HEAD"))
    proxy.active().respond(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: 1800\r\n\r\n"
    )
    [resp] = client.responses(head_only=True)
    assert resp.header("Content-Encoding") == "gzip"
    assert resp.header("Content-Length") is None and resp.header("Transfer-Encoding") is None


async def test_vary_is_added_to_what_could_be_compressed_even_when_this_client_is_not(
    tmp_path: Path,
) -> None:
    proxy = gzip_proxy(tmp_path, http="gzip_vary on;")
    client = proxy.client()
    client.send(get("/a"), get("/b", GZ))
    up = proxy.active()
    up.respond(ok(PAGE, "Content-Type: text/html"))
    up.respond(ok(PAGE, "Content-Type: image/png"))
    plain, image = client.responses()
    assert plain.header("Vary") == "Accept-Encoding" and plain.header("Content-Encoding") is None
    assert image.header("Vary") is None and image.body == PAGE


async def test_proxy_pass_header_lets_the_upstreams_server_and_date_through(
    tmp_path: Path,
) -> None:
    passing = "proxy_pass http://app; proxy_pass_header Server; proxy_pass_header Date;"
    proxy = make_proxy(tmp_path, conf(servers=1, location=passing), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"), get("/"))
    up = proxy.active()
    upstream_head = ("Server: app/1", "Date: Mon, 01 Jan 2024 00:00:00 GMT", "X-Pad: x")
    up.respond(ok(b"a", *upstream_head), ok(b"b", *upstream_head))
    for resp in client.responses():
        assert resp.all("Server") == ["app/1"]
        assert resp.all("Date") == ["Mon, 01 Jan 2024 00:00:00 GMT"]
        assert resp.header("X-Pad") is None  # still hidden


async def test_without_proxy_pass_header_ours_replace_the_upstreams(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"a", "Server: app/1", "Date: Mon, 01 Jan 2024 00:00:00 GMT"))
    [resp] = client.responses()
    assert resp.all("Server") == ["nonstop"]
    assert resp.all("Date") != ["Mon, 01 Jan 2024 00:00:00 GMT"]


async def test_proxy_redirect_rules_apply_in_order_with_variables_and_captures(
    tmp_path: Path,
) -> None:
    rules = (
        "proxy_pass http://app;"
        " proxy_redirect ~^http://(?<who>[a-z]+)\\.internal/(.*)$ https://$host/$who/$2;"
        " proxy_redirect http://app/ /;"
        " proxy_redirect http://app/never /unreached;"
    )
    proxy = make_proxy(tmp_path, conf(servers=1, location=rules), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"), get("/"), get("/"), get("/"))
    up = proxy.active()
    up.respond(
        ok(b"", "Location: http://billing.internal/a/b?c=1", status="302 Found"),
        ok(b"", "Location: http://app/never", status="302 Found"),
        ok(b"", "Location: http://APP/x", status="302 Found"),  # a text pattern minds case
        ok(b"", "Refresh: 0; url=http://app/next"),
    )
    captured, prefixed, untouched, refresh = client.responses()
    assert captured.header("Location") == "https://example.test/billing/a/b?c=1"
    assert prefixed.header("Location") == "http://example.test:8080/never"  # made absolute
    assert untouched.header("Location") == "http://APP/x"
    assert refresh.header("Refresh") == "0; url=/next"


async def test_cookie_path_and_domain_are_rewritten_in_each_set_cookie(tmp_path: Path) -> None:
    rules = (
        "proxy_pass http://app;"
        " proxy_cookie_path /api/ /;"
        " proxy_cookie_path ~*^/USERS/(\\d+)$ /u/$1;"
        " proxy_cookie_domain .internal.test example.test;"
        " proxy_cookie_domain ~^(.+)\\.corp$ $1.example;"
    )
    proxy = make_proxy(tmp_path, conf(servers=1, location=rules), idle_per_server=1)
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(
        ok(
            b"",
            "Set-Cookie: a=1; Path=/api/v1; Domain=.INTERNAL.test; Secure",
            "Set-Cookie: b=2; path=/users/42; domain=hr.corp",
            "Set-Cookie: c=3; Path=/other; Domain=other.test",
            "Set-Cookie: d=path=/api/",
        )
    )
    [resp] = client.responses()
    assert resp.all("Set-Cookie") == [
        "a=1; Path=/v1; Domain=.example.test; Secure",
        "b=2; path=/u/42; domain=hr.example",
        "c=3; Path=/other; Domain=other.test",
        "d=path=/api/",  # the cookie's value is not an attribute
    ]


async def test_a_location_without_these_directives_has_no_filters(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(servers=1, location="proxy_pass http://app/;"))
    routes = list(proxy.state.router.routes())
    passing = [route for route in routes if route.passes]
    assert passing and all(route.filters is not None for route in passing)  # the default
    proxy = make_proxy(
        tmp_path, conf(servers=1, location="proxy_pass http://app; proxy_redirect off;")
    )
    assert all(route.filters is None for route in proxy.state.router.routes())


def site(tmp_path: Path, http: str = "") -> Any:
    www = tmp_path / "www"
    www.mkdir()
    (www / "big.html").write_bytes(PAGE * 200)  # 360 KB: read and compressed in pieces
    (www / "small.html").write_bytes(PAGE)
    block = f"""
    gzip on; {http}
    types {{ text/html html; }}
    server {{ listen 8080; server_name example.test; root {www}; }}
    """
    return make_proxy(tmp_path, block)


async def test_a_file_is_compressed_piece_by_piece_as_the_client_takes_it(tmp_path: Path) -> None:
    proxy = site(tmp_path)
    client = proxy.client()
    client.conn.pause_writing()  # a slow client: nothing past the head yet
    client.send(get("/big.html", GZ))
    head = client.take()
    assert head.endswith(b"\r\n\r\n") and b"Content-Encoding: gzip\r\n" in head
    assert b"Content-Length" not in head and b"Accept-Ranges" not in head
    assert b'ETag: W/"' in head
    client.conn.resume_writing()
    body = _chunks(client.take())
    assert gzip.decompress(body) == PAGE * 200
    client.send(get("/small.html"))  # kept alive; a client without gzip gets the file
    [resp] = client.responses()
    assert resp.body == PAGE and resp.header("Content-Length") == str(len(PAGE))


async def test_a_range_is_ignored_when_the_file_is_sent_gzip(tmp_path: Path) -> None:
    proxy = site(tmp_path)
    client = proxy.client()
    client.send(get("/small.html", GZ, "Range: bytes=0-9"), get("/small.html", "Range: bytes=0-9"))
    whole, part = client.responses()
    assert whole.status == 200 and gzip.decompress(whole.body) == PAGE
    assert part.status == 206 and part.body == PAGE[:10]


async def test_an_http10_client_gets_a_compressed_file_ended_by_the_close(tmp_path: Path) -> None:
    proxy = site(tmp_path, "gzip_http_version 1.0;")
    client = proxy.client()
    client.send(get("/small.html", GZ, version="1.0"))
    [resp] = client.responses()
    assert resp.header("Content-Encoding") == "gzip" and not resp.chunked
    assert gzip.decompress(resp.body) == PAGE and client.closed


async def test_gzip_compresses_nonstops_own_pages_and_return_text_as_nginx_does(
    tmp_path: Path,
) -> None:
    """ngx_http_gzip_header_filter sees nginx's own pages and ``return`` text like any
    answer: 200, 403 and 404 of a listed type and at least gzip_min_length (and, as
    nginx 1.22 answers a HEAD for them, the gzip head without a body)."""
    text = "compress this return text, " * 8
    location = f"""
        location /gone {{ return 404; }}
        location /text {{ default_type text/css; return 200 "{text}"; }}
        location /short {{ default_type text/css; return 200 "tiny"; }}
        location /teapot {{ return 418; }}
        location /closed {{ deny all; }}"""
    proxy = make_proxy(
        tmp_path,
        conf(servers=1, extra_locations=location, extra_http="gzip on; gzip_types text/css;"),
        idle_per_server=1,
    )

    def fetch(path: str, *headers: str, method: str = "GET") -> Any:
        client = proxy.client()
        client.send(get(path, *headers, method=method))
        [resp] = client.responses(head_only=method == "HEAD")
        return resp

    for path, status in (("/gone", 404), ("/closed", 403)):
        resp = fetch(path, GZ)
        assert (resp.status, resp.header("Content-Encoding")) == (status, "gzip")
        assert b"<html>" in gzip.decompress(resp.body)
        plain = fetch(path)
        assert plain.header("Content-Encoding") is None and b"<html>" in plain.body
    resp = fetch("/text", GZ)
    assert resp.header("Content-Type") == "text/css"
    assert gzip.decompress(resp.body) == text.encode()
    assert fetch("/short", GZ).header("Content-Encoding") is None  # below gzip_min_length
    assert fetch("/teapot", GZ).header("Content-Encoding") is None  # not 200, 403 or 404
    head = fetch("/gone", GZ, method="HEAD")  # nginx sends its own page's gzip head
    assert (head.header("Content-Encoding"), head.body) == ("gzip", b"")
