"""Which releases pruning removes (the pure choice; the removal is tested on real hosts)."""

from __future__ import annotations

from nonstop.fleet.staging import releases_to_prune


def sha(n: int) -> str:
    return f"{n:064x}"


def test_the_newest_are_kept_and_the_oldest_go_first() -> None:
    releases = [(sha(i), float(i)) for i in range(6)]
    assert releases_to_prune(releases, keep=set(), keep_last=2) == [sha(0), sha(1), sha(2), sha(3)]


def test_the_named_releases_are_kept_however_old() -> None:
    releases = [(sha(i), float(i)) for i in range(6)]
    kept = {sha(0), sha(2)}  # the live and the previous release
    assert releases_to_prune(releases, keep=kept, keep_last=2) == [sha(1), sha(3)]


def test_names_that_are_not_releases_are_never_removed() -> None:
    releases = [("notes", 0.0), (".incoming-" + sha(1) + "-ab", 0.0), (sha(2), 1.0), (sha(3), 2.0)]
    assert releases_to_prune(releases, keep=set(), keep_last=1) == [sha(2)]


def test_equal_mtimes_are_ordered_by_name_whatever_the_listing_order() -> None:
    one = [(sha(5), 1.0), (sha(4), 1.0), (sha(6), 1.0)]
    other = list(reversed(one))
    assert (
        releases_to_prune(one, set(), 1) == releases_to_prune(other, set(), 1) == [sha(4), sha(5)]
    )


def test_fewer_releases_than_kept_removes_nothing() -> None:
    assert releases_to_prune([(sha(1), 1.0)], keep=set(), keep_last=5) == []
