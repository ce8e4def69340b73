"""The one interface every balancing method implements.

A balancer only picks.  It is built once per upstream generation from the spec, the primary
:class:`PeerSet` (for precomputed data such as ketama points) and an injected random source,
then asked to ``begin`` a request and to ``pick`` from a peer list.  Backup switching, the
``conns`` counter and failure accounting belong to :class:`~nonstop.proxy.upstream.Upstream`.
"""

from __future__ import annotations

from collections.abc import Callable

from nonstop.config.model import UpstreamSpec
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet

__all__ = ["Balancer", "BalancerFactory", "RandomSource"]

RandomSource = Callable[[], int]
"""Returns a non-negative int, like C ``random()`` (31 bits)."""


class Balancer:
    """The base class of every method: a real class rather than a Protocol, so that the
    compiled build dispatches ``begin`` and ``pick`` through its vtable (two C calls per
    request) instead of as Python method calls."""

    __slots__ = ()

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        """Fill the method's per-request fields of ``attempt`` (nginx's ``peer.init``)."""
        return None

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        """Choose an eligible peer of ``peers`` and mark it tried, or None (``NGX_BUSY``)."""
        raise NotImplementedError


BalancerFactory = Callable[[UpstreamSpec, PeerSet, RandomSource], Balancer]
