"""Files: which file a URI names, try_files, ranges, and the answers on fake transports.

Expected behaviour from nginx's static, index and try_files modules and nginx-tests'
http_try_files.t, range.t, not_modified.t and http_expires.t.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import pytest
from protocol_support import (
    LISTEN_PORT,
    Client,
    FakeProxy,
    Response,
    get,
    make_proxy,
    ok,
    request_head,
)

from nonstop.config.model import FilesSpec
from nonstop.proxy import static
from nonstop.proxy.static import Files, file_range, map_path


def files(root: str = "/srv/www", alias: str | None = None, prefix: str = "/") -> Files:
    return Files(FilesSpec(root=root, alias=alias), prefix, ())


@pytest.mark.parametrize(
    ("uri", "expected"),
    [
        ("/", "/srv/www/"),
        ("/a/b.txt", "/srv/www/a/b.txt"),
        ("/a/", "/srv/www/a/"),
        ("/../etc/passwd", None),
        ("/a/../../etc", None),
        ("/a\0b", None),
    ],
)
def test_a_uri_maps_under_the_root_and_never_above_it(uri: str, expected: str | None) -> None:
    assert map_path(files(), uri) == expected


@pytest.mark.parametrize(
    ("alias", "prefix", "uri", "expected"),
    [
        ("/data/img/", "/images/", "/images/a.png", "/data/img/a.png"),
        ("/data/img", "/images", "/images/a.png", "/data/img/a.png"),
        ("/data/img/", "/images/", "/images/", "/data/img/"),
        ("/data/img/", "/images/", "/images/../x", None),
    ],
)
def test_an_alias_replaces_the_locations_prefix(
    alias: str, prefix: str, uri: str, expected: str | None
) -> None:
    assert map_path(files(alias=alias, prefix=prefix), uri) == expected


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        (None, None),
        (b"bytes=0-9", (0, 9)),
        (b"bytes=10-", (10, 99)),
        (b"bytes=-10", (90, 99)),
        (b"bytes=-1000", (0, 99)),
        (b"bytes=90-1000", (90, 99)),
        (b"bytes=100-", (-1, -1)),
        (b"bytes=-0", (-1, -1)),
        (b"bytes=5-2", None),
        (b"bytes=0-1,5-6", None),
        (b"items=0-1", None),
        (b"bytes=x-1", None),
    ],
)
def test_one_byte_range_of_a_100_byte_file(header: bytes | None, expected: object) -> None:
    assert file_range(header, 100) == expected


# --------------------------------------------------------------------------- answers


def site(tmp_path: Path) -> Path:
    www = tmp_path / "www"
    (www / "docs").mkdir(parents=True)
    (www / "empty").mkdir()
    (www / "index.html").write_text("<h1>home</h1>")
    (www / "docs" / "index.html").write_text("docs index")
    (www / "docs" / "a.txt").write_text("0123456789")
    (www / "style.CSS").write_text("body{}")
    (www / "big.bin").write_bytes(bytes(range(256)) * 1024)  # 256 KiB
    os.utime(www / "docs" / "a.txt", (1_700_000_000, 1_700_000_000))
    return www


def server(www: Path, body: str = "") -> str:
    return f"""
    upstream app {{ server 127.0.0.1:9001; keepalive 4; }}
    types {{ text/html html; text/plain txt; text/css css; }}
    default_type application/octet-stream;
    server {{
        listen {LISTEN_PORT};
        server_name example.test;
        root {www};
        {body}
    }}
    """


def fetch(client: Client, path: str, *headers: str, method: str = "GET") -> Response:
    client.send(get(path, *headers, method=method))
    [resp] = client.responses(head_only=method == "HEAD")
    return resp


async def test_files_are_served_with_their_type_length_and_validators(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    resp = fetch(proxy.client(), "/docs/a.txt")
    assert (resp.status, resp.body) == (200, b"0123456789")
    assert resp.header("Content-Type") == "text/plain"
    assert resp.header("Content-Length") == "10"
    assert resp.header("Last-Modified") == "Tue, 14 Nov 2023 22:13:20 GMT"
    assert resp.header("ETag") == '"6553f100-a"'
    assert resp.header("Accept-Ranges") == "bytes"
    assert fetch(proxy.client(), "/style.CSS").header("Content-Type") == "text/css"


@pytest.mark.parametrize(
    ("path", "status", "body"),
    [
        ("/", 200, b"<h1>home</h1>"),
        ("/docs/", 200, b"docs index"),
        ("/empty/", 403, None),  # no index file and no autoindex
        ("/nothing", 404, None),
        ("/nothing/", 404, None),
        ("/../docs/a.txt", 400, None),  # above the root: the request itself is refused
        ("/docs/%2e%2e/%2e%2e/etc/passwd", 400, None),
    ],
)
async def test_index_and_missing_files(
    tmp_path: Path, path: str, status: int, body: bytes | None
) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    resp = fetch(proxy.client(), path)
    assert resp.status == status
    assert body is None or resp.body == body


async def test_a_directory_without_its_slash_is_redirected_to_it(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    resp = fetch(proxy.client(), "/docs?x=1")
    assert resp.status == 301
    assert resp.header("Location") == f"http://example.test:{LISTEN_PORT}/docs/?x=1"


async def test_conditional_gets_answer_304_without_a_body(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    since = "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT"
    resp = fetch(proxy.client(), "/docs/a.txt", since)
    assert (resp.status, resp.body, resp.header("Content-Length")) == (304, b"", None)
    assert resp.header("ETag") == '"6553f100-a"'
    assert fetch(proxy.client(), "/docs/a.txt", 'If-None-Match: "6553f100-a"').status == 304
    assert fetch(proxy.client(), "/docs/a.txt", 'If-None-Match: "other"').status == 200
    later = "If-Modified-Since: Tue, 14 Nov 2023 22:13:21 GMT"
    assert fetch(proxy.client(), "/docs/a.txt", later).status == 200  # exact, as nginx


async def test_ranges_answer_206_and_416(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    resp = fetch(proxy.client(), "/docs/a.txt", "Range: bytes=2-4")
    assert (resp.status, resp.body) == (206, b"234")
    assert resp.header("Content-Range") == "bytes 2-4/10"
    resp = fetch(proxy.client(), "/docs/a.txt", "Range: bytes=20-")
    assert (resp.status, resp.header("Content-Range")) == (416, "bytes */10")
    stale = 'If-Range: "old"'
    assert fetch(proxy.client(), "/docs/a.txt", "Range: bytes=2-4", stale).status == 200


async def test_head_and_post(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    resp = fetch(proxy.client(), "/big.bin", method="HEAD")
    assert (resp.status, resp.header("Content-Length")) == (200, str(256 * 1024))
    assert fetch(proxy.client(), "/docs/a.txt", method="DELETE").status == 405


async def test_a_large_file_leaves_in_pieces_as_the_client_takes_them(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    client = proxy.client()
    client.conn.pause_writing()  # the client is slow: nothing past the head is sent
    client.send(get("/big.bin"))
    first = client.take()
    assert first.startswith(b"HTTP/1.1 200 OK\r\n") and first.endswith(b"\r\n\r\n")
    client.conn.resume_writing()
    rest = client.take()
    assert rest == bytes(range(256)) * 1024
    client.send(get("/docs/a.txt"))  # the connection is kept for the next request
    assert client.take().endswith(b"0123456789")


async def test_a_client_gone_mid_file_leaves_no_descriptor_open(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, server(site(tmp_path)))
    client = proxy.client()
    client.conn.pause_writing()
    client.send(get("/big.bin"))
    body = client.conn.file_body
    assert body is not None and body.fd >= 0
    fd = body.fd
    client.conn.connection_lost(ConnectionResetError())
    assert client.conn.file_body is None and body.fd == -1
    with pytest.raises(OSError):
        os.fstat(fd)


async def test_try_files_tries_in_order_then_falls_back(tmp_path: Path) -> None:
    www = site(tmp_path)
    body = """
        location / { try_files $uri $uri/ @app; }
        location /strict/ { try_files $uri =404; }
        location /spa/ { try_files $uri /index.html; }
        location @app { proxy_pass http://app; }
    """
    proxy = make_proxy(tmp_path, server(www, body))
    assert fetch(proxy.client(), "/docs/a.txt").body == b"0123456789"
    assert fetch(proxy.client(), "/docs/").body == b"docs index"
    assert fetch(proxy.client(), "/strict/x").status == 404
    assert fetch(proxy.client(), "/spa/deep/link").body == b"<h1>home</h1>"
    client = proxy.client()
    client.send(get("/api/users?id=1", "Content-Length: 0", method="POST"))
    up = proxy.active()
    line, _, _ = request_head(up.take())
    assert line == "POST /api/users?id=1 HTTP/1.1"  # a named location keeps the method
    up.respond(ok(b"from app"))
    [resp] = client.responses()
    assert resp.body == b"from app"


async def test_an_internal_location_answers_only_internal_redirects(tmp_path: Path) -> None:
    www = site(tmp_path)
    body = """
        error_page 404 /errors/404.txt;
        location /errors/ { internal; alias ERRORS/; }
        location / { }
    """.replace("ERRORS", str(tmp_path / "errors"))
    (tmp_path / "errors").mkdir()
    (tmp_path / "errors" / "404.txt").write_text("not here")
    proxy = make_proxy(tmp_path, server(www, body))
    resp = fetch(proxy.client(), "/missing")
    assert (resp.status, resp.body) == (404, b"not here")
    resp = fetch(proxy.client(), "/errors/404.txt")
    assert (resp.status, resp.body) == (404, b"not here")  # from outside: 404, then its page


async def test_expires_sets_expires_and_cache_control(tmp_path: Path) -> None:
    www = site(tmp_path)
    body = """
        location /docs/ { expires 1h; }
        location /x/ { expires epoch; alias DOCS/; }
        location / { expires max; }
    """.replace("DOCS", str(www / "docs"))
    proxy = make_proxy(tmp_path, server(www, body))
    assert fetch(proxy.client(), "/docs/a.txt").header("Cache-Control") == "max-age=3600"
    resp = fetch(proxy.client(), "/x/a.txt")
    assert (resp.header("Cache-Control"), resp.header("Expires")) == (
        "no-cache",
        "Thu, 01 Jan 1970 00:00:01 GMT",
    )
    assert fetch(proxy.client(), "/").header("Cache-Control") == "max-age=315360000"


# -- small files kept in memory while unchanged -------------------------------------------


def settled(proxy: FakeProxy) -> FakeProxy:
    """The proxy's clock (its Date header) a minute on: the files just written count as
    settled, so small ones are kept in memory (proxy/static.py, _SETTLE)."""
    proxy.state.date.update(time.time() + 60)
    return proxy


VARIANTS = [
    ("/docs/a.txt",),
    ("/docs/a.txt", "If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT"),
    ("/docs/a.txt", 'If-None-Match: "6553f100-a"'),
    ("/docs/a.txt", 'If-None-Match: "other"'),
    ("/docs/a.txt", "Range: bytes=2-4"),
    ("/", ""),
    ("/style.CSS",),
    ("/hour/a.txt",),
    ("/untagged/a.txt",),
]


@pytest.mark.parametrize("method", ["GET", "HEAD"])
@pytest.mark.parametrize("variant", VARIANTS, ids=lambda v: " ".join(v))
async def test_a_small_file_from_memory_answers_as_one_read_from_disk(
    tmp_path: Path, variant: tuple[str, ...], method: str
) -> None:
    """A hit answers as the miss before it, byte for byte but the clocks' headers; the
    miss's answer itself is compared with a real nginx's in
    tests/integration/test_nginx_files_differential.py."""
    www = site(tmp_path)
    body = """
        location /hour/ { expires 1h; alias DOCS/; }
        location /untagged/ { etag off; alias DOCS/; }
        location / { }
    """.replace("DOCS", str(www / "docs"))
    path, *headers = variant
    headers = [h for h in headers if h]
    fresh = make_proxy(tmp_path, server(www, body))
    kept = settled(make_proxy(tmp_path, server(www, body)))
    expected = fetch(fresh.client(), path, *headers, method=method)
    first = fetch(kept.client(), path, *headers, method=method)  # read, and kept
    again = fetch(kept.client(), path, *headers, method=method)  # from memory
    ranged = any(h.startswith("Range:") for h in headers)  # a range is read from disk
    assert any(name.startswith(str(www)) for name in static._CACHE) != ranged
    for resp in (first, again):
        assert (resp.status, resp.body) == (expected.status, expected.body)
        drop = {"date", "expires"}  # the two clocks differ by a minute
        assert [h for h in resp.headers if h[0].lower() not in drop] == [
            h for h in expected.headers if h[0].lower() not in drop
        ]


async def test_a_kept_file_that_changes_on_disk_is_read_again(tmp_path: Path) -> None:
    www = site(tmp_path)
    proxy = settled(make_proxy(tmp_path, server(www)))
    page = www / "docs" / "a.txt"
    assert fetch(proxy.client(), "/docs/a.txt").body == b"0123456789"
    assert str(page) in static._CACHE
    page.write_text("0123456789 and more")  # another size
    assert fetch(proxy.client(), "/docs/a.txt").body == b"0123456789 and more"
    fresh = www / "new.txt"
    fresh.write_text("abcdefghijklmnopqrs")  # the same size, another inode
    fresh.replace(page)
    assert fetch(proxy.client(), "/docs/a.txt").body == b"abcdefghijklmnopqrs"
    page.chmod(0)
    if os.geteuid() != 0:  # root reads it anyway, as nginx's root-run workers would
        assert fetch(proxy.client(), "/docs/a.txt").status == 403
    page.unlink()
    assert fetch(proxy.client(), "/docs/a.txt").status == 404


async def test_a_file_changed_in_the_last_seconds_is_never_kept(tmp_path: Path) -> None:
    """A rewrite in place within one tick of the file system's clock keeps size and
    ctime: only not keeping what just changed makes it impossible to serve the old copy."""
    www = site(tmp_path)
    proxy = make_proxy(tmp_path, server(www))  # its clock is now: the site is seconds old
    page = www / "docs" / "a.txt"
    for text in ("abcdefghij", "ABCDEFGHIJ", "0123456789"):
        with page.open("r+") as handle:  # in place: same inode, same size
            handle.write(text)
        assert fetch(proxy.client(), "/docs/a.txt").body == text.encode()
    assert str(page) not in static._CACHE


async def test_the_memory_for_small_files_is_bounded(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    count = 1100  # 1,100 files of 16 KiB: more than the 16 MiB kept
    for i in range(count):
        (www / f"{i}.bin").write_bytes(bytes([i % 256]) * 16384)
    proxy = settled(make_proxy(tmp_path, server(www)))
    for i in range(count):
        assert fetch(proxy.client(), f"/{i}.bin").body == bytes([i % 256]) * 16384
    mine = [name for name in static._CACHE if name.startswith(str(www))]
    assert 0 < len(mine) <= 1024 and sum(len(static._CACHE[n].body) for n in mine) <= 16 << 20
    assert str(www / f"{count - 1}.bin") in mine and str(www / "0.bin") not in mine


async def test_a_path_switched_between_its_stat_and_its_open_is_not_kept(
    tmp_path: Path,
) -> None:
    """A deploy renames a release's file over the path, then a rollback renames the old
    one back: the bytes read must never be kept under the other file's identity."""
    page = tmp_path / "page.txt"
    page.write_text("release A!")
    seen = os.stat(page)  # what the request's stat saw: A
    other = tmp_path / "b.txt"
    other.write_text("release B!")  # the same size
    other.replace(page)  # switched before the open
    fd = os.open(page, os.O_RDONLY)
    try:
        entry = static._Cached(os.fstat(fd), os.pread(fd, seen.st_size, 0), str(page))
    finally:
        os.close(fd)
    static._keep(str(page), seen, entry, int(time.time()) + 60)
    assert str(page) not in static._CACHE
    proxy = settled(make_proxy(tmp_path, server(tmp_path)))
    assert fetch(proxy.client(), "/page.txt").body == b"release B!"
    assert str(page) in static._CACHE  # read again now that stat and open agree


async def test_many_tiny_files_are_bounded_by_count(tmp_path: Path) -> None:
    www = tmp_path / "www"
    www.mkdir()
    for i in range(4200):
        (www / f"{i}").write_bytes(b"")
    proxy = settled(make_proxy(tmp_path, server(www)))
    for i in range(4200):
        assert fetch(proxy.client(), f"/{i}").status == 200
    assert len(static._CACHE) <= 4096
    assert str(www / "4199") in static._CACHE and str(www / "0") not in static._CACHE


async def test_with_gzip_on_a_file_gzip_leaves_alone_is_still_kept(tmp_path: Path) -> None:
    """Debian's nginx.conf has ``gzip on`` (text/html only): the other types are kept."""
    www = site(tmp_path)
    body = "gzip on; gzip_types text/css; gzip_min_length 1; location / { }"
    proxy = settled(make_proxy(tmp_path, server(www, body)))
    assert fetch(proxy.client(), "/docs/a.txt", "Accept-Encoding: gzip").body == b"0123456789"
    assert str(www / "docs" / "a.txt") in static._CACHE  # text/plain: not gzip's
    resp = fetch(proxy.client(), "/style.CSS", "Accept-Encoding: gzip")
    assert resp.header("Content-Encoding") == "gzip"
    assert str(www / "style.CSS") not in static._CACHE
