"""The batch sequence: Ansible ``serial`` semantics over the host list."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from nonstop.fleet.batches import Percent, batch_sizes, plan_batches


@pytest.mark.parametrize(
    ("batches", "hosts", "sizes"),
    [
        ([1, Percent(50)], 20, [1, 10, 9]),
        ([1, Percent(50)], 3, [1, 1, 1]),
        ([1, Percent(50)], 2, [1, 1]),
        ([1, Percent(50)], 1, [1]),
        ([1], 4, [1, 1, 1, 1]),
        ([Percent(100)], 5, [5]),
        ([Percent(30)], 10, [3, 3, 3, 1]),
        ([Percent(10)], 5, [1, 1, 1, 1, 1]),
        ([2, 5], 20, [2, 5, 5, 5, 3]),
        ([10], 3, [3]),
        ([1, 2, 3], 2, [1, 1]),
    ],
)
def test_batch_sizes_follow_serial_semantics(
    batches: list[int | Percent], hosts: int, sizes: list[int]
) -> None:
    assert batch_sizes(batches, hosts) == sizes


def test_a_percentage_is_of_the_whole_fleet_not_of_the_hosts_left() -> None:
    # 50% of 20 is 10 each time, though only 19 hosts are left after the canary
    assert batch_sizes([1, Percent(50), Percent(50)], 20) == [1, 10, 9]


def test_hosts_keep_their_order_across_batches() -> None:
    hosts = [f"app{i}" for i in range(1, 6)]
    assert plan_batches([1, Percent(50)], hosts) == [
        ("app1",),
        ("app2", "app3"),
        ("app4", "app5"),
    ]


def test_no_batches_is_an_error() -> None:
    with pytest.raises(ValueError):
        batch_sizes([], 3)


@given(
    st.lists(st.one_of(st.integers(1, 50), st.builds(Percent, st.integers(1, 100))), min_size=1),
    st.integers(0, 300),
)
def test_every_host_is_in_exactly_one_non_empty_batch(
    batches: list[int | Percent], total: int
) -> None:
    sizes = batch_sizes(batches, total)
    assert sum(sizes) == total
    assert all(size >= 1 for size in sizes)
    assert plan_batches(batches, list(range(total))) == [
        tuple(range(sum(sizes[:i]), sum(sizes[: i + 1]))) for i in range(len(sizes))
    ]
