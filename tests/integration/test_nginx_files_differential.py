"""Files beside an app, the way teams write it: a real nginx and nonstop on one config.

The config is a Spring Boot app behind a Certbot-managed host: Debian's mime.types, a
root with an index, the ACME webroot location, versioned assets under an alias with
``expires``, an internal 404 page, ``try_files`` falling back to the app, and the
blue-green ``service-url.inc`` include.  Each answer is compared on its status, the
headers a client or cache acts on, and a digest of its body; a 1 MiB file goes through
sendfile on nonstop's side.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, differences, nginx_conf, start_engine

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
    pytest.mark.skipif(not Path("/etc/nginx/mime.types").exists(), reason="no mime.types"),
]

HEADERS = (
    "content-type",
    "content-length",
    "last-modified",
    "etag",
    "content-range",
    "cache-control",
    "location",
    "accept-ranges",
)
MTIME = 1_700_000_000


@pytest.fixture
def site() -> Iterator[Path]:
    """The files, where nginx's workers (another user) can read them."""
    where = Path(tempfile.mkdtemp(prefix="nonstop-files-"))
    where.chmod(0o755)
    files = {
        "www/index.html": b"<h1>home</h1>\n",
        "www/404.html": b"<h1>not found</h1>\n",
        "www/docs/index.html": b"docs\n",
        "www/docs/guide.txt": b"0123456789" * 10,
        "www/logo.png": b"\x89PNG fake",
        "www/big.bin": bytes(range(256)) * 4096,  # 1 MiB
        "www/empty/.keep": b"",
        "certbot/.well-known/acme-challenge/tok3n": b"tok3n.key-authz",
        "assets/app.3f9a.css": b"body{color:red}",
        "assets/app.3f9a.js": b"console.log(1)",
    }
    for name, data in files.items():
        path = where / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    for path in [where, *where.rglob("*")]:
        path.chmod(0o755 if path.is_dir() else 0o644)
        os.utime(path, (MTIME, MTIME))
    yield where
    shutil.rmtree(where, ignore_errors=True)


def config(port: int, prefix: Path, site: Path, app: str, green: str) -> str:
    shutil.copy("/etc/nginx/mime.types", prefix / "mime.types")
    (prefix / "service-url.inc").write_text(f"set $service_url http://{green};\n")
    return nginx_conf(
        prefix,
        f"""
  include mime.types;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  upstream spring {{ server {app}; }}
  server {{
    listen 127.0.0.1:{port};
    server_name example.test;
    root {site}/www;
    index index.html;
    error_page 404 /404.html;
    location /.well-known/acme-challenge/ {{ root {site}/certbot; }}
    location /static/ {{ alias {site}/assets/; expires 1h; }}
    location = /404.html {{ internal; }}
    location /api/ {{
      proxy_pass http://spring;
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
    }}
    location /bg/ {{ include service-url.inc; proxy_pass $service_url; }}
    location / {{ try_files $uri $uri/ @spring; }}
    location @spring {{ proxy_pass http://spring; }}
  }}""",
    )


