"""The one owner of an upstream's runtime state: peers, passive health, drain, deploy swaps.

Selection follows nginx's ``src/http/ngx_http_upstream_round_robin.c`` around a pluggable
balancer (nonstop.proxy.balancers): ``begin`` is nginx's ``peer.init``, ``pick`` its
``peer.get`` including the switch to the backup list, ``free`` its
``ngx_http_upstream_free_round_robin_peer`` failure accounting.  Active health and
draining take a peer out of selection exactly like ``down`` does, and like ``down`` the peer
stays in ``total_weight`` so ip_hash/hash mappings do not move.

Everything here is pure: time comes in as ``now`` (monotonic seconds) and randomness from an
injected ``random.Random`` or callable, so every decision is reproducible in a unit test.
"""

from __future__ import annotations

import enum
import functools
import random
from collections.abc import Callable, Iterable
from dataclasses import replace

from nonstop.config.model import ServerSpec, UpstreamSpec
from nonstop.errors import ConfigError
from nonstop.proxy.balancers import BACKUP_METHODS, BALANCERS, Balancer, RandomSource
from nonstop.proxy.balancers.peers import NEVER, Attempt, Peer, PeerSet

__all__ = ["Attempt", "Outcome", "Peer", "Upstream"]


class Outcome(enum.IntEnum):
    """How an attempt on a peer ended, as nginx passes it to ``peer.free``."""

    OK = 0
    FAILED = 1  # NGX_PEER_FAILED: error, timeout, invalid_header, listed http_5xx/429
    NEXT = 2  # NGX_PEER_NEXT: 403/404 passed to the next peer; never a failure


_Sets = tuple[PeerSet, PeerSet | None]


def _random_source(rng: random.Random | Callable[[], int] | None) -> RandomSource:
    """A 31-bit draw like C ``random()``, never the module-level generator."""
    if rng is None:
        rng = random.Random()
    if isinstance(rng, random.Random):
        return functools.partial(rng.getrandbits, 31)
    return rng


