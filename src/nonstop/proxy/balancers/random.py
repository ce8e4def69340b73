"""``random`` and ``random two [least_conn]``.

Follows ``ngx_http_upstream_get_random_peer``, ``ngx_http_upstream_get_random2_peer`` and
``ngx_http_upstream_peek_random_peer`` in nginx's
``src/http/modules/ngx_http_upstream_random_module.c``.  A draw is ``rand() % total_weight``
located in the cumulative weight ranges.  With ``two``, the second of two different eligible
draws wins unless it carries strictly more connections per weight, so ties go to it.  Every
failed draw (and, with ``two``, the first good one) counts towards the per-request limit of
20, after which round robin takes over; fewer than two peers go to round robin directly.
"""

from __future__ import annotations

from nonstop.config.model import UpstreamSpec
from nonstop.proxy.balancers.balancer import Balancer, RandomSource
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet, chosen, usable
from nonstop.proxy.balancers.round_robin import pick_round_robin

__all__ = ["Random", "RandomTwo", "make_random"]


class Random(Balancer):
    """``random``: one weighted draw, repeated until an eligible peer comes up."""

    __slots__ = ("_rand",)

    def __init__(self, spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> None:
        del spec, primary
        self._rand = rand

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        return None

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        if attempt.hash_tries > 20 or peers.number < 2:
            return pick_round_robin(peers, attempt, now)
        rand = self._rand
        total = peers.total_weight
        while True:
            i = peers.index_of_weight(rand() % total)
            peer = peers.peers[i]
            if not attempt.tried >> i & 1 and usable(peer, now):
                break
            attempt.hash_tries += 1
            if attempt.hash_tries > 20:
                return pick_round_robin(peers, attempt, now)
        return chosen(attempt, i, peer, now)


class RandomTwo(Random):
    """``random two [least_conn]``: the less loaded of two different eligible draws."""

    __slots__ = ()

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        if attempt.hash_tries > 20 or peers.number < 2:
            return pick_round_robin(peers, attempt, now)
        rand = self._rand
        total = peers.total_weight
        prev: Peer | None = None
        prev_i = 0
        while True:
            i = peers.index_of_weight(rand() % total)
            peer = peers.peers[i]
            if peer is not prev and not attempt.tried >> i & 1 and usable(peer, now):
                if prev is not None:
                    if peer.conns * prev.weight > prev.conns * peer.weight:
                        peer, i = prev, prev_i
                    break
                prev, prev_i = peer, i
            attempt.hash_tries += 1
            if attempt.hash_tries > 20:
                return pick_round_robin(peers, attempt, now)
        return chosen(attempt, i, peer, now)


def make_random(spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> Random | RandomTwo:
    """The ``random`` method, with or without ``two`` as the spec says."""
    if spec.random_two:
        return RandomTwo(spec, primary, rand)
    return Random(spec, primary, rand)
