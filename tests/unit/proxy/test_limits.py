"""The zones' arithmetic on a fake clock (integer milliseconds), against nginx's numbers
(ngx_http_limit_req_module.c; the cases of nginx-tests' limit_req*.t and limit_conn*.t)."""

from __future__ import annotations

from nonstop.config.model import LimitReq, LimitZone
from nonstop.config.template import compile_template
from nonstop.proxy.limits import (
    BUSY,
    DECLINED,
    ERROR,
    OK,
    ConnZone,
    RequestZone,
    Zones,
    limit_requests,
)

NODELAY = (2**63 - 1) // 1000 * 1000


def zone(name: str = "z", rate: int = 1000, size: int = 1 << 20, key: str = "$a") -> LimitZone:
    return LimitZone(name, compile_template(key), size, rate)


def run(z: RequestZone, limit: LimitReq, key: str, now: int) -> tuple[int, int, str, int]:
    return limit_requests([(z, limit, key)], now)


def test_a_first_request_passes_with_nothing_in_the_bucket() -> None:
    z = RequestZone(zone())
    assert run(z, LimitReq("z"), "k", 10_000) == (OK, 0, "z", 0)


def test_burst_nodelay_passes_burst_plus_one_at_once_then_rejects() -> None:
    z = RequestZone(zone(rate=1000))
    limit = LimitReq("z", burst=2000, delay=NODELAY)
    outcomes = [run(z, limit, "k", 5_000)[:2] for _ in range(5)]
    assert outcomes == [(OK, 0), (OK, 1000), (OK, 2000), (BUSY, 3000), (BUSY, 3000)]


def test_the_bucket_drains_at_the_rate_in_whole_milliseconds() -> None:
    z = RequestZone(zone(rate=1000))  # 1r/s
    limit = LimitReq("z", burst=1000, delay=NODELAY)
    assert run(z, limit, "k", 0)[0] == OK
    assert run(z, limit, "k", 0)[:2] == (OK, 1000)
    assert run(z, limit, "k", 999)[:2] == (BUSY, 1001)  # 2000 - 999 drained
    assert run(z, limit, "k", 1000)[:2] == (OK, 1000)


def test_without_nodelay_excess_waits_its_share_of_the_rate() -> None:
    z = RequestZone(zone(rate=10_000))  # 10r/s: 100 ms a request
    limit = LimitReq("z", burst=5000)
    assert run(z, limit, "k", 0) == (OK, 0, "z", 0)
    assert run(z, limit, "k", 0) == (OK, 1000, "z", 100)
    assert run(z, limit, "k", 50) == (OK, 1500, "z", 150)


def test_delay_lets_the_first_requests_through_undelayed() -> None:
    z = RequestZone(zone(rate=10_000))
    limit = LimitReq("z", burst=5000, delay=2000)
    delays = [run(z, limit, "k", 0)[3] for _ in range(5)]
    assert delays == [0, 0, 0, 100, 200]


