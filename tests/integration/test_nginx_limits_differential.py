"""auth_basic, satisfy and limit_req: a real nginx and nonstop, same config, same requests.

Each outcome is the status, the WWW-Authenticate header, the Authorization header the
backend got and the targets it saw.  The limit_req zones run at one request a minute,
so a run of requests sent one after another is deterministic: the bucket drains less
than one request while they are sent, and the count of 503s is nginx's arithmetic.
"""

from __future__ import annotations

import base64
import hashlib
import shutil
import socket
import struct
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, differences, nginx_conf, raw_request, start_engine

from nonstop.proxy.passwords import system_crypt

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
]


def htpasswd() -> str:
    """One user per hash scheme nginx knows, each with the password "pw-USER"."""
    apr1 = subprocess.run(
        ["openssl", "passwd", "-apr1", "-salt", "s4lt", "pw-apr"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout.strip()
    sha = base64.b64encode(hashlib.sha1(b"pw-sha").digest()).decode()
    ssha = base64.b64encode(hashlib.sha1(b"pw-sshaNaCl").digest() + b"NaCl").decode()
    lines = [
        "# the test's users",
        "plain:{PLAIN}pw-plain:a comment",
        f"apr:{apr1}",
        f"sha:{{SHA}}{sha}",
        f"ssha:{{SSHA}}{ssha}",
        "plain:{PLAIN}second-entry-ignored",
    ]
    for user, setting in (
        ("md5", b"$1$salty$"),
        ("sha512", b"$6$saltsalt$"),
        ("yes", b"$y$j9T$abcdefghijklmnop$"),
        ("bcrypt", b"$2b$05$abcdefghijklmnopqrstuu"),
    ):
        lines.append(f"{user}:{system_crypt(f'pw-{user}'.encode(), setting).decode()}")
    return "\n".join(lines) + "\n"


def config(port: int, prefix: Path, backend: str, shared: Path) -> str:
    users = shared / "htpasswd"
    auth = f'auth_basic "Team Area"; auth_basic_user_file {users};'
    return nginx_conf(
        prefix,
        f"""
  upstream app {{ server {backend}; }}
  limit_req_zone $binary_remote_addr zone=nodelay:1m rate=1r/m;
  limit_req_zone $binary_remote_addr zone=status:1m rate=1r/m;
  limit_req_zone $http_x_key zone=bykey:1m rate=1r/m;
  limit_req_zone $binary_remote_addr zone=first:1m rate=1r/m;
  limit_req_zone $http_x_key zone=second:1m rate=1r/m;
  server {{
    listen 127.0.0.1:{port};
    server_name example.test;
    {auth}
    location /auth/ {{ proxy_pass http://app; }}
    location /open/ {{ auth_basic off; proxy_pass http://app; }}
    location /any-denied/ {{ satisfy any; deny all; proxy_pass http://app; }}
    location /any-allowed/ {{ satisfy any; allow 127.0.0.1; deny all; proxy_pass http://app; }}
    location /any-unmatched/ {{ satisfy any; allow 10.0.0.0/8; proxy_pass http://app; }}
    location /any-no-auth/ {{ satisfy any; auth_basic off; deny all; proxy_pass http://app; }}
    location /all-denied/ {{ deny all; proxy_pass http://app; }}
    location /all-allowed/ {{ allow 127.0.0.1; deny all; proxy_pass http://app; }}
    location /burst/ {{
      auth_basic off;
      limit_req zone=nodelay burst=2 nodelay;
      proxy_pass http://app;
    }}
    location /coded/ {{
      auth_basic off;
      limit_req zone=status;
      limit_req_status 429;
      proxy_pass http://app;
    }}
    location /key/ {{ auth_basic off; limit_req zone=bykey; proxy_pass http://app; }}
    location /two/ {{
      auth_basic off;
      limit_req zone=first burst=3 nodelay;
      limit_req zone=second nodelay;
      proxy_pass http://app;
    }}
  }}""",
    )


def basic(user: str, password: str) -> str:
    return "Authorization: Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


AUTH_CASES: list[tuple[str, str, tuple[str, ...]]] = [
    ("no-credentials", "/auth/x", ()),
    ("plain", "/auth/x", (basic("plain", "pw-plain"),)),
    ("plain-wrong", "/auth/x", (basic("plain", "second-entry-ignored"),)),
    ("apr1", "/auth/x", (basic("apr", "pw-apr"),)),
    ("apr1-wrong", "/auth/x", (basic("apr", "pw-ap"),)),
    ("sha", "/auth/x", (basic("sha", "pw-sha"),)),
    ("ssha", "/auth/x", (basic("ssha", "pw-ssha"),)),
    ("crypt-md5", "/auth/x", (basic("md5", "pw-md5"),)),
    ("crypt-sha512", "/auth/x", (basic("sha512", "pw-sha512"),)),
    ("crypt-yescrypt", "/auth/x", (basic("yes", "pw-yes"),)),
    ("crypt-bcrypt", "/auth/x", (basic("bcrypt", "pw-bcrypt"),)),
    ("crypt-wrong", "/auth/x", (basic("sha512", "pw-sha51"),)),
    ("unknown-user", "/auth/x", (basic("nobody", "pw-plain"),)),
    ("lowercase-scheme", "/auth/x", ("Authorization: basic " + basic("sha", "pw-sha")[21:],)),
    ("not-basic", "/auth/x", ("Authorization: Bearer abc",)),
    ("bad-base64", "/auth/x", ("Authorization: Basic %%%",)),
    ("no-colon", "/auth/x", ("Authorization: Basic " + base64.b64encode(b"plain").decode(),)),
    ("auth-off", "/open/x", ()),
    ("any-denied-no-credentials", "/any-denied/x", ()),
    ("any-denied-credentials", "/any-denied/x", (basic("plain", "pw-plain"),)),
    ("any-allowed", "/any-allowed/x", ()),
    ("any-unmatched", "/any-unmatched/x", ()),
    ("any-no-auth", "/any-no-auth/x", ()),
    ("all-denied", "/all-denied/x", (basic("plain", "pw-plain"),)),
    ("all-allowed-no-credentials", "/all-allowed/x", ()),
    ("all-allowed-credentials", "/all-allowed/x", (basic("plain", "pw-plain"),)),
]

LIMIT_RUNS: list[tuple[str, str, tuple[str, ...], int]] = [
    ("burst-nodelay", "/burst/x", (), 6),
    ("status", "/coded/x", (), 3),
    ("empty-key-not-counted", "/key/x", (), 4),
    ("key", "/key/x", ("X-Key: k1",), 3),
    ("two-zones-no-key", "/two/x", (), 6),
]


def outcome(port: int, target: str, headers: tuple[str, ...]) -> tuple[int, str | None]:
    lines = [f"GET {target} HTTP/1.1", "Host: example.test", *headers, "Connection: close"]
    data = raw_request(port, ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1"))
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1")
    status_line, *header_lines = head.split("\r\n")
    fields = {k.lower(): v.strip() for k, _, v in (h.partition(":") for h in header_lines)}
    return int(status_line.split(" ")[1]), fields.get("www-authenticate")


@pytest.fixture
def shared() -> Iterator[Path]:
    """A directory nginx's workers (another user) can read the password file in."""
    where = Path(tempfile.mkdtemp(prefix="nonstop-limits-"))
    where.chmod(0o755)
    (where / "htpasswd").write_text(htpasswd())
    (where / "htpasswd").chmod(0o644)
    yield where
    shutil.rmtree(where, ignore_errors=True)


def outcomes(engine: str, tmp: Path, shared: Path) -> dict[str, object]:
    prefix = tmp / engine
    prefix.mkdir()
    backend = RecordingBackend(name="app").start()
    port = free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(config(port, prefix, backend.address, shared))
    proc = start_engine(engine, prefix, conf, port)
    out: dict[str, object] = {}
    try:
        for name, target, headers in AUTH_CASES:
            backend.clear()
            status, challenge = outcome(port, target, headers)
            got = backend.received[0].header("Authorization") if backend.received else None
            out[name] = (status, challenge, got, tuple(backend.paths()))
        for name, target, headers, count in LIMIT_RUNS:
            out[name] = tuple(outcome(port, target, headers)[0] for _ in range(count))
        out["key-other-value"] = outcome(port, "/key/x", ("X-Key: k2",))[0]
        out["two-zones-keyed"] = tuple(
            outcome(port, "/two/x", (f"X-Key: {key}",))[0] for key in ("a", "b", "a")
        )
    finally:
        proc.stop()
        backend.stop()
    return out


def test_auth_basic_satisfy_and_limit_req_answer_as_in_nginx(tmp_path: Path, shared: Path) -> None:
    nginx = outcomes("nginx", tmp_path, shared)
    nonstop = outcomes("nonstop", tmp_path, shared)
    assert differences(nginx, nonstop) == {}
    # the comparison means something: nginx itself answered these
    assert nginx["plain"] == (200, None, basic("plain", "pw-plain")[15:], ("/auth/x",))
    assert nginx["no-credentials"][:2] == (401, 'Basic realm="Team Area"')
    assert nginx["any-denied-no-credentials"][0] == 401
    assert nginx["all-denied"][0] == 403
    assert nginx["burst-nodelay"] == (200, 200, 200, 503, 503, 503)
    assert nginx["status"] == (200, 429, 429)
    assert nginx["empty-key-not-counted"] == (200, 200, 200, 200)


def conn_config(port: int, inner: int, prefix: Path, backend: str) -> str:
    """limit_conn, held by a request the inner server's limit_req delays 4 s (as nginx-tests'
    limit_conn.t holds one)."""
    return nginx_conf(
        prefix,
        f"""
  upstream app {{ server {backend}; }}
  limit_req_zone $binary_remote_addr zone=req:1m rate=15r/m;
  limit_conn_zone $binary_remote_addr zone=zone:1m;
  limit_conn_zone $binary_remote_addr zone=zone2:1m;
  limit_conn_zone $http_x_key zone=key:1m;
  server {{
    listen 127.0.0.1:{inner};
    location /w {{ limit_req zone=req burst=10; proxy_pass http://app; }}
  }}
  server {{
    listen 127.0.0.1:{port};
    location /hold/ {{
      limit_conn zone 1;
      limit_conn key 1;
      proxy_pass http://127.0.0.1:{inner}/w;
    }}
    location /same/ {{ limit_conn zone 1; proxy_pass http://app; }}
    location /other/ {{ limit_conn zone2 1; proxy_pass http://app; }}
    location /unlim/ {{ limit_conn zone 5; proxy_pass http://app; }}
    location /custom/ {{ limit_conn zone 1; limit_conn_status 501; proxy_pass http://app; }}
    location /dry/ {{ limit_conn zone 1; limit_conn_dry_run on; proxy_pass http://app; }}
    location /key/ {{ limit_conn key 1; proxy_pass http://app; }}
  }}""",
    )


CONN_PROBES: list[tuple[str, str, tuple[str, ...]]] = [
    ("same-zone", "/same/x", ()),
    ("other-zone", "/other/x", ()),
    ("higher-limit", "/unlim/x", ()),
    ("custom-status", "/custom/x", ()),
    ("dry-run", "/dry/x", ()),
    ("same-key", "/key/x", ("X-Key: k",)),
    ("other-key", "/key/x", ("X-Key: j",)),
    ("empty-key", "/key/x", ()),
]


def conn_outcomes(engine: str, tmp: Path) -> dict[str, object]:
    prefix = tmp / engine
    prefix.mkdir()
    backend = RecordingBackend(name="app").start()
    port, inner = free_port(), free_port()
    conf = prefix / "nginx.conf"
    conf.write_text(conn_config(port, inner, prefix, backend.address))
    proc = start_engine(engine, prefix, conf, port)
    out: dict[str, object] = {}
    try:
        out["charge"] = outcome(inner, "/w", ())[0]
        held = socket.create_connection(("127.0.0.1", port), timeout=10)
        held.sendall(b"GET /hold/ HTTP/1.1\r\nHost: t\r\nX-Key: k\r\n\r\n")
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline and outcome(port, "/same/x", ())[0] != 503:
            time.sleep(0.01)  # until the held request is counted
        for name, target, headers in CONN_PROBES:
            out[name] = outcome(port, target, headers)[0]
        # the probes ran while the held request waited in the inner server's limit_req
        out["still-held"] = backend.paths().count("/w") == 1
        held.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        held.close()  # a reset: the request is aborted and gives its count back
        while outcome(port, "/same/x", ())[0] != 200 and time.monotonic() < deadline + 5:
            time.sleep(0.02)
        out["released"] = outcome(port, "/same/x", ())[0]
    finally:
        proc.stop()
        backend.stop()
    return out


def test_limit_conn_counts_and_releases_as_in_nginx(tmp_path: Path) -> None:
    nginx = conn_outcomes("nginx", tmp_path)
    nonstop = conn_outcomes("nonstop", tmp_path)
    assert differences(nginx, nonstop) == {}
    assert nginx["same-zone"] == 503 and nginx["custom-status"] == 501
    assert nginx["other-zone"] == nginx["higher-limit"] == nginx["dry-run"] == 200
    assert (nginx["same-key"], nginx["other-key"], nginx["empty-key"]) == (503, 200, 200)
    assert nginx["still-held"] is True and nginx["released"] == 200
