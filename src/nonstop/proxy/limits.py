"""The state of ``limit_req`` and ``limit_conn`` zones: pure arithmetic, the clock passed in.

``RequestZone`` is nginx's leaky bucket (ngx_http_limit_req_module.c) exactly: per key an
``excess`` in milli-requests that drains at ``rate`` (milli-requests per second) and
grows by 1000 with each request, times in integer milliseconds.  A request whose excess
would pass ``burst`` is rejected; one above ``delay`` waits ``(excess - delay) * 1000 /
rate`` ms.  ``limit_requests`` runs a location's limits in order as nginx's handler does:
every zone but the last only looks (and pins its key), the last one accounts, and the
pinned ones are accounted afterwards, the longest delay winning.  Least recently used
keys are dropped as nginx's ``ngx_http_limit_req_expire`` drops them, when idle for a
minute with nothing left in the bucket or when the zone is full.

``ConnZone`` counts the requests in progress per key (ngx_http_limit_conn_module.c).

Zones live in one process: nginx shares them between its workers, nonstop's workers
each have their own (docs/nginx-compatibility.md).  ``Zones`` keeps a zone's state
across a reload when its name, key and size did not change, as nginx keeps the shared
memory of such a zone.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Final

from nonstop.config.model import LimitReq, LimitZone

__all__ = [
    "AGAIN",
    "BUSY",
    "DECLINED",
    "ERROR",
    "OK",
    "ConnZone",
    "RequestZone",
    "Zones",
    "limit_requests",
    "release",
]

DECLINED: Final = 0  # no limit applied (every key was empty)
OK: Final = 1  # accounted
AGAIN: Final = 2  # looked up and pinned, to be accounted
BUSY: Final = 3  # over the burst: rejected
ERROR: Final = 4  # the zone is full of pinned keys: rejected

_NEVER: Final = -(1 << 60)  # "last" of a key not yet accounted (nginx: 0, long ago)
_IDLE_MS: Final = 60000


class Bucket:
    __slots__ = ("count", "excess", "last")

    def __init__(self, last: int) -> None:
        self.excess = 0
        self.last = last
        self.count = 0  # requests that pinned it and are not yet accounted


class RequestZone:
    """One ``limit_req_zone``: key -> bucket, least recently used first."""

    __slots__ = ("buckets", "capacity", "name", "rate", "spec")

    def __init__(self, spec: LimitZone, buckets: OrderedDict[str, Bucket] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        self.rate = spec.rate
        # nginx: "one megabyte zone can keep about 16 thousand 64-byte states"
        self.capacity = max(1, spec.size // 64)
        self.buckets: OrderedDict[str, Bucket] = buckets if buckets is not None else OrderedDict()

    def _drained(self, bucket: Bucket, now: int) -> tuple[int, int]:
        """The bucket's excess at ``now`` with this request in it, and the elapsed ms."""
        ms = now - bucket.last
        if ms < -_IDLE_MS:
            ms = 1
        elif ms < 0:
            ms = 0
        excess = bucket.excess - self.rate * ms // 1000 + 1000
        return (excess if excess > 0 else 0), ms

    def lookup(
        self, key: str, burst: int, now: int, account: bool
    ) -> tuple[int, int, Bucket | None]:
        """(outcome, excess, the bucket pinned on AGAIN) (ngx_http_limit_req_lookup)."""
        buckets = self.buckets
        bucket = buckets.get(key)
        if bucket is not None:
            buckets.move_to_end(key)
            excess, ms = self._drained(bucket, now)
            if excess > burst:
                return BUSY, excess, None
            if account:
                bucket.excess = excess
                if ms:
                    bucket.last = now
                return OK, excess, None
            bucket.count += 1
            return AGAIN, excess, bucket
        self._expire(1, now)
        if len(buckets) >= self.capacity:
            self._expire(0, now)
            if len(buckets) >= self.capacity:
                return ERROR, 0, None
        if account:
            buckets[key] = Bucket(now)
            return OK, 0, None
        bucket = buckets[key] = Bucket(_NEVER)
        bucket.count = 1
        return AGAIN, 0, bucket

    def account(self, bucket: Bucket, now: int) -> int:
        """Account a pinned bucket; its excess (ngx_http_limit_req_account)."""
        excess, ms = self._drained(bucket, now)
        if ms:
            bucket.last = now
        bucket.excess = excess
        bucket.count -= 1
        return excess

    def _expire(self, n: int, now: int) -> None:
        """Drop the least recently used keys: with n == 1 one or two that are idle and
        empty, with n == 0 also the oldest one by force (ngx_http_limit_req_expire)."""
        buckets = self.buckets
        while n < 3:
            if not buckets:
                return
            key = next(iter(buckets))
            bucket = buckets[key]
            if bucket.count:
                return
            check = n != 0
            n += 1
            if check:
                ms = abs(now - bucket.last)
                if ms < _IDLE_MS or bucket.excess - self.rate * ms // 1000 > 0:
                    return
            del buckets[key]


