"""Property-based fuzzing of the request path: bytes in, proxy out, a recording upstream.

Hypothesis mutates valid requests (inserted, deleted and duplicated bytes, line ends and
separators, split reads) and checks three properties on every input:

- no exception escapes the protocol (the proxy answers or closes, it never crashes);
- everything written upstream is a sequence of well-formed requests that a strict
  parser accepts whole: no byte the proxy rejected reaches the backend;
- every forwarded request has exactly one framing header, so the upstream cannot read a
  different body length than the proxy did (no smuggling through re-framing).

The suite runs a bounded number of examples; bench/README.md documents a longer run.
"""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import httptools
import uvloop
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from tests.unit.proxy.protocol_support import conf, make_proxy, ok

SEEDS = [
    b"GET /a?b=1 HTTP/1.1\r\nHost: example.com\r\nUser-Agent: t\r\n\r\n",
    b"POST /p HTTP/1.1\r\nHost: a\r\nContent-Length: 5\r\n\r\nhello",
    b"POST /c HTTP/1.1\r\nHost: a\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n",
    b"GET / HTTP/1.0\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\nConnection: keep-alive, X-A\r\nX-A: 1\r\n\r\n",
    b"GET / HTTP/1.1\r\nHost: a\r\n\r\nGET /second HTTP/1.1\r\nHost: a\r\n\r\n",
]
TOKENS = [
    b"\r\n",
    b"\n",
    b"\r",
    b" ",
    b":",
    b"\x00",
    b"\t",
    b"0\r\n\r\n",
    b"Content-Length: 3\r\n",
    b"Transfer-Encoding: chunked\r\n",
    b"Host: b\r\n",
    b"\r\nGET /smuggled HTTP/1.1\r\nHost: a\r\n\r\n",
    b"ffffffffffffffff",
    b";ext=1",
    b"HTTP/1.1",
]
EXAMPLES = int(os.environ.get("NONSTOP_FUZZ_EXAMPLES", "300"))


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, list[int]]:
    data = bytearray(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(0, 4))):
        op = draw(st.sampled_from(["insert", "delete", "token", "flip", "dup"]))
        pos = draw(st.integers(0, len(data)))
        if op == "insert":
            data[pos:pos] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete" and data:
            end = min(len(data), pos + draw(st.integers(1, 6)))
            del data[pos:end]
        elif op == "token":
            data[pos:pos] = draw(st.sampled_from(TOKENS))
        elif op == "flip" and pos < len(data):
            data[pos] = draw(st.integers(0, 255))
        elif op == "dup" and data:
            end = min(len(data), pos + draw(st.integers(1, 40)))
            data[pos:pos] = data[pos:end]
    splits = draw(st.lists(st.integers(1, max(1, len(data))), max_size=3))
    return bytes(data), sorted(set(splits))


class _Strict:
    """Collects each forwarded request's framing headers."""

    def __init__(self) -> None:
        self.framing: list[list[bytes]] = []
        self.current: list[bytes] = []
        self.complete = 0

    def on_header(self, name: bytes, value: bytes) -> None:
        if name.lower() in (b"content-length", b"transfer-encoding"):
            self.current.append(name.lower())

    def on_headers_complete(self) -> None:
        self.framing.append(self.current)
        self.current = []

    def on_message_complete(self) -> None:
        self.complete += 1


def check_forwarded(data: bytes) -> None:
    sink = _Strict()
    parser = httptools.HttpRequestParser(sink)
    parser.feed_data(data)  # raises on anything malformed
    for framing in sink.framing:
        assert len(framing) <= 1, framing


async def run_one(tmp: Path, data: bytes, splits: list[int]) -> None:
    location = "proxy_pass http://app; proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;"
    proxy = make_proxy(tmp, conf(location, server="client_max_body_size 1k;"), 4)
    client = proxy.client()
    pieces = []
    last = 0
    for cut in [*splits, len(data)]:
        if cut > last:
            pieces.append(data[last:cut])
            last = cut
    for piece in pieces:
        client.send(piece)
        for upstream in proxy.busy():
            upstream.respond(ok(b"fine"))
    for _ in range(4):  # pipelined requests waiting their turn
        for upstream in proxy.busy():
            upstream.respond(ok(b"fine"))
    check_forwarded(proxy.written_upstream())


@settings(
    max_examples=EXAMPLES,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=os.environ.get("NONSTOP_FUZZ_RANDOM") is None,
)
@given(case=mutated())
def test_no_mutated_request_crashes_the_proxy_or_reaches_the_backend_malformed(
    case: tuple[bytes, list[int]], tmp_path: Path
) -> None:
    data, splits = case
    loop = uvloop.new_event_loop()
    try:
        loop.run_until_complete(asyncio.wait_for(run_one(tmp_path, data, splits), 3))
    finally:
        loop.close()
