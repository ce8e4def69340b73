"""gzip, proxy_redirect, proxy_cookie_* and proxy_pass_header: a real nginx, nonstop, and
nonstop's nginx engine (the config rendered back for nginx), same config, same requests.

Each outcome: the status, the headers these directives decide (Content-Encoding, Vary,
ETag, Accept-Ranges, Content-Length where no gzip applies, Location, Refresh, Set-Cookie,
a passed Server), and the body after gunzip.  The compressed bytes themselves differ
(nginx sizes its zlib window to the response), so they are not compared.
"""

from __future__ import annotations

import gzip
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import free_port
from tests.support.proc import (
    NginxProcess,
    NonstopProcess,
    differences,
    nginx_conf,
    raw_request,
    start_engine,
)
from tests.support.scripted import ScriptedBackend, response

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]

PAGE = b"<p>hello, compressed world</p>\n" * 200  # 6 KiB of text/html
OWN_TEXT = "text a return writes, long enough for gzip_min_length; " * 4
UPSTREAM_DATE = "Date: Mon, 01 Jan 2024 00:00:00 GMT"


def config(port: int, prefix: Path, backend: str, shared: Path) -> str:
    return nginx_conf(
        prefix,
        f"""
  gzip on;
  gzip_types text/css application/json;
  gzip_min_length 100;
  gzip_vary on;
  gzip_comp_level 5;
  gzip_proxied no-cache expired;
  gzip_disable "BadBot/\\d";
  types {{ text/html html; text/css css; image/png png; }}
  server {{
    listen 127.0.0.1:{port};
    server_name example.test;
    location / {{ proxy_pass http://{backend}; }}
    location /static/ {{ root {shared}; }}
    location /raw/ {{ gzip off; proxy_pass http://{backend}; }}
    location /any/ {{ gzip_proxied any; proxy_pass http://{backend}; }}
    location /old/ {{ gzip_http_version 1.0; gzip_disable msie6; proxy_pass http://{backend}; }}
    location /app/ {{
      proxy_pass http://{backend}/;
      proxy_redirect http://other.test/ /elsewhere/;
      proxy_redirect ~*^http://RE\\.test/(\\w+)/(.*)$ /re/$1?rest=$2;
      proxy_redirect default;
      proxy_cookie_path /app/ /;
      proxy_cookie_path ~^/deep/(.*)$ /d/$1;
      proxy_cookie_domain backend.test $host;
      proxy_pass_header Server;
      proxy_pass_header Date;
    }}
    location /off/ {{
      proxy_pass http://{backend}/;
      proxy_redirect off;
      proxy_cookie_path off;
    }}
    location /own/gone {{ return 404; }}
    location /own/closed {{ deny all; }}
    location /own/text {{ default_type text/css; return 200 "{OWN_TEXT}"; }}
  }}""",
    )


def answers(backend: str) -> dict[str, bytes]:
    here = f"http://{backend}"
    return {
        "/html": response(body=PAGE, headers=('ETag: "v1"', "Accept-Ranges: bytes")),
        "/weak": response(body=PAGE, headers=('ETag: W/"v2"',)),
        "/css": response(body=PAGE, ctype="text/css; charset=utf-8"),
        "/png": response(body=PAGE, ctype="image/png"),
        "/tiny": response(body=b"<p>tiny</p>"),
        "/brotli": response(body=PAGE, headers=("Content-Encoding: br",)),
        "/partial": response(206, PAGE[:500], headers=("Content-Range: bytes 0-499/6200",)),
        "/missing": response(404, PAGE),
        "/broken": response(500, PAGE),
        "/chunked": response(body=PAGE * 20, framing="chunked"),
        "/eof": response(body=PAGE * 3, framing="close"),
        "/nocache": response(body=PAGE, headers=("Cache-Control: private, no-cache",)),
        "/nostore": response(body=PAGE, headers=("Cache-Control: no-store",)),
        "/expired": response(body=PAGE, headers=("Expires: Thu, 01 Jan 1970 00:00:01 GMT",)),
        "/fresh": response(body=PAGE, headers=("Expires: Thu, 31 Dec 2037 23:55:55 GMT",)),
        "/any/plain": response(body=PAGE),
        "/old/html": response(body=PAGE),
        "/raw/html": response(body=PAGE),
        "/moved": response(302, b"", headers=(f"Location: {here}/landing?a=1",)),
        "/foreign": response(301, b"", headers=("Location: http://other.test/x/y",)),
        "/regex": response(302, b"", headers=("Location: http://re.TEST/cat/a/b",)),
        "/untouched": response(302, b"", headers=("Location: https://third.test/",)),
        "/refresh": response(body=b"wait", headers=(f"Refresh: 3; URL={here}/next",)),
        "/cookie": response(
            body=b"c",
            headers=(
                "Set-Cookie: a=1; Path=/app/sub; Domain=.Backend.test; HttpOnly",
                "Set-Cookie: b=2; path=/deep/x/y; domain=other.test",
                "Set-Cookie: c=3",
            ),
        ),
        "/server": response(
            body=b"s", headers=("Server: upstream/7", UPSTREAM_DATE, "X-Powered-By: app")
        ),
    }


