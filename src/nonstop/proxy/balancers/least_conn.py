"""``least_conn``: fewest connections per unit of weight, SWRR among ties.

Follows ``ngx_http_upstream_get_least_conn_peer`` in nginx's
``src/http/modules/ngx_http_upstream_least_conn_module.c``.  Ratios are compared by
cross-multiplication with the nominal ``weight``; when several peers tie, the SWRR step runs
over the tied peers only, from the first tied index, and the winner pays back their sum.
"""

from __future__ import annotations

from nonstop.config.model import UpstreamSpec
from nonstop.proxy.balancers.balancer import Balancer, RandomSource
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet, chosen, swrr_gain, usable
from nonstop.proxy.balancers.round_robin import pick_round_robin

__all__ = ["LeastConn"]


class LeastConn(Balancer):
    """``least_conn``."""

    __slots__ = ()

    def __init__(self, spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> None:
        del spec, primary, rand

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        return None

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        if peers.single:
            return pick_round_robin(peers, attempt, now)
        tried = attempt.tried
        best: Peer | None = None
        best_i = 0
        many = False
        i = -1
        for peer in peers.peers:
            i += 1
            if tried >> i & 1 or not usable(peer, now):
                continue
            if best is None or peer.conns * best.weight < best.conns * peer.weight:
                best = peer
                best_i = i
                many = False
            elif peer.conns * best.weight == best.conns * peer.weight:
                many = True
        if best is None:
            return None
        if many:
            best, best_i = _tie_break(peers, tried, best, best_i, now)
        return chosen(attempt, best_i, best, now)


def _tie_break(peers: PeerSet, tried: int, best: Peer, first: int, now: float) -> tuple[Peer, int]:
    """SWRR over the peers tied with ``best``, scanning from the first tied index."""
    total = 0
    best_i = first
    plist = peers.peers
    for i in range(first, peers.number):
        peer = plist[i]
        if tried >> i & 1 or peer.conns * best.weight != best.conns * peer.weight:
            continue
        if not usable(peer, now):
            continue
        total += swrr_gain(peer)
        if peer.current_weight > best.current_weight:
            best = peer
            best_i = i
    best.current_weight -= total
    return best, best_i
