"""Health, draining, reload carry-over and server replacement on the Upstream."""

from __future__ import annotations

import pytest
from balancers_support import T0, fail, ip, ports, server, upstream

from nonstop.config.model import HealthSpec, UpstreamSpec
from nonstop.errors import ConfigError
from nonstop.proxy.upstream import Outcome, Upstream

CHECK = HealthSpec(path="/up")


def test_with_a_health_check_servers_start_out_of_rotation() -> None:
    up = upstream(server(1), server(2), health=CHECK)
    assert up.tries == 0
    assert up.pick(up.begin(b"", None), T0) is None
    assert up.set_health("127.0.0.1:2", True)
    assert up.tries == 1
    assert ports(up, 3) == [2, 2, 2]


def test_without_a_health_check_servers_start_healthy() -> None:
    up = upstream(server(1), server(2))
    assert all(p.health_ok for p in up.peers)
    assert up.tries == 2


def test_failed_health_check_takes_a_server_out_and_back_in() -> None:
    up = upstream(server(1), server(2))
    up.set_health("127.0.0.1:1", False)
    assert ports(up, 3) == [2, 2, 2]
    up.set_health("127.0.0.1:1", True)
    assert 1 in ports(up, 2)


def test_unknown_address_is_reported_not_raised() -> None:
    up = upstream(server(1))
    assert up.set_health("127.0.0.1:7", True) is False
    assert up.set_draining("127.0.0.1:7", True) is False
    assert up.peer("127.0.0.1:7") is None
    assert up.in_flight("127.0.0.1:7") == 0


def test_draining_server_gets_no_new_requests_but_finishes_its_own() -> None:
    up = upstream(server(1), server(2))
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0)
    assert peer is not None and peer.port == 1
    up.set_draining("127.0.0.1:1", True)
    assert up.in_flight("127.0.0.1:1") == 1
    assert ports(up, 3) == [2, 2, 2]
    up.free(attempt, peer, Outcome.OK, T0)
    assert up.in_flight("127.0.0.1:1") == 0


@pytest.mark.parametrize("take_out", ["health", "drain"])
def test_server_out_of_rotation_keeps_its_place_in_the_ip_hash_mapping(take_out: str) -> None:
    clients = [f"10.0.{n}.1" for n in range(40)]
    full = upstream(server(1), server(2), server(3), method="ip_hash")
    before = {c: ports(full, 1, ip(c))[0] for c in clients}
    assert set(before.values()) == {1, 2, 3}
    up = upstream(server(1), server(2), server(3), method="ip_hash")
    if take_out == "health":
        up.set_health("127.0.0.1:3", False)
    else:
        up.set_draining("127.0.0.1:3", True)
    for client, was in before.items():
        now = ports(up, 1, ip(client))[0]
        if was == 3:
            assert now in (1, 2)
        else:
            assert now == was


def test_reload_keeps_state_of_unchanged_servers_only() -> None:
    spec = UpstreamSpec("app", (server(1), server(2, weight=2), server(3)))
    old = Upstream(spec)
    fail(old, 1, T0)
    fail(old, 2, T0)
    busy = old.begin(b"", None)
    held = old.pick(busy, T0)
    assert held is not None and held.port == 3
    new_spec = UpstreamSpec("app", (server(1), server(2, weight=3), server(3), server(4)))
    new = Upstream(new_spec, previous=old)
    one, two, three, four = new.peers
    assert one.fails == 1 and one.effective_weight == 0
    assert two.fails == 0 and two.weight == 3  # parameters changed: fresh state
    assert three.conns == 1
    assert four.fails == 0 and four.conns == 0
    assert 1 not in ports(new, 8)  # still inside its fail_timeout
    old.free(busy, held, Outcome.OK, T0)  # the old generation's request ends
    assert new.in_flight("127.0.0.1:3") == 0


