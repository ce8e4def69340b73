"""Debian's stock /etc/nginx tree, with a proxy site in sites-enabled/, under ``nonstop run``.

The tree is copied whole into a temporary directory; the only edits are its location
(``/etc/nginx`` and ``/var/log/nginx`` point into the copy, so the test touches no system
file) and the site: Debian's ``default`` file-serving site is replaced by one that
passes to a test backend with Debian's own ``proxy_params``.
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess

STOCK = Path("/etc/nginx")


pytestmark = [
    pytest.mark.skipif(
        not (STOCK / "nginx.conf").exists(), reason="Debian's nginx package is not installed"
    ),
]


def _copy(tmp: Path, backend: str, port: int) -> Path:
    root = tmp / "etc-nginx"
    shutil.copytree(STOCK, root, symlinks=False)
    (tmp / "log").mkdir()
    for path in root.rglob("*"):
        if path.is_file() and not path.is_symlink():
            text = path.read_bytes().decode("latin-1")
            moved = text.replace("/etc/nginx", str(root))
            moved = moved.replace("/var/log/nginx", str(tmp / "log"))
            if moved != text:
                path.write_bytes(moved.encode("latin-1"))
    for site in (root / "sites-enabled").iterdir():
        site.unlink()
    (root / "sites-enabled" / "app").write_text(
        f"""server {{
    listen 127.0.0.1:{port};
    server_name app.test;
    location / {{
        proxy_pass http://{backend};
        include {root}/proxy_params;
    }}
}}
"""
    )
    return root / "nginx.conf"


def test_the_stock_file_checks_with_only_notices(tmp_path: Path) -> None:
    conf = _copy(tmp_path, "127.0.0.1:9", free_port())
    result = subprocess.run(
        [sys.executable, "-m", "nonstop", "check", "-c", str(conf)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    noticed = set(re.findall(r'directive "([a-z_]+)" has no effect', result.stderr))
    assert noticed <= {"user", "pid", "sendfile", "tcp_nopush", "types_hash_max_size"}
    assert "[emerg]" not in result.stderr


def test_the_stock_file_serves_the_proxy_site_and_logs_in_combined(tmp_path: Path) -> None:
    backend = RecordingBackend(name="app").start()
    port = free_port()
    conf = _copy(tmp_path, backend.address, port)
    proc = NonstopProcess(conf, [port]).start()
    try:
        request = urllib.request.Request(
            f"http://127.0.0.1:{port}/hello?x=1",
            headers={"Host": "app.test:8080", "User-Agent": "stock-test"},
        )
        with urllib.request.urlopen(request, timeout=10) as resp:
            assert resp.status == 200
        [got] = backend.received
        assert got.target == "/hello?x=1"
        assert got.header("host") == "app.test"  # proxy_params: $host, no port
        assert got.header("x-real-ip") == "127.0.0.1"
        assert got.header("x-forwarded-for") == "127.0.0.1"
        assert got.header("x-forwarded-proto") == "http"
        log = tmp_path / "log" / "access.log"
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not (log.exists() and log.read_text()):
            time.sleep(0.05)
        [line] = log.read_text().splitlines()
        assert re.fullmatch(
            r'127\.0\.0\.1 - - \[[^]]+\] "GET /hello\?x=1 HTTP/1\.1" 200 \d+ "-" "stock-test"',
            line,
        ), line
    finally:
        proc.stop()
        backend.stop()