GZ = "Accept-Encoding: gzip, deflate"
REQUESTS: dict[str, tuple[str, str, tuple[str, ...]]] = {
    name: (method, target, headers)
    for name, method, target, headers in [
        ("html", "GET", "/html", (GZ,)),
        ("html-not-asked", "GET", "/html", ()),
        ("html-q0", "GET", "/html", ("Accept-Encoding: gzip;q=0, deflate",)),
        ("html-q-half", "GET", "/html", ("Accept-Encoding: deflate, gzip; q=0.5",)),
        ("html-x-gzip-only", "GET", "/html", ("Accept-Encoding: x-gzip",)),
        ("html-head", "HEAD", "/html", (GZ,)),
        ("html-http10", "GET10", "/html", (GZ,)),
        ("html-disabled-agent", "GET", "/html", (GZ, "User-Agent: BadBot/2")),
        ("weak-etag", "GET", "/weak", (GZ,)),
        ("type-with-charset", "GET", "/css", (GZ,)),
        ("type-not-listed", "GET", "/png", (GZ,)),
        ("below-min-length", "GET", "/tiny", (GZ,)),
        ("already-encoded", "GET", "/brotli", (GZ,)),
        ("partial", "GET", "/partial", (GZ,)),
        ("not-found-page", "GET", "/missing", (GZ,)),
        ("server-error", "GET", "/broken", (GZ,)),
        ("chunked-upstream", "GET", "/chunked", (GZ,)),
        ("eof-upstream", "GET", "/eof", (GZ,)),
        ("via-default", "GET", "/html", (GZ, "Via: 1.1 cache")),
        ("via-no-cache", "GET", "/nocache", (GZ, "Via: 1.1 cache")),
        ("via-no-store", "GET", "/nostore", (GZ, "Via: 1.1 cache")),
        ("via-expired", "GET", "/expired", (GZ, "Via: 1.1 cache")),
        ("via-fresh", "GET", "/fresh", (GZ, "Via: 1.1 cache")),
        ("via-any", "GET", "/any/plain", (GZ, "Via: 1.1 cache")),
        ("http10-allowed", "GET10", "/old/html", (GZ,)),
        ("msie6", "GET", "/old/html", (GZ, "User-Agent: Mozilla/4.0 (compatible; MSIE 6.0)")),
        ("msie6-sv1", "GET", "/old/html", (GZ, "User-Agent: Mozilla/4.0 (MSIE 6.0; SV1)")),
        ("gzip-off", "GET", "/raw/html", (GZ,)),
        ("static", "GET", "/static/page.html", (GZ,)),
        ("static-plain", "GET", "/static/page.html", ()),
        ("static-range", "GET", "/static/page.html", (GZ, "Range: bytes=0-9")),
        ("static-range-plain", "GET", "/static/page.html", ("Range: bytes=0-9",)),
        ("static-head", "HEAD", "/static/page.html", (GZ,)),
        ("static-large", "GET", "/static/large.css", (GZ,)),
        ("static-not-listed", "GET", "/static/pic.png", (GZ,)),
        ("redirect-default", "GET", "/moved", ()),
        ("redirect-default-uri", "GET", "/app/moved", ()),
        ("redirect-explicit", "GET", "/app/foreign", ()),
        ("redirect-regex", "GET", "/app/regex", ()),
        ("redirect-no-rule", "GET", "/app/untouched", ()),
        ("redirect-off", "GET", "/off/moved", ()),
        ("refresh", "GET", "/app/refresh", ()),
        ("cookies", "GET", "/app/cookie", ()),
        ("cookies-off", "GET", "/off/cookie", ()),
        ("pass-server-and-date", "GET", "/app/server", ()),
        ("own-404", "GET", "/own/gone", (GZ,)),
        ("own-404-plain", "GET", "/own/gone", ()),
        ("own-404-head", "HEAD", "/own/gone", (GZ,)),
        ("own-403", "GET", "/own/closed", (GZ,)),
        ("own-return-text", "GET", "/own/text", (GZ,)),
        ("own-return-text-head", "HEAD", "/own/text", (GZ,)),
        ("static-missing", "GET", "/static/missing.html", (GZ,)),
    ]
}

