"""Smooth weighted round robin and the single-server special case."""

from __future__ import annotations

from balancers_support import T0, ports, server, upstream

from nonstop.proxy.upstream import Outcome


def test_weights_5_1_1_give_a_a_b_a_c_a_a_repeating() -> None:
    up = upstream(server(1, weight=5), server(2), server(3))
    assert ports(up, 14) == [1, 1, 2, 1, 3, 1, 1] * 2


def test_equal_weights_rotate_in_config_order() -> None:
    up = upstream(server(1), server(2), server(3))
    assert ports(up, 6) == [1, 2, 3, 1, 2, 3]


def test_down_server_is_never_picked_and_not_counted_in_tries() -> None:
    up = upstream(server(1), server(2, down=True), server(3))
    assert ports(up, 4) == [1, 3, 1, 3]
    assert up.tries == 2


def test_retry_within_a_request_skips_peers_already_tried() -> None:
    up = upstream(server(1), server(2), server(3))
    attempt = up.begin(b"", None)
    seen = []
    for _ in range(3):
        peer = up.pick(attempt, T0)
        assert peer is not None
        seen.append(peer.port)
        up.free(attempt, peer, Outcome.FAILED, T0)
    assert sorted(seen) == [1, 2, 3]
    assert up.pick(attempt, T0) is None
    assert attempt.tries_left == 0


def test_pick_counts_a_connection_and_free_releases_it() -> None:
    up = upstream(server(1), server(2))
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0)
    assert peer is not None
    assert up.in_flight(peer.address) == 1
    up.free(attempt, peer, Outcome.OK, T0)
    assert up.in_flight(peer.address) == 0


def test_single_server_is_never_marked_unavailable() -> None:
    up = upstream(server(1))
    for i in range(5):
        attempt = up.begin(b"", None)
        peer = up.pick(attempt, T0 + i)
        assert peer is not None
        up.free(attempt, peer, Outcome.FAILED, T0 + i)
        assert peer.fails == 0
        assert attempt.tries_left == 0  # nothing else to retry on


def test_single_server_still_honours_down_and_max_conns() -> None:
    up = upstream(server(1, max_conns=1))
    first = up.begin(b"", None)
    assert up.pick(first, T0) is not None
    assert up.pick(up.begin(b"", None), T0) is None
    down = upstream(server(1, down=True))
    assert down.pick(down.begin(b"", None), T0) is None


def test_max_conns_skips_a_full_peer() -> None:
    up = upstream(server(1, max_conns=1), server(2))
    held = up.begin(b"", None)
    assert up.pick(held, T0) is not None  # 1 is now full
    assert ports(up, 3) == [2, 2, 2]


def test_all_peers_full_means_no_live_upstream() -> None:
    up = upstream(server(1, max_conns=1), server(2, max_conns=1))
    for _ in range(2):
        assert up.pick(up.begin(b"", None), T0) is not None
    assert up.pick(up.begin(b"", None), T0) is None