def test_reload_turning_health_checks_on_starts_servers_unchecked() -> None:
    old = upstream(server(1))
    new = Upstream(UpstreamSpec("app", (server(1),), health=CHECK), previous=old)
    assert new.peers[0].health_ok is False
    again = Upstream(UpstreamSpec("app", (server(1),), health=CHECK), previous=new)
    new.set_health("127.0.0.1:1", True)
    assert again.peers[0].health_ok is True
    off = Upstream(UpstreamSpec("app", (server(1),)), previous=again)
    assert off.peers[0].health_ok is True


def test_deploy_switch_adds_drains_and_removes_keeping_state() -> None:
    up = upstream(server(1), server(2), health=CHECK)
    up.set_health("127.0.0.1:1", True)
    up.set_health("127.0.0.1:2", True)
    fail(up, 1, T0)
    in_flight = up.begin(b"", None)
    old_peer = up.pick(in_flight, T0)
    assert old_peer is not None and old_peer.port == 2
    up.add_server(server(3))
    assert up.peer("127.0.0.1:1") is not None and up.peers[0].fails == 1
    assert up.peer("127.0.0.1:3") is not None
    assert 3 not in ports(up, 3)  # not healthy yet
    up.set_health("127.0.0.1:3", True)
    up.set_draining("127.0.0.1:2", True)
    assert set(ports(up, 4)) == {3}
    assert up.in_flight("127.0.0.1:2") >= 1
    up.free(in_flight, old_peer, Outcome.OK, T0)
    up.remove_server("127.0.0.1:2")
    assert [p.port for p in up.peers] == [1, 3]
    assert up.peers[0].fails == 1
    assert up.peer("127.0.0.1:2") is None


def test_request_begun_before_a_server_swap_does_not_retry_what_it_tried() -> None:
    up = upstream(server(1), server(2), server(3))
    attempt = up.begin(b"", None)
    first = up.pick(attempt, T0)
    assert first is not None and first.port == 1
    up.free(attempt, first, Outcome.FAILED, T0 + 100)  # old enough not to block port 1
    up.replace_servers((server(0), *up.spec.servers))
    retried = []
    while (peer := up.pick(attempt, T0 + 200)) is not None:
        retried.append(peer.port)
    assert sorted(retried) == [0, 2, 3]


def test_snapshot_reports_each_server_state() -> None:
    up = upstream(server(1), server(2, down=True), server(3), server(4), server(9, backup=True))
    up.set_draining("127.0.0.1:3", True)
    up.set_health("127.0.0.1:4", False)
    fail(up, 1, T0)
    rows = up.snapshot(now=T0 + 1)
    states = {row["address"]: row["state"] for row in rows}
    assert states == {
        "127.0.0.1:1": "failed",
        "127.0.0.1:2": "down",
        "127.0.0.1:3": "draining",
        "127.0.0.1:4": "unhealthy",
        "127.0.0.1:9": "up",
    }
    assert rows[0]["fails"] == 1 and rows[0]["last_failure"] == T0
    assert rows[4]["backup"] is True


def test_backup_with_a_hashing_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="backup"):
        upstream(server(1), server(2, backup=True), method="ip_hash")


def test_unknown_method_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="method"):
        upstream(server(1), method="fastest")


def test_next_upstream_tries_lowers_the_tries_of_an_attempt_only() -> None:
    up = upstream(server(1), server(2), server(3))
    assert up.begin(b"", None, tries=2).tries_left == 2
    assert up.begin(b"", None, tries=5).tries_left == 3  # never above the upstream's
    assert up.begin(b"", None).tries_left == 3


def test_given_back_try_allows_one_more_attempt() -> None:
    up = upstream(server(1), server(2))
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0)
    assert peer is not None
    up.free(attempt, peer, Outcome.FAILED, T0)
    assert attempt.tries_left == 1
    up.give_back_try(attempt)
    assert attempt.tries_left == 2


def test_responses_are_counted_per_server_with_their_5xx() -> None:
    up = upstream(server(1), server(2))
    peer = up.peer("127.0.0.1:1")
    assert peer is not None
    for status in (200, 502, 404, 500):
        up.responded(peer, status)
    assert up.response_counts("127.0.0.1:1") == (4, 2)
    assert up.response_counts("127.0.0.1:2") == (0, 0)
