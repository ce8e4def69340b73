"""hash KEY and hash KEY consistent."""

from __future__ import annotations

import zlib

from balancers_support import T0, ports, server, upstream

from nonstop.config.model import ServerSpec
from nonstop.proxy.balancers import Peer, PeerSet
from nonstop.proxy.balancers.hash import ketama_points, split_server
from nonstop.proxy.upstream import Outcome, Upstream


def three() -> Upstream:
    return upstream(server(1), server(2), server(3), method="hash")


def ketama(*down: int) -> Upstream:
    return upstream(
        server(9001, down=9001 in down),
        server(9002, weight=2, down=9002 in down),
        server(9003, down=9003 in down),
        method="hash",
        hash_consistent=True,
    )


def peer_set(*servers: ServerSpec) -> PeerSet:
    return PeerSet([Peer(s) for s in servers], backup=False, single=False)


def memcached(key: str, looks: int, total: int) -> int:
    acc = 0
    for n in range(looks):
        acc += (zlib.crc32(((str(n) if n else "") + key).encode()) >> 16) & 0x7FFF
    return acc % total


def test_vectors_match_nginx() -> None:
    up = three()
    assert ports(up, 1, key="user1") == [1]
    assert ports(up, 1, key="user2") == [2]
    assert ports(up, 1, key="/a/b") == [2]


def test_same_key_always_maps_to_the_same_peer() -> None:
    assert set(ports(three(), 5, key="user2")) == {2}


def test_empty_or_missing_key_falls_back_to_round_robin() -> None:
    assert ports(three(), 3, key="") == [1, 2, 3]
    assert ports(three(), 3, key=None) == [1, 2, 3]


def test_retry_rehashes_with_the_attempt_number() -> None:
    up = three()
    attempt = up.begin(b"", "user1")
    first = up.pick(attempt, T0)
    assert first is not None and first.port == 1
    up.free(attempt, first, Outcome.FAILED, T0)
    second = up.pick(attempt, T0)
    assert second is not None
    looks = 2
    while memcached("user1", looks, 3) == 0:
        looks += 1
    assert second.port - 1 == memcached("user1", looks, 3)


def test_down_peer_stays_in_the_mapping_of_other_keys() -> None:
    keys = [f"k{n}" for n in range(40)]
    before = {k: ports(three(), 1, key=k)[0] for k in keys}
    down = upstream(server(1), server(2, down=True), server(3), method="hash")
    for key, was in before.items():
        if was != 2:
            assert ports(down, 1, key=key)[0] == was


def test_bytes_keys_are_hashed_as_given() -> None:
    assert ports(three(), 1, key="user1") == ports(three(), 1, key=b"user1")


def test_ketama_first_point_of_9001_matches_nginx() -> None:
    host, port = split_server("127.0.0.1:9001")
    assert zlib.crc32(host + b"\0" + port + bytes(4)) == 0x70533E04
    hashes, _ = ketama_points(peer_set(server(9001)))
    assert 0x70533E04 in hashes
    assert len(hashes) == 160


def test_ketama_vectors_match_nginx() -> None:
    up = ketama()
    assert ports(up, 1, key="user1") == [9002]
    assert ports(up, 1, key="user2") == [9001]
    assert ports(up, 1, key="/a/b") == [9002]


def test_ketama_builds_160_points_per_weight_sorted() -> None:
    hashes, servers = ketama_points(peer_set(server(9001), server(9002, weight=2), server(9003)))
    assert len(hashes) == 160 * 4
    assert hashes == sorted(set(hashes))
    assert servers.count("127.0.0.1:9002") == 320


def test_ketama_down_server_moves_only_its_keys() -> None:
    keys = [f"user{n}" for n in range(60)]
    before = {k: ports(ketama(), 1, key=k)[0] for k in keys}
    after_up = ketama(9001)
    moved = 0
    for key, was in before.items():
        now = ports(after_up, 1, key=key)[0]
        if was == 9001:
            assert now != 9001
            moved += 1
        else:
            assert now == was
    assert moved > 0


def test_ketama_empty_key_falls_back_to_round_robin() -> None:
    assert ports(ketama(), 4, key="") == [9002, 9001, 9003, 9002]


def test_server_strings_split_like_nginx() -> None:
    assert split_server("127.0.0.1:9001") == (b"127.0.0.1", b"9001")
    assert split_server("[::1]:80") == (b"[::1]", b"80")
    assert split_server("unix:/run/app.sock") == (b"/run/app.sock", b"")
    assert split_server("backend") == (b"backend", b"")
    assert split_server("host:8a") == (b"host:8a", b"")
