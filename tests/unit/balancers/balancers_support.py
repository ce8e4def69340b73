"""Builders shared by the balancer tests: specs, upstreams and request loops."""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterator
from typing import Any

from nonstop.config.model import HealthSpec, ServerSpec, UpstreamSpec
from nonstop.proxy.upstream import Outcome, Upstream

T0 = 1000.0  # a monotonic clock reading well past any fail_timeout


def server(port: int, **params: Any) -> ServerSpec:
    return ServerSpec(address=f"127.0.0.1:{port}", host="127.0.0.1", port=port, **params)


def upstream(
    *servers: ServerSpec,
    method: str = "round_robin",
    rng: Any = None,
    health: HealthSpec | None = None,
    **spec: Any,
) -> Upstream:
    return Upstream(UpstreamSpec("app", servers, method=method, health=health, **spec), rng=rng)


def ports(up: Upstream, n: int, addr: bytes = b"", key: str | bytes | None = None) -> list[int]:
    """Ports chosen by ``n`` sequential requests that each succeed at once."""
    out = []
    for _ in range(n):
        attempt = up.begin(addr, key)
        peer = up.pick(attempt, T0)
        assert peer is not None
        out.append(peer.port)
        up.free(attempt, peer, Outcome.OK, T0)
    return out


def ip(text: str) -> bytes:
    family = socket.AF_INET6 if ":" in text else socket.AF_INET
    return socket.inet_pton(family, text)


def fail(up: Upstream, port: int, now: float) -> None:
    """Send one request that is forced onto ``port`` and fails there."""
    attempt = up.begin(b"", None)
    peer = up.peer(f"127.0.0.1:{port}")
    assert peer is not None
    peer.conns += 1  # what pick would have done
    up.free(attempt, peer, Outcome.FAILED, now)


def sequence(values: list[int]) -> Callable[[], int]:
    """A random source that returns ``values`` in order, then fails the test if asked more."""
    it: Iterator[int] = iter(values)
    return lambda: next(it)
