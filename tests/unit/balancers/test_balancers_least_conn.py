"""least_conn: fewest connections per weight, SWRR among ties."""

from __future__ import annotations

from balancers_support import T0, ports, server, upstream

from nonstop.proxy.balancers import Attempt, Peer
from nonstop.proxy.upstream import Upstream


def hold(up: Upstream) -> tuple[Attempt, Peer]:
    attempt = up.begin(b"", None)
    peer = up.pick(attempt, T0)
    assert peer is not None
    return attempt, peer


def test_sequential_requests_with_weights_2_1_give_a_b_a_a_b_a() -> None:
    up = upstream(server(1, weight=2), server(2), method="least_conn")
    assert ports(up, 6) == [1, 2, 1, 1, 2, 1]


def test_busy_peer_is_avoided_while_its_requests_are_in_flight() -> None:
    up = upstream(server(1), server(2), server(3), method="least_conn")
    held = [hold(up)[1].port for _ in range(3)]
    assert held == [1, 2, 3]
    # now every peer has one; the next three spread again rather than piling up
    assert sorted(hold(up)[1].port for _ in range(3)) == [1, 2, 3]


def test_connections_are_compared_per_unit_of_weight() -> None:
    up = upstream(server(1, weight=2), server(2), method="least_conn")
    assert hold(up)[1].port == 1  # tie at 0: SWRR prefers the heavier peer
    assert hold(up)[1].port == 2  # 1/2 > 0/1
    assert hold(up)[1].port == 1  # 1/2 < 1/1
    # 2/2 == 1/1: a tie again; SWRR state left by the first tie (a -1, b 1) now favours b
    assert hold(up)[1].port == 2
    assert hold(up)[1].port == 1  # 2/2 < 2/1


def test_tie_break_runs_swrr_over_tied_peers_only() -> None:
    up = upstream(server(1), server(2), server(3), method="least_conn")
    busy = up.peer("127.0.0.1:2")
    assert busy is not None
    busy.conns = 5
    assert ports(up, 4) == [1, 3, 1, 3]
    assert busy.current_weight == 0  # never part of a tie, never touched


def test_single_server_goes_to_round_robin() -> None:
    up = upstream(server(1), method="least_conn")
    assert ports(up, 3) == [1, 1, 1]
