"""Smooth weighted round robin, the core every other method falls back to.

Follows ``ngx_http_upstream_get_round_robin_peer`` and ``ngx_http_upstream_get_peer`` in
nginx's ``src/http/ngx_http_upstream_round_robin.c``: each eligible peer gains its
``effective_weight``, the highest ``current_weight`` wins (earliest on ties) and pays back the
sum.  A single-server upstream is checked only against ``down`` and ``max_conns``.
"""

from __future__ import annotations

from nonstop.config.model import UpstreamSpec
from nonstop.proxy.balancers.balancer import Balancer, RandomSource
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet, chosen, swrr_gain

__all__ = ["RoundRobin", "pick_round_robin"]


def pick_round_robin(peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
    """One SWRR step over ``peers``; marks the winner tried and stamps ``checked``."""
    if peers.single:
        peer = peers.peers[0]
        if peer.off or (peer.max_conns and peer.conns >= peer.max_conns):
            return None
        return peer
    tried = attempt.tried
    best: Peer | None = None
    best_i = 0
    total = 0
    i = -1
    for peer in peers.peers:
        i += 1
        # peers.usable(), written out: this loop runs on every request, and the call
        # costs ~240 instructions per request here (bench/hotpath.py --instructions).
        if tried >> i & 1 or peer.off:
            continue
        if (
            peer.max_fails
            and peer.fails >= peer.max_fails
            and now - peer.checked <= peer.fail_timeout
        ):
            continue
        if peer.max_conns and peer.conns >= peer.max_conns:
            continue
        total += swrr_gain(peer)
        if best is None or peer.current_weight > best.current_weight:
            best = peer
            best_i = i
    if best is None:
        return None
    best.current_weight -= total
    return chosen(attempt, best_i, best, now)


class RoundRobin(Balancer):
    """``round_robin``: the default method."""

    __slots__ = ()

    def __init__(self, spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> None:
        del spec, primary, rand

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        return None

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        return pick_round_robin(peers, attempt, now)
