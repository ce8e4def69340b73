"""ip_hash: first three IPv4 octets or the whole IPv6 address."""

from __future__ import annotations

from balancers_support import T0, ip, ports, server, upstream

from nonstop.proxy.balancers.ip_hash import ip_hash_key
from nonstop.proxy.upstream import Outcome, Upstream

CLIENTS = [f"10.{a}.{b}.7" for a in range(0, 60, 7) for b in range(0, 200, 31)][:59]


def three() -> Upstream:
    return upstream(server(1), server(2), server(3), method="ip_hash")


def index(up: Upstream, client: str) -> int:
    return ports(up, 1, ip(client))[0] - 1


def reference(addr: bytes, weights: list[int], looks: int) -> int:
    """The peer index after ``looks`` hash rounds, computed the slow, obvious way."""
    h = 89
    for _ in range(looks):
        for b in ip_hash_key(addr):
            h = (h * 113 + b) % 6271
    w = h % sum(weights)
    i = 0
    while w >= weights[i]:
        w -= weights[i]
        i += 1
    return i


def test_vectors_match_nginx() -> None:
    up = three()
    assert index(up, "192.168.1.10") == 1
    assert index(up, "10.1.2.3") == 1
    assert index(up, "2001:db8::1") == 2


def test_clients_in_the_same_slash_24_share_a_peer() -> None:
    up = three()
    assert {index(up, f"192.168.1.{n}") for n in range(256)} == {1}
    assert {index(up, f"172.16.9.{n}") for n in range(0, 256, 5)} == {index(up, "172.16.9.1")}


def test_marking_a_peer_down_moves_only_its_own_clients() -> None:
    before = {c: index(three(), c) for c in CLIENTS}
    assert 1 in before.values()
    down = upstream(server(1), server(2, down=True), server(3), method="ip_hash")
    for client, was in before.items():
        now = index(down, client)
        if was != 1:
            assert now == was, client
        else:
            looks = 2
            while reference(ip(client), [1, 1, 1], looks) == 1:
                looks += 1
            assert now == reference(ip(client), [1, 1, 1], looks), client


def test_retry_continues_hashing_from_the_previous_pick() -> None:
    up = three()
    addr = ip("192.168.1.10")
    attempt = up.begin(addr, None)
    first = up.pick(attempt, T0)
    assert first is not None
    up.free(attempt, first, Outcome.FAILED, T0)
    second = up.pick(attempt, T0)
    assert second is not None and second is not first
    looks = 2
    while reference(addr, [1, 1, 1], looks) == first.port - 1:
        looks += 1
    assert second.port - 1 == reference(addr, [1, 1, 1], looks)
    # the retry resumed at look 2: no look was wasted re-deriving the first pick
    assert attempt.hash_tries == looks - 2


def test_weights_stretch_the_hash_space() -> None:
    up = upstream(server(1, weight=3), server(2), method="ip_hash")
    for client in CLIENTS[:20]:
        assert index(up, client) == reference(ip(client), [3, 1], 1)


def test_unix_socket_clients_hash_as_three_zero_bytes() -> None:
    assert ip_hash_key(b"") == b"\0\0\0"
    up = three()
    assert ports(up, 3, b"") == [reference(b"", [1, 1, 1], 1) + 1] * 3


def test_more_than_20_looks_fall_back_to_round_robin() -> None:
    up = three()
    attempt = up.begin(ip("192.168.1.10"), None)
    attempt.hash_tries = 21
    peer = up.pick(attempt, T0)
    assert peer is not None and peer.port == 1  # round robin's first choice, not the hash's


def test_single_server_goes_to_round_robin() -> None:
    up = upstream(server(1), method="ip_hash")
    assert ports(up, 2, ip("192.168.1.10")) == [1, 1]
