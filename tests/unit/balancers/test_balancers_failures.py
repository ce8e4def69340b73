"""Passive failure accounting and backup switching."""

from __future__ import annotations

from balancers_support import T0, fail, ports, server, upstream

from nonstop.proxy.upstream import Attempt, Outcome, Peer, Upstream


def test_failed_peer_is_skipped_until_fail_timeout_passes() -> None:
    up = upstream(server(1, fail_timeout=10), server(2))
    fail(up, 1, T0)
    assert ports(up, 4) == [2, 2, 2, 2]
    assert up.peer("127.0.0.1:1") is not None


def probe_pick(up: Upstream, now: float) -> tuple[Attempt, Peer]:
    """Send requests until port 1 is chosen again; its effective weight starts at 0."""
    for _ in range(5):
        attempt = up.begin(b"", None)
        peer = up.pick(attempt, now)
        assert peer is not None
        if peer.port == 1:
            return attempt, peer
        up.free(attempt, peer, Outcome.OK, now)
    raise AssertionError("the failed peer was never probed")


def test_exactly_one_probe_is_sent_after_fail_timeout() -> None:
    up = upstream(server(1, fail_timeout=10), server(2))
    fail(up, 1, T0)
    later = T0 + 10.5
    probe, peer = probe_pick(up, later)
    # while the probe is in flight, nobody else is sent there
    for _ in range(4):
        other = up.begin(b"", None)
        chosen = up.pick(other, later + 0.1)
        assert chosen is not None and chosen.port == 2
        up.free(other, chosen, Outcome.OK, later + 0.1)
    up.free(probe, peer, Outcome.OK, later + 0.2)
    assert peer.fails == 0
    assert 1 in ports(up, 4)


def test_failed_probe_restarts_the_window() -> None:
    up = upstream(server(1, fail_timeout=10), server(2))
    fail(up, 1, T0)
    probe, peer = probe_pick(up, T0 + 11)
    up.free(probe, peer, Outcome.FAILED, T0 + 11)
    for now in (T0 + 12, T0 + 20, T0 + 21):
        attempt = up.begin(b"", None)
        chosen = up.pick(attempt, now)
        assert chosen is not None and chosen.port == 2
        up.free(attempt, chosen, Outcome.OK, now)
    probe_pick(up, T0 + 21.5)


def test_success_inside_the_window_does_not_clear_fails() -> None:
    up = upstream(server(1, max_fails=3), server(2))
    fail(up, 1, T0)
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0 + 1)
    assert peer is not None and peer.port == 1
    up.free(attempt, peer, Outcome.OK, T0 + 1)
    assert peer.fails == 1


def test_peer_goes_out_only_when_fails_reach_max_fails() -> None:
    up = upstream(server(1, max_fails=3), server(2))
    fail(up, 1, T0)
    fail(up, 1, T0)
    assert 1 in ports(up, 2)
    fail(up, 1, T0)
    assert ports(up, 4) == [2, 2, 2, 2]


def test_free_reports_the_failure_that_disables_the_peer() -> None:
    up = upstream(server(1, max_fails=2), server(2))
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0)
    assert peer is not None
    assert up.free(attempt, peer, Outcome.FAILED, T0) is False
    again = up.begin(b"", None)
    peer.conns += 1
    assert up.free(again, peer, Outcome.FAILED, T0) is True


def test_effective_weight_drops_on_failure_and_recovers_one_per_pass() -> None:
    up = upstream(server(1, weight=4, max_fails=2), server(2))
    peer = up.peer("127.0.0.1:1")
    assert peer is not None
    fail(up, 1, T0)
    assert peer.effective_weight == 2  # 4 - 4 // 2
    seen = []
    for _ in range(3):
        ports(up, 1)
        seen.append(peer.effective_weight)
    assert seen == [3, 4, 4]


def test_effective_weight_never_goes_below_zero() -> None:
    up = upstream(server(1, weight=3, max_fails=1, fail_timeout=0), server(2))
    peer = up.peer("127.0.0.1:1")
    assert peer is not None
    fail(up, 1, T0)
    fail(up, 1, T0)
    assert peer.effective_weight == 0


def test_max_fails_zero_turns_accounting_off() -> None:
    up = upstream(server(1, max_fails=0), server(2))
    for _ in range(5):
        fail(up, 1, T0)
    peer = up.peer("127.0.0.1:1")
    assert peer is not None
    assert peer.effective_weight == 1
    assert ports(up, 4) == [1, 2, 1, 2]


def test_next_outcome_is_not_a_failure() -> None:
    up = upstream(server(1), server(2))
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0)
    assert peer is not None
    up.free(attempt, peer, Outcome.NEXT, T0)
    assert peer.fails == 0
    assert attempt.tries_left == 1
    retry = up.pick(attempt, T0)
    assert retry is not None and retry is not peer


def test_all_peers_failed_gives_none_and_keeps_their_counters() -> None:
    up = upstream(server(1), server(2))
    fail(up, 1, T0)
    fail(up, 2, T0)
    assert up.pick(up.begin(b"", None), T0 + 1) is None
    assert [p.fails for p in up.peers] == [1, 1]
    assert up.pick(up.begin(b"", None), T0 + 2) is None


def test_backup_takes_over_when_every_primary_failed() -> None:
    up = upstream(server(1), server(2), server(9, backup=True))
    assert up.tries == 3
    fail(up, 1, T0)
    fail(up, 2, T0)
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0 + 1)
    assert peer is not None and peer.port == 9
    assert attempt.backup


def test_backup_is_not_used_while_a_primary_is_live() -> None:
    up = upstream(server(1), server(2, down=True), server(9, backup=True))
    assert ports(up, 4) == [1, 1, 1, 1]


def test_request_moves_to_backups_after_its_primaries_failed_and_stays_there() -> None:
    up = upstream(server(1), server(9, backup=True), server(8, backup=True))
    attempt = up.begin(b"", None)
    chosen = []
    for _ in range(3):
        peer = up.pick(attempt, T0)
        assert peer is not None
        chosen.append(peer.port)
        up.free(attempt, peer, Outcome.FAILED, T0)
    assert chosen == [1, 9, 8]
    assert up.pick(attempt, T0) is None


def test_least_conn_backup_list_is_chosen_by_least_conn() -> None:
    up = upstream(
        server(1, down=True), server(8, backup=True), server(9, backup=True), method="least_conn"
    )
    held = up.begin(b"", None)
    first = up.pick(held, T0)
    assert first is not None and first.port == 8
    other = up.pick(up.begin(b"", None), T0)
    assert other is not None and other.port == 9
