"""Locations, rewrites, return, if and map regexes: a real nginx and nonstop, same config.

Each request's outcome is compared: the status, the target the recording backend saw
(and on which backend), the Location header, and the body, unless it is one of the
built-in error pages (each server's own).
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, differences, nginx_conf, raw_request, start_engine

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]


def config(port: int, prefix: Path, backend: str, shared: Path) -> str:
    return nginx_conf(
        prefix,
        f"""
  upstream app {{ server {backend}; }}
  map $arg_k $section {{
    exact "exact";
    ~^docs-(?<page>.+)$ "docs:$page";
    ~*^IMG "image";
    default "other";
  }}
  server {{
    listen 127.0.0.1:{port};
    server_name example.test;
    rewrite ^/legacy(/.*)$ $1;
    if ($http_x_block) {{ return 403; }}
    location = /exact {{ return 200 "exact"; }}
    location ^~ /static/ {{ return 200 "static prefix"; }}
    location /images/ {{ return 200 "images prefix"; }}
    location ~ \\.(gif|png)$ {{ return 200 "regex $1"; }}
    location ~* \\.JPG$ {{ return 200 "caseless"; }}
    location ~ ^/images/big {{ return 200 "second regex"; }}
    location ~ ^/u/(?<user>[a-z]+)/(\\d+)$ {{ return 200 "$user #$2"; }}
    location @named {{ return 200 "named"; }}
    location /old/ {{ rewrite ^/old/(.*)$ /new/$1 last; return 200 "not reached"; }}
    location /new/ {{ proxy_pass http://app; }}
    location /api/ {{ rewrite ^/api/(.*)$ /v2/$1 break; proxy_pass http://app/ignored/; }}
    location /a/ {{ rewrite ^/a/(.*)$ /b/$1 last; }}
    location /b/ {{ proxy_pass http://app/base/; }}
    location /r/ {{ rewrite ^/r/(.*)$ /s/$1 redirect; }}
    location /p/ {{ rewrite ^/p/(.*)$ /s/$1? permanent; }}
    location /pa/ {{ rewrite ^ /s?new=1 permanent; }}
    location /abs/ {{ rewrite ^ https://$host$uri; }}
    location /q {{ rewrite ^ /show?a=1 last; }}
    location /show {{ return 200 "$uri|$args"; }}
    location /loop {{ rewrite ^(.*)$ $1 last; }}
    location /chain {{ rewrite ^/chain(.*)$ /two$1; set $seen yes; rewrite ^/two(.*)$ /show$1; }}
    location /map {{ return 200 "$section $page"; }}
    location /ret/ {{ return 301 /elsewhere$is_args$args; }}
    location /brk {{ set $a 1; break; return 200 "a=$a"; proxy_pass http://app; }}
    location /sock/ {{ proxy_pass http://unix:{shared}/app.sock:; }}
    location /suffix/ {{ set $suffix ?$args; proxy_pass http://{backend}$suffix; }}
    location /denied/ {{ allow 10.0.0.0/8; deny 127.0.0.0/8; allow all; proxy_pass http://app; }}
    location /allowed/ {{ deny ::1; deny 10.0.0.0/8; proxy_pass http://app; }}
    location /deny-return/ {{ deny all; return 200 "returned"; }}
    error_page 404 /not-found;
    location = /not-found {{ return 200 "page for $uri from $request_uri"; }}
    location /missing {{ return 404; }}
    location /boom {{ error_page 502 =503 @down; proxy_pass http://127.0.0.1:1; }}
    location @down {{ return 200 "down $uri"; }}
    location /tea {{ error_page 418 = /teapot; return 418; }}
    location = /teapot {{ return 202 "teapot"; }}
    location /gone {{ error_page 410 https://example.org/gone; return 410; }}
    location /moved {{ error_page 411 =301 /not-found; return 411; }}
    location /status/ {{
      proxy_intercept_errors on;
      error_page 503 /not-found;
      error_page 500 = @down;
      proxy_pass http://app;
    }}
    location / {{
      if ($request_method = 'OPTIONS') {{ return 204; }}
      if ($http_x_version ~ ^v(\\d+)$) {{ return 200 "version $1"; }}
      if (-f {shared}/flag) {{ return 200 "flag $uri"; }}
      if ($arg_to) {{ rewrite ^ /new/$arg_to? last; }}
      proxy_pass http://app;
    }}
  }}""",
    )


REQUESTS: dict[str, tuple[str, tuple[str, ...]]] = {
    name: (target, headers)
    for name, target, headers in [
        ("exact", "/exact", ()),
        ("exact-not-prefix", "/exact/more", ()),
        ("caret-tilde-beats-regex", "/static/a.png", ()),
        ("regex-beats-prefix", "/images/a.png", ()),
        ("first-regex-wins", "/images/big.gif", ()),
        ("second-regex", "/images/big.txt", ()),
        ("prefix-when-no-regex", "/images/a.txt", ()),
        ("caseless-regex", "/x/photo.jpg", ()),
        ("caseless-regex-mixed", "/x/photo.JpG", ()),
        ("regex-on-decoded-uri", "/a%2Epng", ()),
        ("named-captures", "/u/ann/42", ()),
        ("named-never-matched", "/@named", ()),
        ("rewrite-last", "/old/a%20b?x=1", ()),
        ("rewrite-break", "/api/items?q=1", ()),
        ("uri-part-after-last", "/a/x?y", ()),
        ("redirect", "/r/a?q=1", ()),
        ("permanent-no-args", "/p/a?q=1", ()),
        ("permanent-args-first", "/pa/x?old=2", ()),
        ("absolute-rewrite", "/abs/x?q=1", ()),
        ("replacement-args", "/q?b=2", ()),
        ("cycle", "/loop", ()),
        ("no-flag-goes-on", "/chain/x", ()),
        ("server-rewrite", "/legacy/exact", ()),
        ("server-if", "/", ("X-Block: 1",)),
        ("map-exact", "/map?k=exact", ()),
        ("map-named-capture", "/map?k=docs-intro", ()),
        ("map-caseless", "/map?k=img-1", ()),
        ("map-default", "/map?k=zzz", ()),
        ("return-relative", "/ret/x?a=1", ()),
        ("break", "/brk", ()),
        ("if-regex-capture", "/v", ("X-Version: v7",)),
        ("if-regex-no-match", "/v", ("X-Version: 7",)),
        ("if-rewrite", "/any?to=z", ()),
        ("plain-pass", "/plain/x?y=1", ()),
        ("unix-socket", "/sock/x?y", ()),
        ("variable-url-of-arguments-alone", "/suffix/x?q=1", ()),
        ("denied", "/denied/x", ()),
        ("allowed", "/allowed/x", ()),
        ("return-before-access", "/deny-return/", ()),
        ("error-page-uri", "/missing?a=1", ()),
        ("error-page-named-overwrite", "/boom", ()),
        ("error-page-bare-equals", "/tea", ()),
        ("error-page-url", "/gone", ()),
        ("error-page-status-only", "/moved", ()),
        ("intercepted", "/status/503", ()),
        ("intercepted-named", "/status/500", ()),
        ("not-intercepted", "/status/404", ()),
    ]
}


def outcome(port: int, target: str, headers: tuple[str, ...], method: str = "GET") -> tuple:
    lines = [f"{method} {target} HTTP/1.1", "Host: example.test", *headers, "Connection: close"]
    data = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head, _, body = data.partition(b"\r\n\r\n")
    status_line, *header_lines = head.decode("latin-1").split("\r\n")
    status = int(status_line.split(" ")[1])
    fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    location = fields.get("location")
    if location is not None:
        location = location.replace(f":{port}/", ":PORT/")
    shown = "" if b"<html>" in body else body.decode("latin-1")  # each server's own pages
    return status, location, shown


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory nginx's workers (another user) can reach: the socket and the flag."""
    where = Path(tempfile.mkdtemp(prefix="nonstop-rewrite-"))
    where.chmod(0o755)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def outcomes(engine: str, tmp: Path, shared: Path) -> dict[str, tuple]:
    prefix = tmp / engine
    prefix.mkdir()
    sock = shared / "app.sock"
    (shared / "flag").unlink(missing_ok=True)
    backend = RecordingBackend(name="app").start()
    unix = RecordingBackend(name="unix", unix=str(sock)).start()
    sock.chmod(0o777)
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(port, prefix, backend.address, shared))
    proc = start_engine(engine, prefix, conf, port)
    out: dict[str, tuple] = {}
    try:
        for name, (target, headers) in REQUESTS.items():
            backend.clear()
            unix.clear()
            result = outcome(port, target, headers)
            out[name] = (*result, tuple(backend.paths()), tuple(unix.paths()))
        out["options"] = outcome(port, "/x", (), method="OPTIONS")
        (shared / "flag").write_text("")
        out["if-file"] = outcome(port, "/f", ())
    finally:
        proc.stop()
        backend.stop()
        unix.stop()
        sock.unlink(missing_ok=True)
    return out


def test_locations_and_rewrites_end_as_in_nginx(tmp_path: Path, shared: Path) -> None:
    nginx = outcomes("nginx", tmp_path, shared)
    nonstop = outcomes("nonstop", tmp_path, shared)
    assert differences(nginx, nonstop) == {}
    # the comparison means something: these went where the config says
    assert nginx["rewrite-break"][3] == ("/v2/items?q=1",)
    assert nginx["unix-socket"][4] == ("/sock/x?y",)
    assert nginx["redirect"][:2] == (302, "http://example.test:PORT/s/a?q=1")
    assert nginx["if-file"][2] == "flag /f"
    assert nginx["variable-url-of-arguments-alone"][3] == ("/?q=1",)
