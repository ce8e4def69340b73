"""Malformed and smuggling requests: answered as nginx answers them, nothing forwarded.

Every payload carries a second request (``GET /smuggled``) hidden where a lenient parser
would see it; the recording backend must never receive it.
"""

from __future__ import annotations

import socket
import time

import pytest
from tests.integration.test_proxy_http import conf, servers
from tests.support.proc import raw_request

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n"

CASES = {
    "content-length-and-transfer-encoding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n"
        b"0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "two-different-content-lengths": (
        b"POST / HTTP/1.1\r\nHost: a\r\nContent-Length: 0\r\nContent-Length: 38\r\n\r\n" + SMUGGLED,
        400,
    ),
    "transfer-encoding-not-ending-in-chunked": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked, gzip\r\n\r\n0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    "transfer-encoding-with-another-coding": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: gzip, chunked\r\n\r\n0\r\n\r\n"
        + SMUGGLED,
        501,
    ),
    "invalid-chunk-size": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n-1\r\n\r\n" + SMUGGLED,
        400,
    ),
    "invalid-chunk-extension": (
        b"POST / HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n1;\x01\r\nx\r\n0\r\n\r\n"
        + SMUGGLED,
        400,
    ),
    "obs-fold": (
        b"GET / HTTP/1.1\r\nHost: a\r\nX-A: 1\r\n Transfer-Encoding: chunked\r\n\r\n" + SMUGGLED,
        400,
    ),
    "nul-in-header": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: a\x00b\r\n\r\n" + SMUGGLED, 400),
    "control-char-in-header": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: \x01\r\n\r\n" + SMUGGLED, 400),
    "bad-request-line": (b"GET /a b HTTP/1.1 x\r\nHost: a\r\n\r\n" + SMUGGLED, 400),
    "bad-method": (b"G(T / HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLED, 400),
    "bad-version": (b"GET / HTTP/9.1\r\nHost: a\r\n\r\n" + SMUGGLED, 505),
    "unsupported-version": (b"GET / HTTP/2.0\r\nHost: a\r\n\r\n" + SMUGGLED, 505),
    "missing-host": (b"GET / HTTP/1.1\r\nX-A: 1\r\n\r\n" + SMUGGLED, 400),
    "duplicate-host": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n" + SMUGGLED, 400),
    "uri-too-long": (b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\nHost: a\r\n\r\n" + SMUGGLED, 414),
    "header-too-long": (b"GET / HTTP/1.1\r\nHost: a\r\nX-A: " + b"a" * 9000 + b"\r\n\r\n", 400),
    "headers-too-large": (
        b"GET / HTTP/1.1\r\nHost: a\r\n"
        + b"".join(b"X-%d: %s\r\n" % (i, b"a" * 4000) for i in range(10)),
        400,
    ),
    "transfer-encoding-in-http10": (
        b"POST / HTTP/1.0\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n" + SMUGGLED,
        400,
    ),
    "space-before-colon": (b"GET / HTTP/1.1\r\nHost : a\r\n\r\n" + SMUGGLED, 400),
    "bare-cr-line-ends": (b"GET / HTTP/1.1\rHost: a\r\r" + SMUGGLED, 400),
    "bare-cr-in-headers": (b"GET / HTTP/1.1\r\nHost: a\rX-A: 1\r\n\r\n" + SMUGGLED, 400),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_hostile_request_is_refused_and_nothing_smuggled_reaches_the_backend(
    name: str, backends, proxy
):
    payload, status = CASES[name]
    (b1,) = backends(1)
    p = proxy(conf(servers(b1)))
    answer = raw_request(p.port, payload, timeout=3)
    assert answer.startswith(b"HTTP/1.1 %d " % status), answer[:200]
    assert b"Connection: close" in answer
    assert "/smuggled" not in b1.paths()
    # the proxy still serves ordinary requests afterwards
    assert p.request("GET", "/")[0] == 200


def test_a_chunked_body_over_the_limit_gets_413_and_none_of_it_reaches_the_app(backends, proxy):
    """Chunks arriving one by one past client_max_body_size: with request buffering on
    (nginx's default) the app sees no request at all, not the start of a cut-off body."""
    (b1,) = backends(1)
    p = proxy(conf(servers(b1), server="client_max_body_size 4k;"))
    with socket.create_connection(("127.0.0.1", p.port), timeout=5) as sock:
        sock.sendall(b"POST /upload HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n")
        sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        # a streaming proxy would connect to the app now; give it the time to
        deadline = time.monotonic() + 1.0
        while b1.connections == 0 and time.monotonic() < deadline:
            time.sleep(0.02)
        answer = b""
        try:
            for _ in range(7):
                sock.sendall(b"400\r\n" + b"x" * 1024 + b"\r\n")
        except OSError:
            pass  # the proxy answered and stopped reading
        sock.settimeout(3)
        try:
            while b"\r\n\r\n" not in answer:
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        except OSError:
            pass
    assert answer.startswith(b"HTTP/1.1 413 "), answer[:100]
    assert p.request("GET", "/after")[0] == 200  # the app answers, and only this
    assert b1.paths() == ["/after"]
    assert b1.connections == 1  # no connection was ever opened for the upload


def test_connections_past_worker_connections_are_refused_with_503(backends, proxy):
    import socket

    (b1,) = backends(1)
    p = proxy(conf(servers(b1)).replace("events {}", "events { worker_connections 2; }"))
    held = [socket.create_connection(("127.0.0.1", p.port), timeout=5) for _ in range(2)]
    try:
        answer = raw_request(p.port, b"GET / HTTP/1.1\r\nHost: a\r\n\r\n", timeout=3)
        assert answer.startswith(b"HTTP/1.1 503 "), answer[:100]
    finally:
        for sock in held:
            sock.close()
    # the held ones were fine all along, and once they are gone new ones are served
    import time

    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        if p.request("GET", "/")[0] == 200:
            break
        time.sleep(0.05)
    assert p.request("GET", "/")[0] == 200


# --------------------------------------------------------------------------- slow readers


def _stalled_download(port: int, size: int) -> socket.socket:
    """A client that asks for ``size`` bytes and then reads nothing."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.settimeout(10)
    sock.connect(("127.0.0.1", port))
    sock.sendall(b"GET /big/%d HTTP/1.1\r\nHost: a\r\n\r\n" % size)
    return sock


def _read_all(sock: socket.socket, deadline: float) -> int:
    got = 0
    try:
        while time.monotonic() < deadline:
            chunk = sock.recv(1 << 20)
            if not chunk:
                break
            got += len(chunk)
    except (ConnectionResetError, TimeoutError):
        pass
    return got


def test_a_client_that_stops_reading_is_reset_after_send_timeout(backends, proxy):
    """nginx's send_timeout: no byte taken for that long closes the connection, and
    the connection's slot is free again (a close that waits for the bytes would hold
    it forever)."""
    (b1,) = backends(1)
    p = proxy(
        conf(servers(b1), server="send_timeout 1s;", http="error_log stderr info;").replace(
            "events {}", "events { worker_connections 3; }"
        )
    )
    size = 64 * 1024 * 1024
    stalled = [_stalled_download(p.port, size) for _ in range(2)]
    deadline = time.monotonic() + 20
    while p.process.stderr().count("client timed out while sending to client") < 2:
        assert time.monotonic() < deadline, p.process.stderr()[-2000:]
        time.sleep(0.1)
    for sock in stalled:
        assert _read_all(sock, time.monotonic() + 10) < size  # cut off, not served whole
        sock.close()
    # both slots are free: two more connections at once are served, not refused with 503
    held = socket.create_connection(("127.0.0.1", p.port), timeout=5)
    try:
        assert p.request("GET", "/")[0] == 200
    finally:
        held.close()


def test_a_reader_that_pauses_is_not_cut_off_by_proxy_read_timeout(backends, proxy):
    """While the client is behind, the upstream waits on us, not we on it: only
    send_timeout counts then, and a pause shorter than it costs nothing."""
    (b1,) = backends(1)
    p = proxy(conf(servers(b1), "proxy_read_timeout 1s;", server="send_timeout 10s;"))
    size = 16 * 1024 * 1024  # more than the kernel's buffers hold: the proxy must wait
    sock = _stalled_download(p.port, size)
    time.sleep(2.5)  # past proxy_read_timeout, well within send_timeout
    answer = bytearray()
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        chunk = sock.recv(1 << 20)
        if not chunk:
            break
        answer += chunk
        head_end = answer.find(b"\r\n\r\n")
        if head_end > 0 and len(answer) - head_end - 4 >= size:
            break
    sock.close()
    head, _, body = bytes(answer).partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 200 "), head[:100]
    assert len(body) == size


def test_an_upstream_that_stops_taking_the_body_gets_504_after_proxy_send_timeout(proxy):
    """nginx's proxy_send_timeout: the upstream took no request byte for that long.
    The client's body pace (client_body_timeout, far longer here) does not count then:
    we stopped reading the client because the upstream stopped reading us."""
    import threading

    listener = socket.socket()
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    port = listener.getsockname()[1]
    stop = threading.Event()
    accepted: list[socket.socket] = []

    def stalled_upstream() -> None:  # accepts, reads the first bytes, then nothing
        listener.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            conn.recv(1024)
            accepted.append(conn)

    thread = threading.Thread(target=stalled_upstream, daemon=True)
    thread.start()
    try:
        p = proxy(
            conf(
                f"server 127.0.0.1:{port};",
                "proxy_send_timeout 1s; proxy_next_upstream off; client_max_body_size 0;"
                " proxy_request_buffering off;",
                server="client_body_timeout 30s;",
            )
        )
        size = 256 * 1024 * 1024
        client = socket.create_connection(("127.0.0.1", p.port), timeout=10)
        client.sendall(b"PUT /up HTTP/1.1\r\nHost: a\r\nContent-Length: %d\r\n\r\n" % size)
        client.settimeout(0.05)
        answer = b""
        started = time.monotonic()
        while b"\r\n\r\n" not in answer and time.monotonic() - started < 20:
            try:
                client.send(b"x" * 65536)
            except (TimeoutError, BlockingIOError):
                pass
            except OSError:
                break
            try:
                answer += client.recv(65536)
            except TimeoutError:
                pass
        elapsed = time.monotonic() - started
        client.close()
        assert answer.startswith(b"HTTP/1.1 504 "), answer[:100]
        assert elapsed < 10, (
            f"504 after {elapsed:.1f}s: client_body_timeout, not proxy_send_timeout"
        )
    finally:
        stop.set()
        thread.join(5)
        for conn in accepted:
            conn.close()
        listener.close()
