"""TLS termination by a running nonstop, seen by real clients: Python's ssl, curl, openssl.

Certificates are made per test with trustme; the proxy runs as a subprocess with an
nginx.conf listening on a plain port (the https redirect) and a TLS port.
"""

from __future__ import annotations

import http.client
import json
import shutil
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import trustme
from cryptography import x509
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess, raw_request

# The seed's front server, as written there (TLSv1 and TLSv1.1 load; OpenSSL may refuse them).
SEED_TLS = """
    ssl_protocols TLSv1 TLSv1.1 TLSv1.2;
    ssl_prefer_server_ciphers on;
    ssl_ciphers ECDH+AESGCM:ECDH+AES256:ECDH+AES128:DH+3DES:!ADH:!AECDH:!MD5;
    ssl_session_cache shared:SSL:10m;
    ssl_session_timeout 10m;
"""


class Site:
    """A CA, certificate files, a backend and a nonstop serving example.com over TLS."""

    def __init__(self, tmp: Path, backend: RecordingBackend) -> None:
        self.dir = tmp
        self.backend = backend
        self.ca = trustme.CA()
        self.ca_file = tmp / "ca.pem"
        self.ca.cert_pem.write_to_path(str(self.ca_file))
        self.plain = free_port()
        self.tls = free_port()
        self.dead = free_port()  # nothing listens: the proxy's own 502
        self.path = tmp / "nginx.conf"
        self.process: NonstopProcess | None = None

    def issue(self, stem: str, *names: str) -> None:
        cert = self.ca.create_child_ca().issue_cert(*names)  # served as a full chain
        (self.dir / f"{stem}.crt").write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        (self.dir / f"{stem}.key").write_bytes(cert.private_key_pem.bytes())

    def config(self, tls: str = SEED_TLS, api_key: str = "api.key") -> str:
        return f"""
events {{}}
http {{
  access_log off;
  upstream app {{
    server {self.backend.address};
    keepalive 4;
  }}
  server {{
    listen 127.0.0.1:{self.plain};
    server_name example.com;
    return 301 https://$host$request_uri;
  }}
  server {{
    listen 127.0.0.1:{self.tls} ssl;
    server_name example.com;
    ssl_certificate site.crt;
    ssl_certificate_key site.key;
    {tls}
    add_header Strict-Transport-Security "max-age=31536000" always;
    client_max_body_size 2m;
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header X-Forwarded-Proto $scheme;
    }}
    location /down/ {{
      proxy_pass http://127.0.0.1:{self.dead};
    }}
    location = /local {{
      return 200 "local\\n";
    }}
    location /upgrade {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Upgrade $http_upgrade;
      proxy_set_header Connection "upgrade";
    }}
  }}
  server {{
    listen 127.0.0.1:{self.tls} ssl;
    server_name *.api.test;
    ssl_certificate api.crt;
    ssl_certificate_key {api_key};
    location / {{
      proxy_pass http://app;
    }}
  }}
}}
"""

    def start(self, text: str | None = None) -> Site:
        self.path.write_text(text or self.config())
        self.process = NonstopProcess(
            self.path, [self.plain, self.tls], ["--shutdown-timeout", "5s"]
        ).start()
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nonstop", *args, "-c", str(self.path)],
            capture_output=True,
            text=True,
            timeout=30,
            cwd=self.dir,
        )

    def client_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        return context

    def connect(self, sni: str | None = "example.com") -> Client:
        return Client(self.tls, sni, self.client_context())

    def tls_socket(self, ragged_eof_is_error: bool = False) -> ssl.SSLSocket:
        """A raw TLS socket to example.com, for bytes no HTTP client would send."""
        raw = socket.create_connection(("127.0.0.1", self.tls), timeout=10)
        return self.client_context().wrap_socket(
            raw, server_hostname="example.com", suppress_ragged_eofs=not ragged_eof_is_error
        )


def read_to_end(sock: socket.socket) -> bytes:
    """Everything until the peer closes."""
    answer = b""
    while chunk := sock.recv(65536):
        answer += chunk
    return answer


