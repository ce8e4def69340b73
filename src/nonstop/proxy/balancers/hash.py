"""``hash KEY`` (Cache::Memcached compatible) and ``hash KEY consistent`` (ketama).

Follows ``ngx_http_upstream_get_hash_peer``, ``ngx_http_upstream_update_chash`` and
``ngx_http_upstream_get_chash_peer`` in nginx's
``src/http/modules/ngx_http_upstream_hash_module.c``.  Both fall back to round
robin for an empty key, fewer than two peers, or after more than 20 unusable looks.
"""

from __future__ import annotations

import zlib
from bisect import bisect_left

from nonstop.config.model import UpstreamSpec
from nonstop.proxy.balancers.balancer import Balancer, RandomSource
from nonstop.proxy.balancers.peers import Attempt, Peer, PeerSet, chosen, swrr_gain, usable
from nonstop.proxy.balancers.round_robin import pick_round_robin

__all__ = ["ConsistentHash", "Hash", "hash_key_bytes", "ketama_points", "make_hash"]

POINTS_PER_WEIGHT = 160


def hash_key_bytes(hash_key: str | bytes | None) -> bytes:
    """The evaluated key as the bytes nginx hashes (str is encoded as UTF-8)."""
    if hash_key is None:
        return b""
    if isinstance(hash_key, bytes):
        return hash_key
    return hash_key.encode("utf-8", "surrogateescape")


class Hash(Balancer):
    """``hash KEY``: ``acc += (crc32([n] KEY) >> 16) & 0x7fff`` per look, weight walk on acc."""

    __slots__ = ()

    def __init__(self, spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> None:
        del spec, primary, rand

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        attempt.key = hash_key_bytes(hash_key)

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        key = attempt.key
        if attempt.hash_tries > 20 or peers.number < 2 or not key:
            return pick_round_robin(peers, attempt, now)
        total = peers.total_weight
        while True:
            if attempt.rehash > 0:
                h = zlib.crc32(key, zlib.crc32(b"%d" % attempt.rehash))
            else:
                h = zlib.crc32(key)
            attempt.hash += (h >> 16) & 0x7FFF
            attempt.rehash += 1
            p = peers.index_of_weight(attempt.hash % total)
            peer = peers.peers[p]
            if not attempt.tried >> p & 1 and usable(peer, now):
                break
            attempt.hash_tries += 1
            if attempt.hash_tries > 20:
                return pick_round_robin(peers, attempt, now)
        return chosen(attempt, p, peer, now)


def split_server(address: str) -> tuple[bytes, bytes]:
    """Host and port of a ``server`` string as ketama hashes them.

    ``unix:`` strips the prefix and has no port; otherwise the split is at the last ``:``
    followed only by digits (``[::1]:80`` -> ``[::1]``, ``80``); no such colon, no port.
    """
    raw = address.encode()
    if raw[:5].lower() == b"unix:":
        return raw[5:], b""
    j = len(raw)
    while j > 0 and 0x30 <= raw[j - 1] <= 0x39:
        j -= 1
    if j > 0 and raw[j - 1] == 0x3A:
        return raw[: j - 1], raw[j:]
    return raw, b""


def ketama_points(peers: PeerSet) -> tuple[list[int], list[str]]:
    """Sorted, de-duplicated point hashes and the server string each point belongs to."""
    points: list[tuple[int, int, str]] = []
    order = 0
    for peer in peers.peers:
        host, port = split_server(peer.address)
        base = zlib.crc32(port, zlib.crc32(b"\0", zlib.crc32(host)))
        prev = 0
        for _ in range(POINTS_PER_WEIGHT * peer.weight):
            prev = zlib.crc32(prev.to_bytes(4, "little"), base)
            points.append((prev, order, peer.address))
            order += 1
    points.sort()
    hashes: list[int] = []
    servers: list[str] = []
    for h, _, server in points:
        if not hashes or hashes[-1] != h:
            hashes.append(h)
            servers.append(server)
    return hashes, servers


class ConsistentHash(Balancer):
    """``hash KEY consistent``: the first point at or after ``crc32(KEY)`` names a server."""

    __slots__ = ("_groups", "_hashes", "_npoints", "_point_group")

    def __init__(self, spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> None:
        del spec, rand
        self._hashes, servers = ketama_points(primary)
        self._npoints = len(self._hashes)
        # Peers sharing a server string (nginx: one name, several addresses) form a group;
        # each point refers to its group's (index, peer) pairs in config order.
        by_name: dict[str, list[tuple[int, Peer]]] = {}
        for i, peer in enumerate(primary.peers):
            by_name.setdefault(peer.address, []).append((i, peer))
        names = list(by_name)
        self._groups = [tuple(by_name[name]) for name in names]
        index = {name: n for n, name in enumerate(names)}
        self._point_group = [index[server] for server in servers]

    def begin(self, attempt: Attempt, client_addr: bytes, hash_key: str | bytes | None) -> None:
        key = hash_key_bytes(hash_key)
        attempt.key = key
        if self._npoints:
            attempt.hash = bisect_left(self._hashes, zlib.crc32(key))

    def pick(self, peers: PeerSet, attempt: Attempt, now: float) -> Peer | None:
        if attempt.hash_tries > 20 or peers.number < 2 or not attempt.key or not self._npoints:
            return pick_round_robin(peers, attempt, now)
        while True:
            group = self._groups[self._point_group[attempt.hash % self._npoints]]
            found = _swrr_in_group(group, attempt.tried, now)
            if found is not None:
                break
            attempt.hash += 1
            attempt.hash_tries += 1
            if attempt.hash_tries > 20:
                return pick_round_robin(peers, attempt, now)
        best_i, best = found
        return chosen(attempt, best_i, best, now)


def _swrr_in_group(
    group: tuple[tuple[int, Peer], ...], tried: int, now: float
) -> tuple[int, Peer] | None:
    """The SWRR step over the usable, untried peers carrying one server string."""
    best: Peer | None = None
    best_i = 0
    total = 0
    for i, peer in group:
        if tried >> i & 1 or not usable(peer, now):
            continue
        total += swrr_gain(peer)
        if best is None or peer.current_weight > best.current_weight:
            best = peer
            best_i = i
    if best is None:
        return None
    best.current_weight -= total
    return best_i, best


def make_hash(spec: UpstreamSpec, primary: PeerSet, rand: RandomSource) -> Hash | ConsistentHash:
    """The ``hash`` method, plain or ``consistent`` as the spec says."""
    if spec.hash_consistent:
        return ConsistentHash(spec, primary, rand)
    return Hash(spec, primary, rand)
