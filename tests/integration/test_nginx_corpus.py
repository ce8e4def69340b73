"""The corpus: nginx.conf files the way teams write them, run by a real nginx and by nonstop.

Each file in ``tests/corpus/`` is an http-context fragment modelled on one pattern the
public guides and distributions show (its first comment says which).  Its other comments
list the requests to send and the files it serves::

    #> PORT GET /path | Header: value | Other: value << body
    #file www/index.html: <h1>home</h1>\\n

``%NAME%`` placeholders stand for what differs between machines and runs: ``%PORT%``,
``%TLSPORT%``, ``%PORT2%``... (a loopback port of the fragment's own), ``%APP%``,
``%API%``, ``%AUTH%``, ``%WS%``, ``%BLUE%``, ``%GREEN%`` (recording backends, ``HOST:PORT``),
``%SOCK%`` (a unix-socket backend's path), ``%DIR%`` (the fragment's files), ``%LOGS%``
(where the engine writes logs), ``%CERT%``/``%KEY%`` (a certificate for ``example.test``
and its subdomains) and ``%DHPARAM%``.

All fragments go into ONE nginx.conf, run by one nginx and then by one nonstop, and each
request's outcome is compared: the status, every response header a client or cache acts on
(``Date``, ``Server`` and the framing left out, ``Expires`` as its distance from ``Date``),
the body (decompressed when gzip applies; each server's own built-in error page counts as
the same page), and for each backend the request reached: the method, the target, the
headers it was sent and the body.  Ports are shown as their placeholder names.

Every fragment must be accepted as written: a refusal fails the test, naming the directive.
"""

from __future__ import annotations

import gzip
import hashlib
import http.client
import io
import re
import shutil
import socket
import ssl
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import Any

import pytest
import trustme
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NginxProcess, NonstopProcess, differences, nginx_conf

from nonstop.config import load
from nonstop.errors import ConfigError

pytestmark = [
    pytest.mark.nginx,
    pytest.mark.skipif(NginxProcess.binary() is None, reason="nginx is not installed"),
    pytest.mark.skipif(not Path("/etc/nginx/mime.types").exists(), reason="no mime.types"),
]

CORPUS = Path(__file__).parents[1] / "corpus"
BACKENDS = ("app", "api", "auth", "ws", "blue", "green")
PLACEHOLDER = re.compile(r"%([A-Z]{2,}[0-9]*)%")
LISTENER = re.compile(r"[A-Z]*PORT[0-9]*")

# What Debian's stock nginx.conf puts in the http block before including the sites.
PRELUDE = """
  include /etc/nginx/mime.types;
  default_type application/octet-stream;
  sendfile on;
  tcp_nopush on;
  types_hash_max_size 2048;
"""


# Requests whose outcome nonstop knowingly answers otherwise ("Where nonstop knowingly
# differs" in docs/nginx-compatibility.md), by "fragment #n", with the reason.
KNOWN: dict[str, str] = {
    "16-maintenance-flag #4 POST /orders": "error_page is not applied while a body is unread",
    "07-spring-boot #3 GET /actuator/health": "no Connection: close to a keepalive upstream",
}

# Forwarded headers nonstop knowingly adds ("Where nonstop knowingly differs").
ADDED = {"x-request-id": "nonstop sends the app $request_id unless the config sets it"}

# Response headers that are no part of the comparison: each server's own, or framing.
UNCOMPARED = {"date", "connection", "keep-alive", "transfer-encoding"}
EXPIRES_MAX = "Thu, 31 Dec 2037 23:55:55 GMT"  # "expires max": a date, not a distance
OWN_SERVER = re.compile(r"nginx(/[\d.]+)?|nonstop")


@dataclass(frozen=True)
class Request:
    listener: str
    method: str
    target: str
    headers: tuple[str, ...]
    body: bytes


@dataclass(frozen=True)
class Entry:
    name: str
    pattern: str
    text: str
    requests: tuple[Request, ...]
    files: tuple[tuple[str, str], ...]

    def listeners(self) -> list[str]:
        return sorted({m for m in PLACEHOLDER.findall(self.text) if LISTENER.fullmatch(m)})