class Upstream:
    """Runtime state of one ``upstream`` block, built from its frozen spec."""

    __slots__ = (
        "_backup",
        "_balancer",
        "_by_address",
        "_primary",
        "_rand",
        "_sets",
        "backups",
        "name",
        "peers",
        "spec",
        "tries",
    )

    def __init__(
        self,
        spec: UpstreamSpec,
        rng: random.Random | Callable[[], int] | None = None,
        previous: Upstream | None = None,
    ) -> None:
        if spec.method not in BALANCERS:
            raise ConfigError(f"unknown balancing method {spec.method!r}", str(spec.source or ""))
        self.name = spec.name
        self.spec = spec
        self._rand = _random_source(rng)
        carried = previous._all_peers() if previous is not None else []
        old_health = previous.spec.health if previous is not None else spec.health
        self._build(spec.servers, carried, old_health is not None)

    # -- building -------------------------------------------------------------------------

    def _all_peers(self) -> list[Peer]:
        return self.peers + self.backups

    def _build(self, servers: Iterable[ServerSpec], carried: list[Peer], had_health: bool) -> None:
        """Make the peer lists, reusing the Peer of every server whose spec is unchanged."""
        pool: dict[ServerSpec, list[Peer]] = {}
        for old in carried:
            pool.setdefault(old.spec, []).append(old)
        checked = self.spec.health is not None
        primary: list[Peer] = []
        backup: list[Peer] = []
        for server in servers:
            same = pool.get(server)
            if same:
                peer = same.pop(0)
                if not checked:
                    peer.health_ok = True
                elif not had_health:
                    peer.health_ok = False  # checks just turned on: wait for the first pass
            else:
                peer = Peer(server, health_ok=not checked)
            peer.refresh()
            (backup if server.backup else primary).append(peer)
        if backup and self.spec.method not in BACKUP_METHODS:
            raise ConfigError(
                f"upstream {self.name!r}: backup servers need round_robin or least_conn, "
                f"not {self.spec.method}",
                str(self.spec.source or ""),
            )
        self.peers = primary
        self.backups = backup
        self._primary = PeerSet(primary, backup=False, single=len(primary) == 1 and not backup)
        self._backup = PeerSet(backup, backup=True, single=False) if backup else None
        self._sets: _Sets = (self._primary, self._backup)
        self._balancer: Balancer = BALANCERS[self.spec.method](self.spec, self._primary, self._rand)
        by_address: dict[str, list[Peer]] = {}
        for peer in primary + backup:
            by_address.setdefault(peer.address, []).append(peer)
        self._by_address = by_address
        self._count_tries()

    def _count_tries(self) -> None:
        """nginx's default attempt cap: selectable primaries plus selectable backups."""
        self.tries = sum(1 for peer in self.peers if not peer.off) + sum(
            1 for peer in self.backups if not peer.off
        )

    def replace_servers(self, servers: tuple[ServerSpec, ...]) -> None:
        """Swap the server list; unchanged servers keep their Peer and all its state.

        The deploy switch builds on this: add the new server, wait for its health, mark the
        old one draining, and once ``in_flight`` is 0 replace the list without it.  Requests
        begun before the swap keep working: their next ``pick`` maps what they already tried
        onto the new lists and ``free`` still counts on the Peer they hold.
        """
        self.spec = replace(self.spec, servers=tuple(servers))
        self._build(self.spec.servers, self._all_peers(), self.spec.health is not None)

    def add_server(self, server: ServerSpec) -> None:
        """Append one server (a new release's instance) to the list."""
        self.replace_servers((*self.spec.servers, server))

    def remove_server(self, address: str) -> None:
        """Drop every server with this address; other servers keep their state."""
        self.replace_servers(tuple(s for s in self.spec.servers if s.address != address))

    # -- the hot path ---------------------------------------------------------------------

    def begin(self, client_addr: bytes, hash_key: str | bytes | None, tries: int = 0) -> Attempt:
        """Start selecting for one request (nginx ``peer.init``).

        ``client_addr`` is the packed client IP (4 or 16 bytes, b"" for unix sockets);
        ``hash_key`` the evaluated ``hash`` key, None for other methods; ``tries`` the
        route's ``proxy_next_upstream_tries`` (0: no limit of its own).
        """
        attempt = Attempt(self._sets, self.tries)
        if tries and tries < attempt.tries_left:
            attempt.tries_left = tries
        self._balancer.begin(attempt, client_addr, hash_key)
        return attempt

    def pick(self, attempt: Attempt, now: float) -> Peer | None:
        """The next peer for ``attempt``, or None: no live upstream (nginx ``NGX_BUSY``)."""
        if attempt.sets[0] is not self._primary:
            # (the primary list is new whenever the lists are; comparing the pair itself
            # would compare two fresh tuples in the compiled build, never the same object)
            self._remap(attempt)
        balancer = self._balancer
        if attempt.backup:
            backup = self._backup
            peer = balancer.pick(backup, attempt, now) if backup is not None else None
        else:
            peer = balancer.pick(self._primary, attempt, now)
            if peer is None and self._backup is not None:
                attempt.backup = True
                attempt.tried = 0
                peer = balancer.pick(self._backup, attempt, now)
        if peer is None:
            return None
        peer.conns += 1
        attempt.current = peer
        attempt.picks += 1
        return peer

    def free(self, attempt: Attempt, peer: Peer, outcome: Outcome, now: float) -> bool:
        """Account for the end of an attempt; True if this failure took the peer out.

        The caller logs "upstream server temporarily disabled" on True, as nginx does.
        A single-server upstream never takes its server out and allows no further try.
        """
        if peer.conns > 0:
            peer.conns -= 1
            if peer.conns == 0 and peer.on_idle is not None:
                peer.on_idle()
        if attempt.sets[0].single:
            peer.fails = 0
            attempt.tries_left = 0
            return False
        if attempt.tries_left:
            attempt.tries_left -= 1
        if outcome is not Outcome.FAILED:
            if peer.accessed < peer.checked:
                peer.fails = 0  # picked after its failure window: the probe passed
            return False
        peer.fails += 1
        peer.accessed = peer.checked = now
        if not peer.max_fails:
            return False
        ew = peer.effective_weight - peer.weight // peer.max_fails
        peer.effective_weight = ew if ew > 0 else 0
        return peer.fails >= peer.max_fails

    def give_back_try(self, attempt: Attempt) -> None:
        """The failure of the last try does not count against ``attempt``'s tries: an
        error on a reused keep-alive connection, which the server may have closed just
        now (nginx's ngx_http_upstream_next: "if (u->peer.cached && ft_type ==
        NGX_HTTP_UPSTREAM_FT_ERROR) tries++")."""
        attempt.tries_left += 1

    def responded(self, peer: Peer, status: int) -> None:
        """Count a response relayed from ``peer`` (what a deploy's verify step watches)."""
        peer.responses += 1
        if status >= 500:
            peer.responses_5xx += 1

    def _remap(self, attempt: Attempt) -> None:
        """Carry an attempt begun before ``replace_servers`` over to the new lists."""
        old_sets = attempt.sets
        attempt.sets = self._sets
        old = old_sets[1] if attempt.backup else old_sets[0]
        new = self._backup if attempt.backup else self._primary
        if old is None or new is None:
            attempt.tried = -1  # every bit set: nothing left to try in this list
            return
        position = {peer: i for i, peer in enumerate(new.peers)}
        tried = 0
        for i, peer in enumerate(old.peers):
            if attempt.tried >> i & 1 and peer in position:
                tried |= 1 << position[peer]
        attempt.tried = tried

    # -- state changes from health checks and the deployer --------------------------------

    def peer(self, address: str) -> Peer | None:
        """The (first) peer with this address, or None."""
        found = self._by_address.get(address)
        return found[0] if found else None

    def set_health(self, address: str, ok: bool) -> bool:
        """Record an active health result; False if no server has this address."""
        return self._set(address, "health_ok", ok)

    def set_draining(self, address: str, draining: bool) -> bool:
        """Stop (or resume) new picks of a server; in-flight requests finish."""
        return self._set(address, "draining", draining)

    def _set(self, address: str, field: str, value: bool) -> bool:
        found = self._by_address.get(address)
        if not found:
            return False
        for peer in found:
            setattr(peer, field, value)
            peer.refresh()
        self._count_tries()
        return True

    def on_idle(self, address: str, callback: Callable[[], None] | None) -> None:
        """Call ``callback`` whenever the last request in flight to ``address`` ends.

        The drain's signal: the peer keeps the callback across reloads (a new Upstream
        shares the peers of unchanged servers), so requests begun before a reload end
        it too.  None removes it.
        """
        for peer in self._by_address.get(address, ()):
            peer.on_idle = callback

    def response_counts(self, address: str) -> tuple[int, int]:
        """Responses relayed from a server so far, and how many of them were 5xx."""
        found = self._by_address.get(address, ())
        return sum(p.responses for p in found), sum(p.responses_5xx for p in found)

    def in_flight(self, address: str) -> int:
        """Requests currently on the server(s) with this address."""
        return sum(peer.conns for peer in self._by_address.get(address, ()))

    def snapshot(self, now: float | None = None) -> list[dict[str, object]]:
        """Per-server state for status output; pass ``now`` to report failed-out peers."""
        return [_describe(peer, now) for peer in self.peers + self.backups]

    def __repr__(self) -> str:
        return f"Upstream({self.name!r}, {self.spec.method}, {len(self.peers)}+{len(self.backups)})"


def _state(peer: Peer, now: float | None) -> str:
    if peer.down:
        return "down"
    if peer.draining:
        return "draining"
    if not peer.health_ok:
        return "unhealthy"
    if now is not None and peer.temporarily_disabled(now):
        return "failed"
    if peer.max_conns and peer.conns >= peer.max_conns:
        return "full"
    return "up"


def _describe(peer: Peer, now: float | None) -> dict[str, object]:
    return {
        "address": peer.address,
        "backup": peer.spec.backup,
        "state": _state(peer, now),
        "weight": peer.weight,
        "effective_weight": peer.effective_weight,
        "current_weight": peer.current_weight,
        "fails": peer.fails,
        "max_fails": peer.max_fails,
        "fail_timeout": peer.fail_timeout,
        "conns": peer.conns,
        "max_conns": peer.max_conns,
        "down": peer.down,
        "health_ok": peer.health_ok,
        "draining": peer.draining,
        "last_failure": None if peer.accessed == NEVER else peer.accessed,
    }
