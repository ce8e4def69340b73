"""``resolver`` with variables in proxy_pass, against a DNS server the test runs on
127.0.0.1: a name resolved per request and cached for its TTL, a name that does not
resolve (502), no resolver at all (502 and nginx's error-log line), a server that never
answers (resolver_timeout).  nginx-tests' proxy_variables.t and resolver*.t check the
same from nginx's side.
"""

from __future__ import annotations

import socket
import struct
import threading
import time
from collections.abc import Iterator

import pytest
from tests.integration.conftest import Proxy
from tests.support.backends import free_port


class TinyDns:
    """A DNS server on 127.0.0.1 over UDP: A records from ``records`` (name -> (IP,
    TTL)), NXDOMAIN for other names, no AAAA; counts the A queries for each name."""

    def __init__(self, records: dict[str, tuple[str, int]]) -> None:
        self.records = records
        self.queries: dict[str, int] = {}
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(512)
            except OSError:
                return
            self.sock.sendto(self._answer(data), peer)

    def _answer(self, data: bytes) -> bytes:
        ident = struct.unpack("!H", data[:2])[0]
        pos, labels = 12, []
        while data[pos]:
            labels.append(data[pos + 1 : pos + 1 + data[pos]].decode())
            pos += 1 + data[pos]
        question = data[12 : pos + 5]
        qtype = struct.unpack("!H", data[pos + 1 : pos + 3])[0]
        name = ".".join(labels)
        if qtype == 1:
            self.queries[name] = self.queries.get(name, 0) + 1
        record = self.records.get(name)
        if record is None:
            return struct.pack("!HHHHHH", ident, 0x8183, 1, 0, 0, 0) + question
        if qtype != 1:
            return struct.pack("!HHHHHH", ident, 0x8180, 1, 0, 0, 0) + question
        address, ttl = record
        answer = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, ttl, 4) + socket.inet_aton(address)
        return struct.pack("!HHHHHH", ident, 0x8180, 1, 1, 0, 0) + question + answer

    def stop(self) -> None:
        self.sock.close()


@pytest.fixture
def dns() -> Iterator[TinyDns]:
    server = TinyDns({"app.test": ("127.0.0.1", 1), "long.test": ("127.0.0.1", 300)})
    yield server
    server.stop()


def _conf(backend_port: int, host: str, resolver: str) -> str:
    return f"""
events {{}}
http {{
  access_log off;
  error_log stderr info;
  {resolver}
  server {{
    listen 127.0.0.1:{{port}};
    location / {{
      set $backend_host {host};
      proxy_pass http://$backend_host:{backend_port};
    }}
  }}
}}
"""


def _logged(p: Proxy, text: str) -> None:
    deadline = time.monotonic() + 5
    while text not in p.process.stderr():
        assert time.monotonic() < deadline, p.process.stderr()[-2000:]
        time.sleep(0.05)


def test_a_name_is_resolved_per_request_and_asked_again_once_its_ttl_passed(
    dns: TinyDns, backends, proxy
) -> None:
    (b1,) = backends(1)
    p = proxy(_conf(b1.port, "app.test", f"resolver 127.0.0.1:{dns.port} ipv6=off;"))
    assert p.request("GET", "/one")[0] == 200
    assert p.request("GET", "/two")[0] == 200
    assert dns.queries["app.test"] == 1  # the second came from the cache
    deadline = time.monotonic() + 10
    while dns.queries["app.test"] < 2:  # a TTL of one second
        assert time.monotonic() < deadline
        assert p.request("GET", "/again")[0] == 200
        time.sleep(0.2)
    assert [r.target for r in b1.received][:2] == ["/one", "/two"]


def test_valid_keeps_an_answer_longer_than_its_ttl(dns: TinyDns, backends, proxy) -> None:
    (b1,) = backends(1)
    p = proxy(_conf(b1.port, "app.test", f"resolver 127.0.0.1:{dns.port} valid=300s;"))
    end = time.monotonic() + 2.5  # past the record's TTL of one second
    while time.monotonic() < end:
        assert p.request("GET", "/")[0] == 200
        time.sleep(0.2)
    assert dns.queries["app.test"] == 1


def test_a_name_that_does_not_resolve_is_a_502(dns: TinyDns, backends, proxy) -> None:
    (b1,) = backends(1)
    p = proxy(_conf(b1.port, "nowhere.test", f"resolver 127.0.0.1:{dns.port};"))
    assert p.request("GET", "/")[0] == 502
    _logged(p, "nowhere.test could not be resolved (3: Host not found)")
    assert b1.received == []


def test_without_a_resolver_a_name_is_a_502_in_nginx_s_words(backends, proxy) -> None:
    (b1,) = backends(1)
    p = proxy(_conf(b1.port, "app.test", ""))
    assert p.request("GET", "/")[0] == 502
    _logged(p, "no resolver defined to resolve app.test")


def test_a_resolver_that_never_answers_is_a_502_after_resolver_timeout(backends, proxy) -> None:
    (b1,) = backends(1)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # takes queries, answers none
    silent.bind(("127.0.0.1", free_port()))
    try:
        resolver = f"resolver 127.0.0.1:{silent.getsockname()[1]}; resolver_timeout 1s;"
        p = proxy(_conf(b1.port, "app.test", resolver))
        started = time.monotonic()
        assert p.request("GET", "/")[0] == 502
        assert 0.8 < time.monotonic() - started < 5
        _logged(p, "app.test could not be resolved (110: Operation timed out)")
    finally:
        silent.close()