CASES: dict[str, tuple[str, str, tuple[str, ...]]] = {
    "index": ("GET", "/", ()),
    "file": ("GET", "/index.html", ()),
    "type-by-extension": ("GET", "/logo.png", ()),
    "directory-without-slash": ("GET", "/docs?x=1", ()),
    "directory-index": ("GET", "/docs/", ()),
    "no-index": ("GET", "/empty/", ()),
    "text": ("GET", "/docs/guide.txt", ()),
    "one-mebibyte": ("GET", "/big.bin", ()),
    "range": ("GET", "/docs/guide.txt", ("Range: bytes=10-19",)),
    "suffix-range": ("GET", "/big.bin", ("Range: bytes=-100",)),
    "open-range-large": ("GET", "/big.bin", ("Range: bytes=1000000-",)),
    "unsatisfiable-range": ("GET", "/docs/guide.txt", ("Range: bytes=500-",)),
    "if-range-stale": ("GET", "/docs/guide.txt", ("Range: bytes=0-1", 'If-Range: "x"')),
    "not-modified-since": (
        "GET",
        "/docs/guide.txt",
        ("If-Modified-Since: Tue, 14 Nov 2023 22:13:20 GMT",),
    ),
    "modified-since-other": (
        "GET",
        "/docs/guide.txt",
        ("If-Modified-Since: Tue, 14 Nov 2023 22:13:21 GMT",),
    ),
    "none-match": ("GET", "/docs/guide.txt", ('If-None-Match: "6553f100-64"',)),
    "none-match-other": ("GET", "/docs/guide.txt", ('If-None-Match: "abc"',)),
    "head": ("HEAD", "/big.bin", ()),
    "post-to-a-file": ("POST", "/index.html", ("Content-Length: 0",)),
    "delete-to-a-file": ("DELETE", "/index.html", ()),
    "acme-challenge": ("GET", "/.well-known/acme-challenge/tok3n", ()),
    "acme-missing": ("GET", "/.well-known/acme-challenge/nope", ()),
    "alias-asset": ("GET", "/static/app.3f9a.css", ()),
    "alias-js": ("GET", "/static/app.3f9a.js", ()),
    "alias-missing": ("GET", "/static/none.css", ()),
    "internal-page": ("GET", "/404.html", ()),
    "falls-back-to-the-app": ("GET", "/users/7?full=1", ()),
    "post-falls-back": ("POST", "/login", ("Content-Length: 3",)),
    "api": ("GET", "/api/orders?page=2", ()),
    "blue-green": ("GET", "/bg/x", ()),
    "above-root": ("GET", "/../etc/passwd", ()),
    "encoded-above-root": ("GET", "/static/%2e%2e/%2e%2e/etc/passwd", ()),
}


def fetch(port: int, method: str, target: str, headers: tuple[str, ...]) -> tuple:
    lines = [f"{method} {target} HTTP/1.1", "Host: example.test", *headers, "Connection: close"]
    data = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    if method == "POST" and "Content-Length: 3" in headers:
        data += b"a=1"
    got = b""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(data)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += chunk
    head, _, body = got.partition(b"\r\n\r\n")
    status_line, *rest = head.decode("latin-1").split("\r\n")
    fields = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in rest)}
    shown = {name: fields.get(name) for name in HEADERS}
    if shown["location"]:
        shown["location"] = shown["location"].replace(f":{port}/", ":PORT/")
    if b"<hr><center>" in body:  # each server's own error page
        body = b""
        shown["content-length"] = None
    return int(status_line.split(" ")[1]), shown, hashlib.sha256(body).hexdigest()[:16]


def outcomes(engine: str, tmp: Path, site: Path) -> dict[str, tuple]:
    prefix = tmp / engine
    prefix.mkdir()
    app = RecordingBackend(name="spring").start()
    green = RecordingBackend(name="green").start()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(port, prefix, site, app.address, green.address))
    proc = start_engine(engine, prefix, conf, port)
    out: dict[str, tuple] = {}
    try:
        for name, (method, target, headers) in CASES.items():
            app.clear()
            green.clear()
            result = fetch(port, method, target, headers)
            seen = tuple(f"{r.method} {r.target}" for r in app.received + green.received)
            out[name] = (*result, seen)
    finally:
        proc.stop()
        app.stop()
        green.stop()
    return out


def test_files_beside_an_app_are_served_as_nginx_serves_them(tmp_path: Path, site: Path) -> None:
    nginx = outcomes("nginx", tmp_path, site)
    nonstop = outcomes("nonstop", tmp_path, site)
    assert differences(nginx, nonstop) == {}
    # what the comparison rests on
    assert nginx["one-mebibyte"][1]["content-length"] == str(1 << 20)
    assert nginx["range"][0] == 206 and nginx["not-modified-since"][0] == 304
    assert nginx["post-falls-back"][3] == ("POST /login",)
    assert nginx["acme-challenge"][0] == 200
