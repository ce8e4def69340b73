"""random and random two least_conn with an injected random source."""

from __future__ import annotations

import random

from balancers_support import ports, sequence, server, upstream

from nonstop.proxy.upstream import Upstream


def weighted(rng: object, two: bool = False) -> Upstream:
    return upstream(
        server(1),
        server(2, weight=2),
        server(3),
        method="random",
        rng=rng,
        random_two=two,
        random_least_conn=two,
    )


def test_draw_modulo_total_weight_lands_in_the_weight_ranges() -> None:
    up = weighted(sequence([0, 1, 2, 3, 4, 7]))
    assert ports(up, 6) == [1, 2, 2, 3, 1, 3]


def test_seeded_rng_gives_a_reproducible_weighted_spread() -> None:
    a = ports(weighted(random.Random(42)), 400)
    b = ports(weighted(random.Random(42)), 400)
    assert a == b
    assert 150 < a.count(2) < 250  # weight 2 of 4
    assert a.count(1) > 60 and a.count(3) > 60


def test_unusable_draws_are_redrawn() -> None:
    up = upstream(server(1, down=True), server(2), method="random", rng=sequence([0, 0, 1]))
    assert ports(up, 1) == [2]


def test_more_than_20_bad_draws_fall_back_to_round_robin() -> None:
    up = upstream(server(1, down=True), server(2), method="random", rng=sequence([0] * 21))
    assert ports(up, 1) == [2]


def test_random_two_ties_go_to_the_second_draw() -> None:
    up = weighted(sequence([0, 3]), two=True)  # draws 1 then 3, both idle
    assert ports(up, 1) == [3]


def test_random_two_keeps_the_first_draw_when_the_second_is_busier() -> None:
    up = weighted(sequence([3, 0]), two=True)
    busy = up.peer("127.0.0.1:1")
    assert busy is not None
    busy.conns = 1
    assert ports(up, 1) == [3]
    up2 = weighted(sequence([0, 3]), two=True)
    busy2 = up2.peer("127.0.0.1:3")
    assert busy2 is not None
    busy2.conns = 1
    assert ports(up2, 1) == [1]


def test_random_two_compares_connections_per_weight() -> None:
    up = weighted(sequence([1, 0]), two=True)  # draws 2 (weight 2) then 1
    heavy = up.peer("127.0.0.1:2")
    light = up.peer("127.0.0.1:1")
    assert heavy is not None and light is not None
    heavy.conns, light.conns = 2, 1  # 2/2 == 1/1: a tie, so the second draw (1) wins
    assert ports(up, 1) == [1]


def test_random_two_redraws_when_the_same_peer_comes_up_twice() -> None:
    up = weighted(sequence([0, 0, 3]), two=True)
    assert ports(up, 1) == [3]


def test_single_server_goes_to_round_robin() -> None:
    up = upstream(server(1), method="random", rng=sequence([]))
    assert ports(up, 2) == [1, 1]