class Client(http.client.HTTPSConnection):
    """An HTTPS connection to 127.0.0.1 that sends ``sni`` and verifies it against the CA."""

    def __init__(self, port: int, sni: str | None, context: ssl.SSLContext) -> None:
        if sni is None:
            context.check_hostname = False
        super().__init__(sni or "127.0.0.1", port, timeout=10, context=context)
        self.sni = sni
        self.tls_context = context

    def connect(self) -> None:
        raw = socket.create_connection(("127.0.0.1", self.port), self.timeout)
        self.sock = self.tls_context.wrap_socket(raw, server_hostname=self.sni)

    def get(self, path: str, body: bytes | None = None) -> tuple[int, dict[str, str], bytes]:
        self.request("POST" if body is not None else "GET", path, body=body)
        resp = self.getresponse()
        data = resp.read()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data

    def peer_names(self) -> list[str]:
        assert isinstance(self.sock, ssl.SSLSocket)
        cert = self.sock.getpeercert()
        return [value for kind, value in cert.get("subjectAltName", ()) if kind == "DNS"]


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Callable[..., Site]]:
    made: list[Site] = []
    backends: list[RecordingBackend] = []

    def make(start: bool = True) -> Site:
        backend = RecordingBackend(name="b1").start()
        backends.append(backend)
        s = Site(tmp_path, backend)
        s.issue("site", "example.com", "www.example.com")
        s.issue("api", "*.api.test")
        made.append(s)
        return s.start() if start else s

    yield make
    for s in made:
        s.stop()
    for backend in backends:
        backend.stop()


def s_client(site: Site, *args: str) -> str:
    """One request through ``openssl s_client``; it waits for the proxy to close, so the
    whole handshake summary is printed before it exits."""
    result = subprocess.run(
        [
            "openssl",
            "s_client",
            "-connect",
            f"127.0.0.1:{site.tls}",
            "-CAfile",
            str(site.ca_file),
            "-ign_eof",
            *args,
        ],
        input="GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n",
        capture_output=True,
        text=True,
        timeout=15,
    )
    return result.stdout + result.stderr


def served_names(output: str) -> list[str]:
    """The SAN DNS names of the leaf certificate in ``openssl s_client`` output."""
    begin = output.index("-----BEGIN CERTIFICATE-----")
    end = output.index("-----END CERTIFICATE-----") + len("-----END CERTIFICATE-----")
    cert = x509.load_pem_x509_certificate(output[begin:end].encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName)
    return list(san.value.get_values_for_type(x509.DNSName))


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="no openssl")
needs_curl = pytest.mark.skipif(shutil.which("curl") is None, reason="no curl")


# --------------------------------------------------------------------------- requests


def test_get_through_tls_reaches_the_backend_with_https_forwarded_proto(site) -> None:
    s = site()
    conn = s.connect()
    status, headers, body = conn.get("/echo?q=1")
    conn.close()
    assert status == 200
    seen = json.loads(body)
    assert seen["target"] == "/echo?q=1"
    assert ["X-Forwarded-Proto", "https"] in seen["headers"]
    assert headers["strict-transport-security"] == "max-age=31536000"


def test_hsts_is_added_to_the_proxys_own_502(site) -> None:
    s = site()
    conn = s.connect()
    status, headers, _ = conn.get("/down/x")
    conn.close()
    assert status == 502
    assert headers["strict-transport-security"] == "max-age=31536000"


def test_plain_port_redirects_to_https_keeping_the_query(site) -> None:
    s = site()
    conn = http.client.HTTPConnection("127.0.0.1", s.plain, timeout=10)
    conn.request("GET", "/a/b?x=1&y=%20z", headers={"Host": "example.com"})
    resp = conn.getresponse()
    resp.read()
    conn.close()
    assert resp.status == 301
    assert resp.getheader("Location") == "https://example.com/a/b?x=1&y=%20z"


def test_several_requests_share_one_tls_connection(site) -> None:
    s = site()
    conn = s.connect()
    conn.get("/")
    first = conn.sock
    for i in range(5):
        status, _, body = conn.get(f"/echo?i={i}")
        assert status == 200 and json.loads(body)["target"] == f"/echo?i={i}"
        assert conn.sock is first
    conn.close()


def test_one_megabyte_goes_up_and_down_over_tls(site) -> None:
    s = site()
    conn = s.connect()
    upload = bytes(range(256)) * 4096  # 1 MiB
    status, _, body = conn.get("/echo", body=upload)
    assert status == 200
    assert json.loads(body)["body"].encode("latin-1") == upload
    status, _, body = conn.get(f"/big/{1024 * 1024}")
    conn.close()
    assert status == 200 and body == b"x" * (1024 * 1024)


