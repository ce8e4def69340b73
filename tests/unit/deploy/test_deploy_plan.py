"""The pure deploy decisions: slots, ports, server specs and the verify verdict."""

from __future__ import annotations

import pytest

from nonstop.config.model import AppSpec, HealthSpec
from nonstop.deploy.plan import (
    VerifyCounts,
    address,
    idle_slot,
    server_spec,
    slot_ports,
    verify_failure,
)

APP = AppSpec(
    name="web",
    command="run {port}",
    ports=(8080, 8000, 9080, 9000),
    health=HealthSpec(fall=2),
    verify_max_5xx_ratio=0.05,
)


def test_slot_0_owns_the_even_ports_and_slot_1_the_odd_ones() -> None:
    assert slot_ports(APP, 0) == (8080, 9080)
    assert slot_ports(APP, 1) == (8000, 9000)
    with pytest.raises(ValueError):
        slot_ports(APP, 2)


def test_a_first_deploy_goes_to_slot_0_and_later_ones_alternate() -> None:
    assert idle_slot(None) == 0
    assert idle_slot(0) == 1
    assert idle_slot(1) == 0


def test_server_addresses_bracket_ipv6_hosts() -> None:
    assert address("127.0.0.1", 80) == "127.0.0.1:80"
    assert address("::1", 80) == "[::1]:80"
    spec = server_spec(APP, 8000, backup=True)
    assert (spec.address, spec.host, spec.port, spec.backup) == (
        "127.0.0.1:8000",
        "127.0.0.1",
        8000,
        True,
    )


def test_a_crash_during_verify_fails_it() -> None:
    reason = verify_failure(APP, VerifyCounts(alive=False, health_failures=0))
    assert reason == "the new release exited during verify"


def test_health_failures_fail_verify_only_after_fall_in_a_row() -> None:
    assert verify_failure(APP, VerifyCounts(alive=True, health_failures=1)) is None
    assert "2 health check" in str(verify_failure(APP, VerifyCounts(True, 2)))


def test_a_5xx_ratio_over_the_threshold_fails_verify_once_enough_requests_were_seen() -> None:
    assert verify_failure(APP, VerifyCounts(True, 0, responses=10, errors=10)) is None
    assert verify_failure(APP, VerifyCounts(True, 0, responses=100, errors=5)) is None
    reason = verify_failure(APP, VerifyCounts(True, 0, responses=100, errors=6))
    assert reason is not None and "6 of 100" in reason


def test_without_response_counts_only_crashes_and_health_decide() -> None:
    assert verify_failure(APP, VerifyCounts(True, 0, responses=None, errors=99)) is None
