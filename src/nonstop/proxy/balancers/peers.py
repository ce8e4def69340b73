"""Runtime peer state, per-request selection state, and the eligibility test.

Mirrors ``ngx_http_upstream_rr_peer_t`` / ``ngx_http_upstream_rr_peers_t`` from nginx's
``src/http/ngx_http_upstream_round_robin.h``.  Only :class:`~nonstop.proxy.upstream.Upstream`
creates and mutates peers; a balancer may touch the fields nginx's ``get`` functions touch
(``current_weight``, ``effective_weight`` recovery, ``checked``) and the :class:`Attempt` it
is handed, nothing else.
"""

from __future__ import annotations

from bisect import bisect_right
from collections.abc import Callable

from nonstop.config.model import ServerSpec
from nonstop.proxy.metrics import Tally

__all__ = [
    "NEVER",
    "Attempt",
    "Peer",
    "PeerSet",
    "chosen",
    "swrr_gain",
    "usable",
]

# "Never happened" for ``accessed`` / ``checked``.  nginx starts them at 0 against a clock near
# 1.7e9, so the first pick always stamps ``checked``; -inf keeps that true for any ``now``.
NEVER = float("-inf")


class Peer:
    """One ``server`` of an upstream with its passive-health and connection counters."""

    __slots__ = (
        "accessed",
        "address",
        "checked",
        "conns",
        "current_weight",
        "down",
        "draining",
        "effective_weight",
        "fail_timeout",
        "fails",
        "health_ok",
        "host",
        "max_conns",
        "max_fails",
        "off",
        "on_idle",
        "port",
        "responses",
        "responses_5xx",
        "spec",
        "tally",
        "weight",
    )

    def __init__(self, spec: ServerSpec, health_ok: bool = True) -> None:
        self.spec = spec
        self.host = spec.host
        self.port = spec.port
        self.address = spec.address
        self.weight = spec.weight
        self.current_weight = 0
        self.effective_weight = spec.weight
        self.fails = 0
        self.accessed = NEVER
        self.checked = NEVER
        self.conns = 0
        self.max_fails = spec.max_fails
        self.fail_timeout = spec.fail_timeout
        self.max_conns = spec.max_conns
        self.down = spec.down
        self.health_ok = health_ok
        self.draining = False
        # responses relayed from this server, and how many were 5xx: what a deploy's
        # verify step watches on the new release
        self.responses = 0
        self.responses_5xx = 0
        # this server's request counters (``nonstop.proxy.metrics``), found on first use
        self.tally: Tally | None = None
        # ``off`` folds config ``down``, a failed active check and draining into the one flag
        # the balancers test; Upstream recomputes it whenever one of the three changes.
        self.off = self.down or not health_ok
        # called by ``Upstream.free`` when the last request in flight here ends: how a
        # drain learns its server is idle without polling
        self.on_idle: Callable[[], None] | None = None

    def refresh(self) -> None:
        """Recompute ``off`` after ``down``, ``health_ok`` or ``draining`` changed."""
        self.off = self.down or not self.health_ok or self.draining

    def temporarily_disabled(self, now: float) -> bool:
        """True while ``max_fails`` failures keep the peer out for ``fail_timeout``."""
        return bool(
            self.max_fails
            and self.fails >= self.max_fails
            and now - self.checked <= self.fail_timeout
        )

    def __repr__(self) -> str:
        return f"Peer({self.address!r}, conns={self.conns}, fails={self.fails})"


def usable(peer: Peer, now: float) -> bool:
    """nginx's eligibility checks 2-4: not down, not failed out, not at ``max_conns``.

    Check 1 (already tried for this request) needs the peer's index, so callers test the
    ``tried`` bitmap themselves before calling this.
    """
    if peer.off:
        return False
    if peer.max_fails and peer.fails >= peer.max_fails and now - peer.checked <= peer.fail_timeout:
        return False
    return not (peer.max_conns and peer.conns >= peer.max_conns)


def swrr_gain(peer: Peer) -> int:
    """One peer's share of a smooth weighted round robin step (``ngx_http_upstream_get_peer``):
    it gains its effective weight, which recovers by one towards ``weight`` after a
    failure lowered it.  Returns the gain, which the caller sums for the winner to pay."""
    ew = peer.effective_weight
    peer.current_weight += ew
    if ew < peer.weight:
        peer.effective_weight = ew + 1
    return ew


class PeerSet:
    """The primary or the backup list of an upstream (``ngx_http_upstream_rr_peers_t``).

    ``number`` and ``total_weight`` count every peer, ``down`` ones included, so ip_hash and
    hash mappings stay put when a server is marked down.  ``starts[i]`` is the summed
    weight of the peers before ``i``: the weight walk of ip_hash/hash and the ranges of
    random are one binary search over it.
    """

    __slots__ = ("backup", "number", "peers", "single", "starts", "total_weight")

    def __init__(self, peers: list[Peer], backup: bool, single: bool) -> None:
        self.peers = peers
        self.backup = backup
        self.single = single
        self.number = len(peers)
        starts: list[int] = []
        total = 0
        for peer in peers:
            starts.append(total)
            total += peer.weight
        self.starts = starts
        self.total_weight = total

    def index_of_weight(self, w: int) -> int:
        """The peer a weight offset ``0 <= w < total_weight`` falls on (nginx's weight walk)."""
        return bisect_right(self.starts, w) - 1


class Attempt:
    """Selection state of one request across its attempts (``rrp`` + ``iphp``/``hp``/``rp``).

    ``tries_left`` is nginx's ``pc->tries``: it starts at the upstream's ``tries`` and every
    ``free`` takes one off (a single-server upstream sets it to 0).  ``Upstream.begin`` lowers
    it to ``proxy_next_upstream_tries``; the proxy retries only while it is above zero.
    ``picks`` counts the peers handed out so far.
    """

    __slots__ = (
        "backup",
        "current",
        "hash",
        "hash_tries",
        "key",
        "picks",
        "rehash",
        "sets",
        "tried",
        "tries_left",
    )

    def __init__(self, sets: tuple[PeerSet, PeerSet | None], tries: int) -> None:
        self.sets = sets  # the Upstream's peer lists this attempt's ``tried`` bits refer to
        self.tried = 0  # bitmap over the indices of the current PeerSet
        self.backup = False  # switched to the backup list
        self.tries_left = tries
        self.picks = 0
        self.current: Peer | None = None
        self.key = b""  # ip_hash address bytes or the hash key
        self.hash = 0  # ip_hash/hash accumulator, or the ketama point index
        self.rehash = 0  # hash: the attempt number mixed into the key
        self.hash_tries = 0  # ip_hash/hash/random: failed looks; over 20 -> round robin


def chosen(attempt: Attempt, index: int, peer: Peer, now: float) -> Peer:
    """The end of every method's pick, as in nginx: mark the peer tried for this request
    and, once its failure window has passed, stamp ``checked`` so exactly one probe goes
    to a peer that failed (ngx_http_upstream_get_round_robin_peer and its twins)."""
    attempt.tried |= 1 << index
    if now - peer.checked > peer.fail_timeout:
        peer.checked = now
    return peer