SHOWN = ("content-encoding", "vary", "etag", "accept-ranges", "location", "refresh", "server")


def outcome(port: int, method: str, target: str, headers: tuple[str, ...]) -> tuple:
    version = "HTTP/1.0" if method == "GET10" else "HTTP/1.1"
    verb = "GET" if method == "GET10" else method
    lines = [f"{verb} {target} {version}", "Host: example.test", *headers, "Connection: close"]
    data = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    fields: dict[str, list[str]] = {}
    for line in header_lines:
        key, _, value = line.partition(":")
        fields.setdefault(key.lower(), []).append(value.strip())
    if fields.get("transfer-encoding") == ["chunked"]:
        body = _unchunk(body)
    if fields.get("content-encoding") == ["gzip"] and body:
        body = gzip.decompress(body)
    shown = {
        k: [
            re.sub(r"127\.0\.0\.1:\d+", "BACKEND", v).replace(f":{port}/", ":PORT/")
            for v in fields[k]
        ]
        for k in SHOWN
        if k in fields and k != "server"
    }
    if "server" in fields and not fields["server"][0].startswith(("nginx", "nonstop")):
        shown["server"] = fields["server"]
    if "date" in fields and fields["date"] == [UPSTREAM_DATE[6:]]:
        shown["date"] = fields["date"]
    if "content-encoding" not in fields and verb == "GET" and b"<html>" not in body:
        # (an own page's length differs: nginx's names its version, nonstop's no version)
        shown["content-length"] = fields.get("content-length", [])
    cookies = fields.get("set-cookie", [])
    if b"<html>" in body:
        body = b"(the server's own page)"
    status = int(status_line.split(" ")[1])
    return status, shown, cookies, body.decode("latin-1")


def _unchunk(data: bytes) -> bytes:
    out = []
    while data:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            break
        out.append(data[:size])
        data = data[size + 2 :]
    return b"".join(out)


@pytest.fixture
def shared() -> Iterator[Path]:
    """Files nginx's workers (another user) can read."""
    where = Path(tempfile.mkdtemp(prefix="nonstop-gzip-"))
    static = where / "static"
    static.mkdir()
    (static / "page.html").write_bytes(PAGE)
    (static / "large.css").write_bytes(PAGE * 60)  # 370 KiB: sent in several pieces
    (static / "pic.png").write_bytes(PAGE)
    for path in (where, static, *static.iterdir()):
        path.chmod(0o755)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def outcomes(engine: str, tmp: Path, shared: Path) -> dict[str, tuple]:
    prefix = tmp / engine
    prefix.mkdir()
    backend = ScriptedBackend({}).start()
    backend.answers.update(answers(backend.address))
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(port, prefix, backend.address, shared))
    if engine == "nonstop-nginx":  # the nginx engine: the model rendered back for nginx
        proc: NginxProcess | NonstopProcess = NonstopProcess(conf, [port], ["--engine", "nginx"])
        proc.start()
    else:
        proc = start_engine(engine, prefix, conf, port)
    try:
        out = {name: outcome(port, *request) for name, request in REQUESTS.items()}
    finally:
        proc.stop()
        backend.stop()
    return out


def test_compression_and_rewritten_heads_are_as_in_nginx(tmp_path: Path, shared: Path) -> None:
    nginx = outcomes("nginx", tmp_path, shared)
    nonstop = outcomes("nonstop", tmp_path, shared)
    assert differences(nginx, nonstop) == {}
    rendered = outcomes("nonstop-nginx", tmp_path, shared)
    assert differences(nginx, rendered) == {}
    # the comparison means something: these were compressed, rewritten, left alone
    assert nginx["html"][1]["content-encoding"] == ["gzip"]
    assert nginx["html"][3] == PAGE.decode()
    assert nginx["chunked-upstream"][3] == (PAGE * 20).decode()
    assert "content-encoding" not in nginx["html-q0"][1]
    assert nginx["own-404"][1]["content-encoding"] == ["gzip"]  # nginx's own page too
    assert nginx["own-return-text"][3] == OWN_TEXT
    assert nginx["redirect-default-uri"][1]["location"] == [
        "http://example.test:PORT/app/landing?a=1"
    ]
    assert nginx["cookies"][2][0] == "a=1; Path=/sub; Domain=.example.test; HttpOnly"