def parse(path: Path) -> Entry:
    lines = path.read_text().splitlines()
    requests = []
    files = []
    for line in lines:
        if line.startswith("#> "):
            spec, _, body = line[3:].partition(" << ")
            first, *headers = (part.strip() for part in spec.split(" | "))
            listener, method, target = first.split()
            requests.append(Request(listener, method, target, tuple(headers), body.encode()))
        elif line.startswith("#file "):
            name, _, content = line[6:].partition(": ")
            files.append((name, content.replace("\\n", "\n")))
    assert lines and lines[0].startswith("# "), f"{path.name}: first line names the pattern"
    return Entry(path.stem, lines[0][2:], "\n".join(lines), tuple(requests), tuple(files))


ENTRIES = [parse(path) for path in sorted(CORPUS.glob("*.conf"))]


def expand(text: str, values: dict[str, str]) -> str:
    return PLACEHOLDER.sub(lambda m: values[m.group(1)], text)


@dataclass
class World:
    """What every fragment shares: the backends, the certificate, the file tree."""

    root: Path
    backends: dict[str, RecordingBackend]
    ports: dict[str, dict[str, int]]  # fragment -> listener -> port
    client: ssl.SSLContext

    def values(self, entry: Entry, logs: Path) -> dict[str, str]:
        values = {name.upper(): backend.address for name, backend in self.backends.items()}
        values |= {name: str(port) for name, port in self.ports[entry.name].items()}
        values["SOCK"] = str(self.root / "app.sock")
        values["DIR"] = str(self.root / entry.name)
        values["LOGS"] = str(logs)
        values["CERT"] = str(self.root / "cert.pem")
        values["KEY"] = str(self.root / "key.pem")
        values["DHPARAM"] = str(CORPUS / "ffdhe2048.pem")
        return values

    def names(self) -> dict[str, str]:
        """Each port number as the placeholder it stands for."""
        names = {str(b.port): f"%{n.upper()}%" for n, b in self.backends.items() if b.port}
        for entry, listeners in self.ports.items():
            names |= {str(port): f"%{entry}:{name}%" for name, port in listeners.items()}
        return names


_TAKEN: set[int] = set()


def unique_port() -> int:
    """A free port no other fragment has: two would share a listener, and the server
    names would pick between them."""
    port = free_port()
    while port in _TAKEN:
        port = free_port()
    _TAKEN.add(port)
    return port


@pytest.fixture(scope="module")
def world() -> Iterator[World]:
    root = Path(tempfile.mkdtemp(prefix="nonstop-corpus-"))
    backends = {name: RecordingBackend(name=name).start() for name in BACKENDS}
    backends["sock"] = RecordingBackend(name="sock", unix=str(root / "app.sock")).start()
    try:
        ca = trustme.CA()
        cert = ca.issue_cert("example.test", "*.example.test", "localhost")
        cert.private_key_and_cert_chain_pem.write_to_path(str(root / "key.pem"))
        cert.cert_chain_pems[0].write_to_path(str(root / "cert.pem"))
        client = ssl.create_default_context()
        ca.configure_trust(client)
        ports = {e.name: {name: unique_port() for name in e.listeners()} for e in ENTRIES}
        built = World(root, backends, ports, client)
        for entry in ENTRIES:
            values = built.values(entry, root)
            (root / entry.name).mkdir()
            for name, content in entry.files:
                path = root / entry.name / name
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(expand(content, values))
        for path in [root, *root.rglob("*")]:  # nginx's workers run as another user
            path.chmod(0o777 if path.is_socket() else 0o755 if path.is_dir() else 0o644)
        yield built
    finally:
        for backend in backends.values():
            backend.stop()
        shutil.rmtree(root, ignore_errors=True)


