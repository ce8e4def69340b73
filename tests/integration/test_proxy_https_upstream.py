"""HTTPS upstreams on real sockets: ``proxy_pass https://`` and the proxy_ssl_* directives
against a real TLS backend (certificates from trustme), as nginx-tests' proxy_ssl.t,
proxy_ssl_verify.t, proxy_ssl_name.t and proxy_ssl_certificate.t check them from nginx's
side: verification on and off, a name the certificate does not have refused with 502 and
an error-log line, SNI only when asked for, a client certificate the backend requires,
and keep-alive connections to the TLS backend pooled.
"""

from __future__ import annotations

import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import trustme
from tests.integration.conftest import Proxy
from tests.support.backends import free_port, request_heads


class TlsApp:
    """An HTTPS keep-alive app: answers ``GET /`` with what it saw of the TLS handshake
    (the SNI name, the client certificate's common name), and counts connections."""

    def __init__(self, ca: trustme.CA, tmp: Path, require_client_cert: bool = False) -> None:
        self.port = free_port()
        cert = ca.issue_cert("backend.test", "127.0.0.1")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        cert.configure_cert(self.context)
        self.sni: list[str | None] = []
        self.context.sni_callback = self._sni
        if require_client_cert:
            ca.configure_trust(self.context)
            self.context.verify_mode = ssl.CERT_REQUIRED
        self.connections = 0
        self.sock = socket.create_server(("127.0.0.1", self.port))
        self.stopping = False
        threading.Thread(target=self._accept, daemon=True).start()

    def _sni(self, sslobj: ssl.SSLObject, name: str | None, context: ssl.SSLContext) -> None:
        self.sni.append(name)

    def _accept(self) -> None:
        while not self.stopping:
            try:
                raw, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            conn = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()
            return
        self.connections += 1
        peer = conn.getpeercert()
        subject = dict(item[0] for item in peer.get("subject", ())) if peer else {}
        try:
            for _ in request_heads(conn):
                sni = self.sni[-1] if self.sni else None
                body = f"sni={sni} client={subject.get('commonName')}"
                conn.sendall(
                    b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body.encode())
                )
        except OSError:
            return
        finally:
            conn.close()

    def stop(self) -> None:
        self.stopping = True
        self.sock.close()


class Certificates:
    def __init__(self, tmp: Path) -> None:
        self.tmp = tmp
        self.ca = trustme.CA()
        self.ca.cert_pem.write_to_path(str(tmp / "ca.pem"))
        client = self.ca.issue_cert("proxy-client.test", common_name="proxy-client.test")
        client.private_key_pem.write_to_path(str(tmp / "client.key"))
        client.cert_chain_pems[0].write_to_path(str(tmp / "client.pem"))
        other = trustme.CA()
        other.cert_pem.write_to_path(str(tmp / "other-ca.pem"))


@pytest.fixture
def certs(tmp_path: Path) -> Certificates:
    return Certificates(tmp_path)


@pytest.fixture
def apps(certs: Certificates) -> Iterator[list[TlsApp]]:
    made: list[TlsApp] = []
    yield made
    for app in made:
        app.stop()


def _conf(certs: Certificates, app: TlsApp, location: str) -> str:
    return f"""
events {{}}
http {{
  access_log off;
  error_log stderr info;
  upstream secure {{
    server 127.0.0.1:{app.port};
    keepalive 4;
  }}
  server {{
    listen 127.0.0.1:{{port}};
    location / {{
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      {location.replace("CERTS", str(certs.tmp))}
    }}
  }}
}}
"""


def _start(proxy, certs: Certificates, apps: list[TlsApp], location: str, **kw: bool) -> Proxy:
    app = TlsApp(certs.ca, certs.tmp, **kw)
    apps.append(app)
    return proxy(_conf(certs, app, location.replace("PORT", str(app.port))))


def test_an_https_pass_without_verification_reaches_the_backend_without_sni(
    certs, apps, proxy
) -> None:
    p = _start(proxy, certs, apps, "proxy_pass https://127.0.0.1:PORT;")
    status, _, body = p.request("GET", "/")
    assert (status, body) == (200, b"sni=None client=None")


def test_a_verified_pass_to_the_name_of_the_certificate_is_served_with_sni(
    certs, apps, proxy
) -> None:
    p = _start(
        proxy,
        certs,
        apps,
        "proxy_pass https://secure; proxy_ssl_verify on;"
        " proxy_ssl_trusted_certificate CERTS/ca.pem;"
        " proxy_ssl_server_name on; proxy_ssl_name backend.test;",
    )
    status, _, body = p.request("GET", "/")
    assert (status, body) == (200, b"sni=backend.test client=None")


@pytest.mark.parametrize(
    ("settings", "logged"),
    [
        (
            "proxy_ssl_trusted_certificate CERTS/ca.pem; proxy_ssl_name wrong.test;",
            'upstream SSL certificate does not match "wrong.test"',
        ),
        (
            "proxy_ssl_trusted_certificate CERTS/other-ca.pem; proxy_ssl_name backend.test;",
            "upstream SSL certificate verify error: (20:unable to get local issuer certificate)",
        ),
    ],
    ids=["wrong-name", "unknown-issuer"],
)
def test_a_certificate_that_fails_verification_is_refused_with_502_and_logged(
    settings: str, logged: str, certs, apps, proxy
) -> None:
    p = _start(proxy, certs, apps, f"proxy_pass https://secure; proxy_ssl_verify on; {settings}")
    status, _, _ = p.request("GET", "/")
    assert status == 502
    deadline = time.monotonic() + 5
    while logged not in p.process.stderr():
        assert time.monotonic() < deadline, p.process.stderr()[-2000:]
        time.sleep(0.05)


def test_a_backend_that_requires_a_client_certificate_gets_proxy_ssl_certificate(
    certs, apps, proxy
) -> None:
    without = _start(proxy, certs, apps, "proxy_pass https://secure;", require_client_cert=True)
    assert without.request("GET", "/")[0] == 502
    with_cert = _start(
        proxy,
        certs,
        apps,
        "proxy_pass https://secure; proxy_ssl_certificate CERTS/client.pem;"
        " proxy_ssl_certificate_key CERTS/client.key;",
        require_client_cert=True,
    )
    status, _, body = with_cert.request("GET", "/")
    assert (status, body) == (200, b"sni=None client=proxy-client.test")


def test_keepalive_connections_to_a_tls_backend_are_reused(certs, apps, proxy) -> None:
    p = _start(proxy, certs, apps, "proxy_pass https://secure;")
    for _ in range(5):
        assert p.request("GET", "/")[0] == 200
    assert apps[0].connections == 1


@pytest.mark.parametrize(
    ("location", "seen"),
    [
        ("proxy_pass https://secure; proxy_ssl_server_name on;", b"sni=secure"),
        ("set $b 127.0.0.1:PORT; proxy_pass https://$b;", b"sni=None"),
    ],
    ids=["sni-is-the-proxy-host", "address-in-a-variable"],
)
def test_sni_names_the_proxy_host_and_a_variable_pass_speaks_tls(
    location: str, seen: bytes, certs, apps, proxy
) -> None:
    p = _start(proxy, certs, apps, location)
    status, _, body = p.request("GET", "/")
    assert status == 200 and body.startswith(seen)
