"""``resolver``: a proxy_pass host given by variables, resolved while the request waits.

nginx resolves such a name (one that is not an ``upstream{}`` name nor an address) through
the DNS servers ``resolver`` lists, and caches the answer for its TTL or ``valid=``
(src/core/ngx_resolver.c).  This is a small DNS client of its own over UDP: A queries, and
AAAA ones too unless ``ipv6=off``; a random ID and a fresh socket (a random source port)
for each query; an answer is taken only if it comes from the server asked, carries the
query's ID and question, and is a response; the servers are tried in turn until
``resolver_timeout``.  Requests for a name being resolved wait for the same answer.

Who resolves is the request path only when a location has a ``resolver`` and its pass
names a host that needs one: ``Unresolved`` tells the protocol to wait for ``resolve``.
"""

from __future__ import annotations

import asyncio
import random
import socket
import struct
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Final, cast

if TYPE_CHECKING:
    from nonstop.config.model import ResolverSpec

__all__ = ["Answer", "Resolver", "Unresolved", "parse_response", "query"]

Answer = tuple[int, list[tuple[str, int]]]  # (rcode, [(address, ttl)])

A: Final = 1
AAAA: Final = 28
CNAME: Final = 5
IN: Final = 1
MIN_TTL: Final = 1.0  # an answer serves at least the request that asked for it
NOT_FOUND: Final = "3: Host not found"
TIMED_OUT: Final = "110: Operation timed out"
SERVER_FAILURE: Final = "2: Server failure"


class Unresolved(Exception):
    """The host must be resolved before the request can go on (``Resolver.resolve``)."""

    def __init__(self, host: str) -> None:
        super().__init__(host)
        self.host = host


def query(name: str, qtype: int, ident: int) -> bytes:
    """A DNS query for ``name`` (RFC 1035 section 4.1), recursion desired."""
    labels = b"".join(
        bytes([len(part)]) + part for part in name.rstrip(".").encode("idna").split(b".")
    )
    return (
        struct.pack("!HHHHHH", ident, 0x0100, 1, 0, 0, 0)
        + labels
        + b"\0"
        + struct.pack("!HH", qtype, IN)
    )


def _name(data: bytes, pos: int) -> tuple[str, int]:
    """The name at ``pos`` (following compression pointers) and where the record goes on."""
    labels: list[str] = []
    end = -1
    for _ in range(128):  # a bound on pointer loops
        length = data[pos]
        if length & 0xC0 == 0xC0:
            if end < 0:
                end = pos + 2
            pos = ((length & 0x3F) << 8) | data[pos + 1]
            continue
        if length == 0:
            return ".".join(labels).lower(), end if end >= 0 else pos + 1
        labels.append(data[pos + 1 : pos + 1 + length].decode("latin-1"))
        pos += 1 + length
    raise ValueError("a name with too many labels or a pointer loop")


def parse_response(
    data: bytes, ident: int, name: str, qtype: int
) -> tuple[int, list[tuple[str, int]]]:
    """(rcode, [(address, ttl)]) of the answer to ``query(name, qtype, ident)``;
    ValueError if it is not that answer.  CNAME chains from ``name`` are followed."""
    if len(data) < 12:
        raise ValueError("short message")
    got_id, flags, qdcount, ancount, _, _ = struct.unpack("!HHHHHH", data[:12])
    if got_id != ident or not flags & 0x8000 or qdcount != 1:
        raise ValueError("not the answer to this query")
    qname, pos = _name(data, 12)
    if qname != name.rstrip(".").lower() or struct.unpack("!HH", data[pos : pos + 4]) != (
        qtype,
        IN,
    ):
        raise ValueError("an answer to another question")
    pos += 4
    owners = {qname}
    found: list[tuple[str, int]] = []
    for _ in range(ancount):
        owner, pos = _name(data, pos)
        rtype, rclass, ttl, length = struct.unpack("!HHIH", data[pos : pos + 10])
        pos += 10
        rdata = data[pos : pos + length]
        if len(rdata) != length:
            raise ValueError("truncated record")
        if owner in owners and rclass == IN:
            if rtype == CNAME:
                owners.add(_name(data, pos)[0])
            elif rtype == qtype == A and length == 4:
                found.append((socket.inet_ntop(socket.AF_INET, rdata), ttl))
            elif rtype == qtype == AAAA and length == 16:
                found.append((socket.inet_ntop(socket.AF_INET6, rdata), ttl))
        pos += length
    return flags & 0x000F, found