def refusal(world: World, entry: Entry, where: Path) -> str | None:
    """Why nonstop refuses the fragment alone, or None if it loads."""
    where.mkdir(parents=True, exist_ok=True)
    shutil.copy("/etc/nginx/proxy_params", where)
    conf = where / f"{entry.name}.conf"
    conf.write_text(nginx_conf(where, PRELUDE + expand(entry.text, world.values(entry, where))))
    try:
        load(str(conf), str(where))
    except ConfigError as error:
        return str(error)
    return None


def exchange(port: int, request: Request, context: ssl.SSLContext | None) -> bytes:
    """Send one request on its own connection; the raw answer (the head alone for a 101)."""
    headers = list(request.headers)
    names = {h.partition(":")[0].strip().lower() for h in headers}
    host = next((h.partition(":")[2].strip() for h in headers if h.lower().startswith("host:")), "")
    if "host" not in names:
        host = "example.test"
        headers.insert(0, f"Host: {host}")
    if "connection" not in names:
        headers.append("Connection: close")
    if request.body:
        headers.append(f"Content-Length: {len(request.body)}")
    head = "\r\n".join([f"{request.method} {request.target} HTTP/1.1", *headers]) + "\r\n\r\n"
    raw = socket.create_connection(("127.0.0.1", port), timeout=10)
    sock = raw if context is None else context.wrap_socket(raw, server_hostname=host.split(":")[0])
    with sock:
        sock.sendall(head.encode("latin-1") + request.body)
        got = b""
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                chunk = sock.recv(1 << 20)
            except (ConnectionResetError, TimeoutError):
                break
            if not chunk:
                break
            got += chunk
            if got.startswith(b"HTTP/1.1 101") and b"\r\n\r\n" in got:
                break
        return got


def shown(text: str, names: dict[str, str]) -> str:
    return re.sub(r"\d{4,5}", lambda m: names.get(m.group(0), m.group(0)), text)


class _Received:
    """The bytes of an answer, where http.client reads a socket's."""

    def __init__(self, raw: bytes) -> None:
        self.file = io.BytesIO(raw)

    def makefile(self, mode: str) -> io.BytesIO:
        return self.file


def answer(raw: bytes, method: str, names: dict[str, str]) -> tuple[Any, ...]:
    """The status, the compared response headers and the body of a raw answer."""
    if not raw.startswith(b"HTTP/"):
        return 0, (), raw.decode("latin-1")
    parsed = http.client.HTTPResponse(_Received(raw), method=method)  # type: ignore[arg-type]
    parsed.begin()
    try:
        body = parsed.read()
    except http.client.IncompleteRead as cut:
        body = cut.partial
    status = parsed.status
    fields = [(key.lower(), value) for key, value in parsed.getheaders()]
    fmap = dict(fields)
    if fmap.get("content-encoding") == "gzip" and body:
        body = gzip.decompress(body)
    skip = set(UNCOMPARED)
    if fmap.get("content-encoding") == "gzip":
        skip.add("content-length")  # each compressor's own bytes; the body is compared
    builtin = method == "HEAD" and status >= 300 and fmap.get("content-type") == "text/html"
    if builtin or b"<hr><center>" in body:  # each server's own built-in error page
        body = b"(built-in page)" if body else b""
        skip.add("content-length")
    if status == 101:
        skip -= {"connection"}
    compared = []
    for key, value in fields:
        if key in skip or (key == "server" and OWN_SERVER.fullmatch(value)):
            continue
        if key == "expires" and "date" in fmap and value != EXPIRES_MAX:
            delta = parsedate_to_datetime(value) - parsedate_to_datetime(fmap["date"])
            value = f"Date{delta.total_seconds():+.0f}s"
        compared.append((key, shown(value, names)))
    text = body.decode("latin-1") if len(body) <= 300 else hashlib.sha256(body).hexdigest()[:16]
    return status, tuple(sorted(compared)), shown(text, names)


