"""The fleet lock's lease: who gets it, who keeps it, and when it expires — pure decisions."""

from __future__ import annotations

import pytest

from nonstop.fleet.lease import Lease, acquire, release, renew

NOW = 1_800_000_000.0


def held(by: str = "ci@a (pid 1)", token: str = "t1", heartbeat: float = NOW) -> Lease:
    return Lease(holder=by, token=token, acquired=heartbeat - 5, heartbeat=heartbeat, ttl=30.0)


def test_a_free_lease_is_granted_and_must_be_written() -> None:
    decision = acquire(None, "ci@b (pid 2)", "t2", NOW, 30.0)
    assert decision.granted and decision.changed
    assert decision.lease == Lease("ci@b (pid 2)", "t2", NOW, NOW, 30.0)
    assert decision.replaced is None


def test_a_live_lease_refuses_another_run_and_names_its_holder() -> None:
    current = held(heartbeat=NOW - 29.0)
    decision = acquire(current, "ci@b (pid 2)", "t2", NOW, 30.0)
    assert not decision.granted and not decision.changed
    assert decision.lease is current
    assert "ci@a (pid 1)" in decision.reason and "expires in 1s" in decision.reason


def test_a_lease_whose_holder_stopped_renewing_is_taken_over_and_the_old_one_named() -> None:
    current = held(heartbeat=NOW - 30.0)  # exactly ttl after the last heartbeat: expired
    decision = acquire(current, "ci@b (pid 2)", "t2", NOW, 30.0)
    assert decision.granted and decision.replaced is current
    assert decision.lease is not None and decision.lease.token == "t2"


def test_acquiring_again_with_the_same_token_is_a_renewal() -> None:
    decision = acquire(held(heartbeat=NOW - 10), "ci@a (pid 1)", "t1", NOW, 30.0)
    assert decision.granted and decision.lease is not None
    assert decision.lease.heartbeat == NOW and decision.lease.acquired == NOW - 15


def test_renewal_moves_the_heartbeat_and_keeps_the_acquisition_time() -> None:
    decision = renew(held(heartbeat=NOW - 20), "t1", NOW)
    assert decision.granted and decision.lease is not None
    assert decision.lease.heartbeat == NOW and decision.lease.expires == NOW + 30
    assert decision.lease.acquired == NOW - 25


def test_a_run_that_lost_its_lease_cannot_renew_it() -> None:
    decision = renew(held(by="ci@b (pid 2)", token="t2"), "t1", NOW)
    assert not decision.granted and "taken over by ci@b (pid 2)" in decision.reason
    assert not renew(None, "t1", NOW).granted


def test_release_frees_only_the_callers_own_lease() -> None:
    assert release(held(), "t1").granted and release(held(), "t1").lease is None
    refused = release(held(), "other")
    assert not refused.granted and not refused.changed
    assert release(None, "t1").granted  # nothing held: nothing to do


def test_a_lease_needs_a_positive_ttl() -> None:
    with pytest.raises(ValueError):
        acquire(None, "x", "t", NOW, 0)