def test_a_per_minute_rate_is_nginx_integer_arithmetic() -> None:
    z = RequestZone(zone(rate=1000 // 60))  # 1r/m is 16 milli-requests a second
    limit = LimitReq("z", delay=NODELAY)
    assert run(z, limit, "k", 0)[0] == OK
    assert run(z, limit, "k", 62_000)[:2] == (BUSY, 8)  # 1000 - 16 * 62 + 1000 > 0
    assert run(z, limit, "k", 62_500)[:2] == (OK, 0)


def test_keys_are_counted_apart_and_empty_keys_not_at_all() -> None:
    z = RequestZone(zone())
    limit = LimitReq("z")
    assert run(z, limit, "a", 0)[0] == OK
    assert run(z, limit, "b", 0)[0] == OK
    assert run(z, limit, "a", 0)[0] == BUSY
    assert run(z, limit, "", 0) == (DECLINED, 0, "", 0)
    assert "" not in z.buckets


def test_a_clock_that_goes_back_drains_nothing() -> None:
    z = RequestZone(zone())
    limit = LimitReq("z", burst=5000, delay=NODELAY)
    run(z, limit, "k", 10_000)
    assert run(z, limit, "k", 9_000)[:2] == (OK, 1000)


def test_with_two_limits_the_longest_delay_wins_and_both_are_accounted() -> None:
    fast, slow = RequestZone(zone("fast", rate=10_000)), RequestZone(zone("slow", rate=2000))
    limits = [(fast, LimitReq("fast", burst=5000), "k"), (slow, LimitReq("slow", burst=5000), "k")]
    assert limit_requests(limits, 0) == (OK, 0, "slow", 0)
    assert limit_requests(limits, 0) == (OK, 1000, "slow", 500)
    assert fast.buckets["k"].excess == 1000 and fast.buckets["k"].count == 0
    limits.reverse()
    assert limit_requests(limits, 0) == (OK, 2000, "slow", 1000)


def test_a_rejection_by_a_later_limit_leaves_the_earlier_unchanged_and_unpinned() -> None:
    first, second = RequestZone(zone("first")), RequestZone(zone("second"))
    limits = [(first, LimitReq("first", burst=9000), "k"), (second, LimitReq("second"), "k")]
    assert limit_requests(limits, 0)[0] == OK
    assert limit_requests(limits, 0)[:3] == (BUSY, 1000, "second")
    bucket = first.buckets["k"]
    assert (bucket.excess, bucket.count) == (0, 0)  # looked at, never accounted


def test_a_full_zone_drops_the_least_recently_used_idle_key() -> None:
    z = RequestZone(zone(size=3 * 64))  # room for three keys
    limit = LimitReq("z", delay=NODELAY)
    for key in ("a", "b", "c"):
        run(z, limit, key, 0)
    run(z, limit, "a", 5000)  # "b" is now the least recently used
    assert run(z, limit, "d", 5000)[0] == OK
    assert list(z.buckets) == ["c", "a", "d"]


def test_idle_empty_keys_are_dropped_after_a_minute() -> None:
    z = RequestZone(zone())
    limit = LimitReq("z")
    run(z, limit, "old", 0)
    run(z, limit, "new", 60_000)
    assert list(z.buckets) == ["new"]


def test_a_zone_full_of_pinned_keys_rejects() -> None:
    z = RequestZone(zone(size=64))
    pinned = [(z, LimitReq("z"), "a"), (z, LimitReq("z"), "b")]
    assert limit_requests(pinned, 0)[0] == ERROR
    assert z.buckets["a"].count == 0


def test_limit_conn_counts_requests_in_progress_per_key() -> None:
    z = ConnZone(zone(rate=0))
    assert [z.acquire("k", 2) for _ in range(3)] == [OK, OK, BUSY]
    assert z.acquire("other", 2) == OK
    z.release("k")
    assert z.acquire("k", 2) == OK
    for key in ("k", "k", "other"):
        z.release(key)
    assert z.counts == {}


def test_limit_conn_zone_full_rejects_new_keys() -> None:
    z = ConnZone(zone(rate=0, size=32))
    assert z.acquire("a", 5) == OK
    assert z.acquire("b", 5) == ERROR
    assert z.acquire("a", 5) == OK


def test_a_reload_keeps_the_state_of_an_unchanged_zone_and_starts_a_changed_one_afresh() -> None:
    old = Zones((zone("same"), zone("rekeyed"), zone("c", rate=0)))
    old.reqs["same"].buckets["k"] = old.reqs["rekeyed"].buckets["k"] = object()  # type: ignore[assignment]
    old.conns["c"].counts["k"] = 1
    new = Zones((zone("same", rate=5000), zone("rekeyed", key="$b"), zone("c", rate=0)), old)
    assert "k" in new.reqs["same"].buckets and new.reqs["same"].rate == 5000
    assert new.reqs["rekeyed"].buckets == {}
    assert new.conns["c"].counts == {"k": 1}