def test_interleaved_uploads_on_two_tls_connections_each_arrive_whole(site) -> None:
    """Decrypted bytes land in a buffer shared by every TLS connection: each request
    must still carry exactly its own bytes when reads of two connections alternate."""
    s = site()
    size, step = 512 * 1024, 16 * 1024
    bodies = [bytes([65 + i]) * size for i in range(2)]
    socks = []
    for _ in bodies:
        raw = socket.create_connection(("127.0.0.1", s.tls), timeout=10)
        tls = s.client_context().wrap_socket(raw, server_hostname="example.com")
        tls.sendall(
            b"POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n"
            b"Connection: close\r\n\r\n" % size
        )
        socks.append(tls)
    for offset in range(0, size, step):
        for tls, body in zip(socks, bodies, strict=True):
            tls.sendall(body[offset : offset + step])
    for tls, body in zip(socks, bodies, strict=True):
        answer = read_to_end(tls)
        tls.close()
        head, _, payload = answer.partition(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 200"), head
        assert json.loads(payload)["body"].encode("latin-1") == body


def test_upgrade_over_tls_tunnels_bytes_sent_with_the_head_and_after(site) -> None:
    s = site()
    tls = s.tls_socket()
    tls.sendall(  # the first frame rides in the same record as the request head
        b"GET /upgrade HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
        b"Connection: Upgrade\r\n\r\nfirst-frame"
    )
    got = b""
    while b"first-frame" not in got:
        chunk = tls.recv(65536)
        assert chunk, got
        got += chunk
    assert got.startswith(b"HTTP/1.1 101"), got
    for i in range(20):
        frame = b"frame-%d-" % i + bytes([97 + i]) * 40000
        tls.sendall(frame)
        echoed = b""
        while len(echoed) < len(frame):
            chunk = tls.recv(65536)
            assert chunk, echoed[:80]
            echoed += chunk
        assert echoed == frame
    tls.close()


def test_two_requests_in_one_tls_record_are_both_answered_in_order(site) -> None:
    s = site()
    tls = s.tls_socket()
    tls.sendall(  # one write: one record holding both requests
        b"GET /echo?n=1 HTTP/1.1\r\nHost: example.com\r\n\r\n"
        b"GET /echo?n=2 HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n"
    )
    answer = read_to_end(tls)
    tls.close()
    assert answer.count(b"HTTP/1.1 200 ") == 2, answer[:300]
    assert answer.index(b"/echo?n=1") < answer.index(b"/echo?n=2")


def test_a_slow_reader_gets_eight_megabytes_whole(site) -> None:
    """The TCP transport's write flow control reaches the connection through TLS."""
    s = site()
    size = 8 * 1024 * 1024
    raw = socket.create_connection(("127.0.0.1", s.tls), timeout=10)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 16384)
    tls = s.client_context().wrap_socket(raw, server_hostname="example.com")
    tls.sendall(b"GET /big/%d HTTP/1.1\r\nHost: example.com\r\n\r\n" % size)
    answer = bytearray()
    time.sleep(0.5)  # let the proxy fill every buffer and pause
    while b"\r\n\r\n" not in answer or len(answer) - answer.index(b"\r\n\r\n") - 4 < size:
        chunk = tls.recv(65536)
        assert chunk, len(answer)
        answer += chunk
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 ") and body == b"x" * size
    # the same connection goes on
    tls.sendall(b"GET /echo HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    more = read_to_end(tls)
    tls.close()
    assert more.startswith(b"HTTP/1.1 200 ")


def test_close_notify_from_the_client_is_answered_with_close_notify(site) -> None:
    s = site()
    tls = s.tls_socket()
    tls.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
    plain = tls.unwrap()  # a full two-way shutdown: it returns once the proxy's arrives
    assert plain.recv(1) == b""  # then the proxy closed the socket
    plain.close()


def test_a_request_then_fin_without_close_notify_still_gets_its_response(site) -> None:
    s = site()
    tls = s.tls_socket()
    tls.sendall(b"GET /sleep/0.3 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    socket.socket.shutdown(tls, socket.SHUT_WR)  # TCP half-close under the TLS session
    answer = read_to_end(tls)
    tls.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]


def test_a_request_then_close_notify_still_gets_its_response(site) -> None:
    """TLS half-close: the client's close_notify follows its request at once."""
    s = site()
    raw = socket.create_connection(("127.0.0.1", s.tls), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = s.client_context().wrap_bio(incoming, outgoing, server_hostname="example.com")

    def pump_until(step: Callable[[], object]) -> object:
        while True:
            try:
                return step()
            except ssl.SSLWantReadError:
                raw.sendall(outgoing.read())
                data = raw.recv(65536)
                if not data:
                    incoming.write_eof()
                else:
                    incoming.write(data)

    pump_until(client.do_handshake)
    client.write(b"GET /sleep/0.3 HTTP/1.1\r\nHost: example.com\r\n\r\n")
    try:
        client.unwrap()  # queues close_notify; the server's is still to come
    except ssl.SSLWantReadError:
        pass
    raw.sendall(outgoing.read())
    answer = b""
    while True:
        try:
            chunk = pump_until(lambda: client.read(65536))
        except (ssl.SSLZeroReturnError, ssl.SSLEOFError):
            break
        if not chunk:
            break
        assert isinstance(chunk, bytes)
        answer += chunk
    raw.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]


def test_an_answer_written_before_a_broken_record_in_the_same_read_still_goes_out(
    site,
) -> None:
    """A good request's record and a broken one arrive in one read: the answer to the
    first, written in that turn of the loop, is sent before TLS fails on the second."""
    s = site()
    # a second connection, kept open: with more than one, writes wait for the turn's end
    # (its answered request shows the proxy has it before the TLS connection starts)
    bystander = socket.create_connection(("127.0.0.1", s.plain), timeout=10)
    bystander.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert bystander.recv(65536).startswith(b"HTTP/1.1 301 ")
    raw = socket.create_connection(("127.0.0.1", s.tls), timeout=10)
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    client = s.client_context().wrap_bio(incoming, outgoing, server_hostname="example.com")
    while True:
        try:
            client.do_handshake()
            break
        except ssl.SSLWantReadError:
            raw.sendall(outgoing.read())
            incoming.write(raw.recv(65536))
    client.write(b"GET /local HTTP/1.1\r\nHost: example.com\r\n\r\n")
    good = outgoing.read()
    broken = b"\x17\x03\x03\x00\x20" + bytes(range(32))  # application data, bad MAC
    raw.sendall(good + broken)  # one segment on loopback: one read for the proxy
    answer = b""
    alert: ssl.SSLError | None = None
    while alert is None and (data := raw.recv(65536)):
        incoming.write(data)
        try:
            while chunk := client.read(65536):
                answer += chunk
        except ssl.SSLWantReadError:
            pass
        except ssl.SSLError as exc:
            alert = exc
    raw.close()
    bystander.close()
    assert answer.startswith(b"HTTP/1.1 200 "), answer[:100]
    assert answer.endswith(b"local\n")
    assert alert is not None and "BAD_RECORD_MAC" in str(alert)  # the broken record's


def test_requests_in_separate_records_then_fin_are_all_answered(site) -> None:
    """Records left waiting while the first request fails go before the FIN behind them."""
    s = site()
    tls = s.tls_socket()
    for target in (b"/down/x", b"/echo?n=2", b"/echo?n=3"):
        tls.sendall(b"GET %s HTTP/1.1\r\nHost: example.com\r\n\r\n" % target)
    socket.socket.shutdown(tls, socket.SHUT_WR)
    answer = read_to_end(tls)
    tls.close()
    assert answer.count(b"HTTP/1.1 ") == 3, answer[:500]
    assert answer.startswith(b"HTTP/1.1 502 ")
    assert answer.index(b"/echo?n=2") < answer.index(b"/echo?n=3")


def test_a_response_cut_off_upstream_ends_without_close_notify(site) -> None:
    """close_notify would tell the client the bytes it got are the whole response."""
    s = site()
    tls = s.tls_socket(ragged_eof_is_error=True)
    tls.sendall(b"GET /cut HTTP/1.1\r\nHost: example.com\r\n\r\n")
    answer = b""
    with pytest.raises(ssl.SSLEOFError):
        while chunk := tls.recv(65536):
            answer += chunk
    tls.close()
    assert answer.startswith(b"HTTP/1.1 200 ") and answer.endswith(b"partial-body")
    # an answer that ends well ends with close_notify: recv sees a clean end
    tls = s.tls_socket(ragged_eof_is_error=True)
    tls.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
    answer = read_to_end(tls)
    tls.close()
    assert answer.startswith(b"HTTP/1.1 200 ")


def test_an_upload_over_the_limit_gets_its_413_while_still_sending(site) -> None:
    """Lingering close over TLS: close_notify, our half shut, the rest read and dropped,
    so the client's unread bytes do not turn the 413 into a reset."""
    s = site()
    tls = s.tls_socket()
    size = 8 * 1024 * 1024  # client_max_body_size is 2m
    tls.sendall(b"POST /echo HTTP/1.1\r\nHost: example.com\r\nContent-Length: %d\r\n\r\n" % size)
    answer = b""
    sent = 0
    tls.settimeout(0.05)
    while sent < size and b"\r\n\r\n" not in answer:
        try:
            sent += tls.send(b"x" * 65536)
        except (TimeoutError, ssl.SSLWantWriteError):
            pass
        except (BrokenPipeError, ConnectionResetError):
            break
        try:
            answer += tls.recv(65536)
        except (TimeoutError, ssl.SSLWantReadError):
            pass
    tls.settimeout(5)
    try:
        while chunk := tls.recv(65536):
            answer += chunk
    except (ssl.SSLError, OSError):
        pass
    tls.close()
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]