def run(
    engine: str, world: World, entries: list[Entry], prefix: Path
) -> dict[str, tuple[Any, ...]]:
    prefix.mkdir()
    shutil.copy("/etc/nginx/proxy_params", prefix)  # as in Debian's /etc/nginx
    parts = [expand(e.text, world.values(e, prefix)) for e in entries]
    conf = prefix / "nginx.conf"
    conf.write_text(nginx_conf(prefix, PRELUDE + "\n".join(parts)))
    ports = [port for e in entries for port in world.ports[e.name].values()]
    proc: NginxProcess | NonstopProcess
    if engine == "nginx":
        proc = NginxProcess(prefix, conf, ports)
    else:
        proc = NonstopProcess(conf, ports)
    proc.start()
    names = world.names()
    out: dict[str, tuple[Any, ...]] = {}
    try:
        for entry in entries:
            for number, request in enumerate(entry.requests, 1):
                for backend in world.backends.values():
                    backend.clear()
                values = world.values(entry, prefix)
                sent = Request(
                    request.listener,
                    request.method,
                    expand(request.target, values),
                    tuple(expand(h, values) for h in request.headers),
                    request.body,
                )
                tls = world.client if request.listener.startswith("TLS") else None
                raw = exchange(world.ports[entry.name][request.listener], sent, tls)
                reached = tuple(
                    (
                        r.method,
                        shown(r.target, names),
                        tuple(
                            sorted(
                                (k.lower(), shown(v, names))
                                for k, v in r.headers
                                if k.lower() not in ADDED
                            )
                        ),
                        r.body.decode("latin-1"),
                        name,
                    )
                    for name, backend in world.backends.items()
                    for r in backend.received
                )
                key = f"{entry.name} #{number} {request.method} {request.target}"
                out[key] = (*answer(raw, request.method, names), reached)
    finally:
        proc.stop()
    return out


def test_the_corpus_runs_under_nonstop_as_under_nginx(world: World) -> None:
    assert len(ENTRIES) >= 40
    assert all(entry.requests for entry in ENTRIES), "each fragment says what to send"
    refused = {e.name: refusal(world, e, world.root / "alone") for e in ENTRIES}
    unexpected = {name: why for name, why in refused.items() if why is not None}
    accepted = [e for e in ENTRIES if refused[e.name] is None]
    nginx = run("nginx", world, ENTRIES, world.root / "nginx")
    nonstop = run("nonstop", world, accepted, world.root / "nonstop")
    compared = {
        key: outcome
        for key, outcome in nginx.items()
        if key.split(" ")[0] in {e.name for e in accepted} and key not in KNOWN
    }
    print(f"corpus: {len(accepted)} of {len(ENTRIES)} fragments accepted unchanged")
    for name, why in sorted(refused.items()):
        if why is not None:
            print(f"  left out {name}: {why}")
    differ = differences(compared, nonstop)
    for key, both in differ.items():
        print(f"DIFF {key}\n  nginx:   {both['nginx']}\n  nonstop: {both['nonstop']}")
    assert differ == {}
    assert unexpected == {}
    # the comparison rests on answers that went where the configs say
    assert all(outcome[0] > 0 for outcome in nginx.values())
    assert sum(1 for outcome in nginx.values() if outcome[3]) >= len(nginx) // 2
    assert {key: nginx[key][0] for key in LANDMARKS} == LANDMARKS
    assert ("content-encoding", "gzip") in nginx["24-gzip-block #1 GET /app.css"][1]


# What nginx answers to a few requests: the corpus exercises what it says it does.
LANDMARKS = {
    "03-certbot-managed-host #1 GET /login?next=/": 301,
    "03-certbot-managed-host #4 GET /api/items?page=2": 200,
    "12-compose-front #4 GET /api": 301,
    "14-websocket-map #1 GET /upgrade": 101,
    "16-maintenance-flag #1 GET /": 503,
    "22-auth-basic-admin #1 GET /admin/": 401,
    "22-auth-basic-admin #3 GET /admin/stats": 200,
    "23-limit-req-login #3 POST /login": 429,
    "29-timeouts #1 GET /reports/sleep/2": 504,
    "43-satisfy-any #2 GET /strict/": 401,
}
