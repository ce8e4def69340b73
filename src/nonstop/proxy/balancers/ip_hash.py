"""``ip_hash``: the client's /24 (IPv4) or whole address (IPv6) picks the peer.

Follows ``ngx_http_upstream_get_ip_hash_peer`` in nginx's
``src/http/modules/ngx_http_upstream_ip_hash_module.c``.  The hash starts at 89 per request
and is kept across attempts, so a retry re-hashes from where the last pick left off; after
more than 20 unusable looks, or with fewer than two peers, it falls back to round robin.
``total_weight`` includes ``down`` peers, so marking one down moves only its own clients.
"""

from __future__ import annotations

from nonstop.config.model import UpstreamSpec
from nonstop.proxy.balancers.balancer import Balancer, RandomSource
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet, chosen, usable
from nonstop.proxy.balancers.round_robin import pick_round_robin

__all__ = ["IpHash", "ip_hash_key"]

_PSEUDO_ADDR = b"\0\0\0"  # unix sockets and other families


def ip_hash_key(client_addr: bytes) -> bytes:
    """The bytes nginx hashes: IPv4 ``sin_addr[0:3]``, all 16 IPv6 bytes, else 3 zeros."""
    if len(client_addr) == 4:
        return client_addr[:3]
    if len(client_addr) == 16:
        return client_addr
    return _PSEUDO_ADDR


class IpHash(Balancer):
    """``ip_hash``."""

    __slots__ = ()

    def __init__(self, spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> None:
        del spec, primary, rand

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        attempt.key = ip_hash_key(client_addr)
        attempt.hash = 89

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        if attempt.hash_tries > 20 or peers.number < 2:
            return pick_round_robin(peers, attempt, now)
        h = attempt.hash
        key = attempt.key
        total = peers.total_weight
        while True:
            for b in key:
                h = (h * 113 + b) % 6271
            p = peers.index_of_weight(h % total)
            peer = peers.peers[p]
            if not attempt.tried >> p & 1 and usable(peer, now):
                break
            attempt.hash_tries += 1
            if attempt.hash_tries > 20:
                return pick_round_robin(peers, attempt, now)
        attempt.hash = h
        return chosen(attempt, p, peer, now)