class _Exchange:
    """One UDP query's protocol: keeps the first datagram that is its answer."""

    def __init__(self, ident: int, name: str, qtype: int) -> None:
        self.ident = ident
        self.name = name
        self.qtype = qtype
        self.answer: asyncio.Future[Answer] = asyncio.get_running_loop().create_future()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        pass

    def datagram_received(self, data: bytes, addr: object) -> None:
        try:
            parsed = parse_response(data, self.ident, self.name, self.qtype)
        except (ValueError, IndexError, struct.error, UnicodeError):
            return  # not ours, or malformed: keep waiting for the real answer
        if not self.answer.done():
            self.answer.set_result(parsed)

    def error_received(self, exc: Exception) -> None:
        pass  # an ICMP error: the deadline decides

    def connection_lost(self, exc: Exception | None) -> None:
        pass


class Resolver:
    """One location's ``resolver``: its servers, and the answers it got, by name."""

    def __init__(
        self,
        spec: ResolverSpec,
        clock: Callable[[], float] = time.monotonic,
        rng: random.Random | None = None,
    ) -> None:
        self.spec = spec
        self.timeout = spec.timeout
        self.clock = clock
        self.rng = rng or random.SystemRandom()
        self.cache: dict[str, tuple[float, tuple[str, ...]]] = {}
        self.waiting: dict[str, asyncio.Task[str]] = {}

    def cached(self, host: str) -> tuple[str, ...]:
        """The addresses of ``host``; raises ``Unresolved`` when none are known now."""
        entry = self.cache.get(host)
        if entry is None or entry[0] <= self.clock():
            raise Unresolved(host)
        return entry[1]

    async def resolve(self, host: str) -> str:
        """Resolve ``host`` into the cache; "" on success, else nginx's reason
        ("3: Host not found", "110: Operation timed out").  The look-up is a task of
        the resolver's own, bounded by resolver_timeout: a request that goes away
        stops waiting for it without cancelling it for the others."""
        task = self.waiting.get(host)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._lookup(host))
            self.waiting[host] = task
            task.add_done_callback(lambda _: self.waiting.pop(host, None))
        return await asyncio.shield(task)

    async def _lookup(self, host: str) -> str:
        try:
            query(host, A, 0)
        except (UnicodeError, ValueError):
            return NOT_FOUND  # not a name DNS can carry
        types = (A, AAAA) if self.spec.ipv6 else (A,)
        deadline = self.clock() + self.timeout
        for server in self.spec.addresses:
            remaining = deadline - self.clock()
            if remaining <= 0:
                break
            # each server gets its share of what is left, the last one all of it
            share = remaining / max(1, len(self.spec.addresses) - self.spec.addresses.index(server))
            try:
                answers = await asyncio.wait_for(
                    asyncio.gather(*(self._ask(server, host, t) for t in types)), share
                )
            except (TimeoutError, OSError):
                continue
            return self._keep(host, answers)
        return TIMED_OUT

    def _keep(self, host: str, answers: list[Answer]) -> str:
        found = [record for _, records in answers for record in records]
        if not found:
            codes = {code for code, _ in answers}
            return NOT_FOUND if codes <= {0, 3} else SERVER_FAILURE
        ttl = self.spec.valid if self.spec.valid is not None else min(t for _, t in found)
        addresses = tuple(dict.fromkeys(address for address, _ in found))
        self.cache[host] = (self.clock() + max(MIN_TTL, ttl), addresses)
        return ""

    async def _ask(
        self, server: tuple[str, int], host: str, qtype: int
    ) -> tuple[int, list[tuple[str, int]]]:
        loop = asyncio.get_running_loop()
        ident = self.rng.randrange(65536)
        exchange = _Exchange(ident, host, qtype)
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        transport, _ = await loop.create_datagram_endpoint(
            lambda: cast("asyncio.DatagramProtocol", exchange), remote_addr=server, family=family
        )
        try:
            transport.sendto(query(host, qtype, ident))
            return await exchange.answer
        finally:
            transport.close()