def limit_requests(
    limits: list[tuple[RequestZone, LimitReq, str]], now: int
) -> tuple[int, int, str, int]:
    """Run a location's ``limit_req`` list for one request, each with its key's value.

    Returns (outcome, excess, zone name, delay in ms): DECLINED when every key was
    empty, BUSY or ERROR when rejected (nothing stays pinned), else OK with the
    delay, 0 for none (ngx_http_limit_req_handler).
    """
    rc = DECLINED
    excess = 0
    pinned: list[tuple[int, Bucket]] = []
    last = len(limits) - 1
    at = last
    for n, (zone, limit, key) in enumerate(limits):
        if not key:
            continue
        rc, excess, bucket = zone.lookup(key, limit.burst, now, n == last)
        if bucket is not None:
            pinned.append((n, bucket))
        if rc != AGAIN:
            at = n
            break
    if rc == DECLINED:
        return DECLINED, 0, "", 0
    if rc in (BUSY, ERROR):
        for _, bucket in pinned:
            bucket.count -= 1
        return rc, excess, limits[at][0].name, 0
    if rc == AGAIN:
        excess = 0
    zone, limit, _ = limits[at]
    name = zone.name
    delay = 0 if excess <= limit.delay else (excess - limit.delay) * 1000 // zone.rate
    for n, bucket in reversed(pinned):
        zone, limit, _ = limits[n]
        held = zone.account(bucket, now)
        if held <= limit.delay:
            continue
        wait = (held - limit.delay) * 1000 // zone.rate
        if wait > delay:
            delay, excess, name = wait, held, zone.name
    return OK, excess, name, delay


class ConnZone:
    """One ``limit_conn_zone``: key -> requests in progress."""

    __slots__ = ("capacity", "counts", "name", "spec")

    def __init__(self, spec: LimitZone, counts: dict[str, int] | None = None) -> None:
        self.spec = spec
        self.name = spec.name
        # nginx: "one megabyte zone can keep about 32 thousand 32-byte states"
        self.capacity = max(1, spec.size // 32)
        self.counts: dict[str, int] = counts if counts is not None else {}

    def acquire(self, key: str, most: int) -> int:
        """OK and one more in progress, BUSY at ``most``, ERROR when the zone is full."""
        counts = self.counts
        count = counts.get(key, 0)
        if count >= most:
            return BUSY
        if not count and len(counts) >= self.capacity:
            return ERROR
        counts[key] = count + 1
        return OK

    def release(self, key: str) -> None:
        counts = self.counts
        count = counts.get(key, 0) - 1
        if count > 0:
            counts[key] = count
        else:
            counts.pop(key, None)


def release(holds: list[tuple[ConnZone, str]]) -> None:
    """A request ended: give back what its ``limit_conn`` took."""
    for zone, key in holds:
        zone.release(key)


class Zones:
    """A config's zones by name; built from the last config's to keep their state."""

    __slots__ = ("conns", "reqs")

    def __init__(self, specs: tuple[LimitZone, ...], previous: Zones | None = None) -> None:
        self.reqs: dict[str, RequestZone] = {}
        self.conns: dict[str, ConnZone] = {}
        for spec in specs:
            if spec.rate:
                old = previous.reqs.get(spec.name) if previous is not None else None
                kept = old.buckets if old is not None and _same(old.spec, spec) else None
                self.reqs[spec.name] = RequestZone(spec, kept)
            else:
                was = previous.conns.get(spec.name) if previous is not None else None
                counts = was.counts if was is not None and _same(was.spec, spec) else None
                self.conns[spec.name] = ConnZone(spec, counts)


def _same(old: LimitZone, new: LimitZone) -> bool:
    """nginx reuses a zone's shared memory when its name and size stay (a changed key
    would fail its reload; here the zone starts afresh)."""
    return old.key == new.key and old.size == new.size
