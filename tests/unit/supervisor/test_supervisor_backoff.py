"""The restart backoff: exponential, capped, reset by a stable run."""

from __future__ import annotations

import pytest

from nonstop.supervisor.backoff import RestartPolicy

POLICY = RestartPolicy(base=0.5, factor=2.0, cap=30.0, reset_after=60.0)


def test_first_crash_restarts_after_the_base_delay() -> None:
    assert POLICY.restart_at([100.0], now=100.0) == 100.5


def test_each_crash_in_a_streak_doubles_the_delay() -> None:
    crashes: list[float] = []
    delays = []
    now = 0.0
    for _ in range(5):
        crashes.append(now)
        at = POLICY.restart_at(crashes, now)
        delays.append(at - now)
        now = at + 1.0  # the restarted process lives one second, then crashes again
    assert delays == [0.5, 1.0, 2.0, 4.0, 8.0]


def test_the_delay_is_capped() -> None:
    crashes = [float(i * 31) for i in range(20)]  # 31 s apart: inside the streak window
    assert POLICY.streak(crashes) == 20
    assert POLICY.restart_at(crashes, crashes[-1]) - crashes[-1] == 30.0


def test_a_run_longer_than_reset_after_starts_a_new_streak() -> None:
    crashes = [0.0, 1.0, 3.0, 3.0 + 61.0]
    assert POLICY.streak(crashes) == 1
    assert POLICY.restart_at(crashes, crashes[-1]) == crashes[-1] + 0.5


def test_restart_is_never_in_the_past() -> None:
    assert POLICY.restart_at([10.0], now=50.0) == 50.0
    assert POLICY.restart_at([], now=7.0) == 7.0


def test_prune_forgets_crashes_once_the_app_has_run_stably() -> None:
    assert POLICY.prune([1.0, 2.0], now=100.0) == []
    assert POLICY.prune([1.0, 2.0], now=30.0) == [1.0, 2.0]


def test_a_huge_streak_does_not_overflow() -> None:
    assert POLICY.delay(10_000) == 30.0


@pytest.mark.parametrize(
    ("base", "factor", "cap", "reset_after"),
    [(0.0, 2.0, 30.0, 60.0), (1.0, 0.5, 30.0, 60.0), (5.0, 2.0, 1.0, 60.0), (1.0, 2, 30.0, 30.0)],
)
def test_nonsense_policies_are_rejected(
    base: float, factor: float, cap: float, reset_after: float
) -> None:
    with pytest.raises(ValueError):
        RestartPolicy(base, factor, cap, reset_after)