@needs_openssl
def test_a_server_name_that_is_not_ascii_fails_quietly(site) -> None:
    s = site()
    out = s_client(s, "-servername", "\u00e9.example.com")
    assert "HTTP/1.1 200" not in out
    assert s.process is not None
    err = s.process.stderr()
    assert "Traceback" not in err and "Exception ignored" not in err, err[-2000:]
    conn = s.connect()
    assert conn.get("/")[0] == 200
    conn.close()


def test_bytes_that_are_not_tls_are_logged_and_closed_and_nothing_is_forwarded(site) -> None:
    s = site(start=False)
    s.start(s.config().replace("http {", "http {\n  error_log stderr info;", 1))
    seen = len(s.backend.paths())
    answer = raw_request(s.tls, b"GET /plain HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert b"HTTP/1.1 200" not in answer
    assert s.backend.paths()[seen:] == []
    assert s.process is not None
    deadline = time.monotonic() + 5
    while "while SSL handshaking, client: 127.0.0.1" not in s.process.stderr():
        assert time.monotonic() < deadline, s.process.stderr()
        time.sleep(0.05)
    conn = s.connect()
    assert conn.get("/")[0] == 200  # and the listener goes on
    conn.close()


def test_a_client_that_never_finishes_the_handshake_is_closed_at_the_header_timeout(
    site,
) -> None:
    s = site(start=False)
    s.start(s.config().replace("http {", "http {\n  client_header_timeout 1s;", 1))
    raw = socket.create_connection(("127.0.0.1", s.tls), timeout=10)
    started = time.monotonic()
    raw.sendall(b"\x16\x03\x01")  # the first bytes of a ClientHello, then nothing
    assert raw.recv(1024) == b""
    assert 0.5 < time.monotonic() - started < 5
    raw.close()


def test_connections_past_worker_connections_get_503_over_tls(site) -> None:
    s = site(start=False)
    s.start(s.config().replace("events {}", "events { worker_connections 2; }", 1))
    held = [socket.create_connection(("127.0.0.1", s.tls), timeout=5) for _ in range(2)]
    try:
        conn = s.connect()
        status, _, _ = conn.get("/")
        conn.close()
        assert status == 503
    finally:
        for sock in held:
            sock.close()


def test_shutdown_closes_an_idle_tls_connection_with_close_notify(site) -> None:
    s = site()
    tls = s.tls_socket()
    tls.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\n\r\n")
    assert tls.recv(65536).startswith(b"HTTP/1.1 200 ")
    s.stop()
    assert tls.recv(1024) == b""  # close_notify read as a clean end, not an SSLEOFError
    tls.close()


def test_session_ticket_resumes_a_second_connection(site) -> None:
    s = site()
    context = s.client_context()
    sessions = []
    for _ in range(2):
        raw = socket.create_connection(("127.0.0.1", s.tls), 10)
        session = sessions[-1] if sessions else None
        with context.wrap_socket(raw, server_hostname="example.com", session=session) as sock:
            sock.sendall(b"GET / HTTP/1.1\r\nHost: example.com\r\nConnection: close\r\n\r\n")
            while sock.recv(65536):
                pass
            sessions.append(sock.session)
            reused = sock.session_reused
    assert reused


@needs_curl
def test_curl_with_the_ca_gets_the_backend_response(site) -> None:
    s = site()
    result = subprocess.run(
        [
            "curl",
            "-sS",
            "-i",
            "--cacert",
            str(s.ca_file),
            "--resolve",
            f"example.com:{s.tls}:127.0.0.1",
            f"https://example.com:{s.tls}/",
        ],
        capture_output=True,
        text=True,
        timeout=15,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200")
    assert "strict-transport-security: max-age=31536000" in result.stdout.lower()
    assert result.stdout.endswith("b1")


# --------------------------------------------------------------------------- certificates


def test_sni_chooses_the_certificate_by_exact_and_wildcard_name(site) -> None:
    s = site()
    for sni, names in [
        ("example.com", ["example.com", "www.example.com"]),
        ("www.example.com", ["example.com", "www.example.com"]),
        ("v1.api.test", ["*.api.test"]),
    ]:
        conn = s.connect(sni)
        assert conn.get("/")[0] == 200
        assert conn.peer_names() == names
        conn.close()


def test_unknown_or_missing_sni_gets_the_default_servers_certificate(site) -> None:
    s = site()
    for sni in ("unknown.test", None):
        conn = s.connect(sni)
        if sni is not None:
            conn.tls_context.check_hostname = False
        assert conn.get("/")[0] == 200
        assert conn.peer_names() == ["example.com", "www.example.com"]
        conn.close()


@needs_openssl
def test_openssl_s_client_sees_sni_choice_verified_chain_and_alpn(site) -> None:
    s = site()
    out = s_client(s, "-servername", "x.api.test", "-alpn", "http/1.1", "-showcerts")
    assert served_names(out) == ["*.api.test"]
    assert "Verify return code: 0 (ok)" in out
    assert "ALPN protocol: http/1.1" in out
    assert "HTTP/1.1 200 OK" in out  # the request went through
    out = s_client(s, "-noservername")
    assert served_names(out) == ["example.com", "www.example.com"]


@needs_openssl
def test_protocols_follow_ssl_protocols(site) -> None:
    s = site()  # the seed's "TLSv1 TLSv1.1 TLSv1.2": no TLS 1.3
    out = s_client(s, "-servername", "example.com", "-tls1_2")
    assert "Protocol  : TLSv1.2" in out and "HTTP/1.1 200 OK" in out
    refused = s_client(s, "-servername", "example.com", "-tls1_3")
    assert "Cipher is (NONE)" in refused and "HTTP/1.1" not in refused
    s.stop()
    s.start(s.config(tls=""))  # defaults: TLSv1.2 and TLSv1.3
    out = s_client(s, "-servername", "example.com")
    assert "Protocol  : TLSv1.3" in out and "HTTP/1.1 200 OK" in out


# --------------------------------------------------------------------------- reload


def test_reload_serves_a_new_certificate_and_keeps_an_open_connection(site) -> None:
    s = site()
    kept = s.connect()
    assert kept.get("/")[0] == 200
    sock = kept.sock
    s.issue("site", "example.com", "renewed.example.com")
    result = s.cli("reload")
    assert result.returncode == 0, result.stderr
    assert kept.get("/echo")[0] == 200
    assert kept.sock is sock
    assert kept.peer_names() == ["example.com", "www.example.com"]
    kept.close()
    fresh = s.connect()
    assert fresh.get("/")[0] == 200
    assert fresh.peer_names() == ["example.com", "renewed.example.com"]
    fresh.close()


def test_reload_with_a_broken_key_is_refused_and_the_old_certificate_stays(site) -> None:
    s = site()
    kept = s.connect()
    assert kept.get("/")[0] == 200
    s.issue("site", "example.com", "renewed.example.com")
    s.path.write_text(s.config(api_key="site.key"))  # api.crt with another certificate's key
    result = s.cli("reload")
    assert result.returncode == 2
    assert f'certificate "{s.dir / "api.crt"}" does not match key' in result.stderr
    assert str(s.path) in result.stderr
    assert kept.get("/")[0] == 200
    kept.close()
    fresh = s.connect()
    assert fresh.get("/")[0] == 200
    assert fresh.peer_names() == ["example.com", "www.example.com"]
    fresh.close()


# --------------------------------------------------------------------------- errors


def test_check_names_a_missing_certificate_and_its_config_line(site) -> None:
    s = site(start=False)
    s.path.write_text(s.config())
    (s.dir / "api.crt").unlink()
    result = s.cli("check")
    assert result.returncode == 2
    assert f'cannot load certificate "{s.dir / "api.crt"}": no such file' in result.stderr
    assert f"{s.path}:" in result.stderr


def test_start_with_a_mismatched_key_exits_2_naming_the_files(site) -> None:
    s = site(start=False)
    s.path.write_text(s.config(api_key="site.key"))
    result = subprocess.run(
        [sys.executable, "-m", "nonstop", "run", "-c", str(s.path)],
        capture_output=True,
        text=True,
        timeout=30,
        cwd=s.dir,
    )
    assert result.returncode == 2
    assert f'certificate "{s.dir / "api.crt"}" does not match key' in result.stderr
