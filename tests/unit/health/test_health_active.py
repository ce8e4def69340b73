"""Health verdicts and rise/fall state: pure, no sockets."""

from __future__ import annotations

import pytest

from nonstop.config.model import HealthSpec
from nonstop.health.active import HealthState, Probe, Verdict, body_matches, judge

UP = HealthSpec(path="/infra/health", expect_status=200, expect_body="UP")
PASS = Verdict(True, 200, "UP")
FAIL = Verdict(False, 503, "DOWN", reason="status 503 (expected 200)")


@pytest.mark.parametrize("body", [b"UP", b"UP\n", b"  UP\r\n", b"\tUP "])
def test_body_equal_after_stripping_surrounding_whitespace_passes(body: bytes) -> None:
    assert judge(UP, Probe(200, body)).ok


@pytest.mark.parametrize("body", [b"UP2", b"up", b"U P", b'{"status":"UP"}', b"NOT UP", b""])
def test_a_body_that_only_contains_the_expected_text_fails(body: bytes) -> None:
    verdict = judge(UP, Probe(200, body))
    assert not verdict.ok
    assert "is not 'UP'" in verdict.reason


def test_mismatch_reason_names_the_body_seen() -> None:
    verdict = judge(UP, Probe(200, b"UP2"))
    assert verdict.reason == "body 'UP2' is not 'UP' (status 200)"
    assert verdict.body_excerpt == "UP2"


def test_wrong_status_fails_and_says_which() -> None:
    verdict = judge(UP, Probe(503, b"DOWN"))
    assert not verdict.ok
    assert verdict.status == 503
    assert verdict.reason == "status 503 (expected 200), body 'DOWN'"


def test_without_expect_body_any_body_with_the_status_passes() -> None:
    assert judge(HealthSpec(expect_status=204), Probe(204, b"whatever")).ok


def test_a_truncated_body_never_matches() -> None:
    assert not judge(UP, Probe(200, b"UP", truncated=True)).ok


def test_connection_errors_are_the_reason() -> None:
    verdict = judge(UP, Probe(error="connection refused by 127.0.0.1:1"))
    assert not verdict.ok and verdict.error == verdict.reason == "connection refused by 127.0.0.1:1"


def test_long_bodies_are_excerpted() -> None:
    verdict = judge(UP, Probe(500, b"x" * 5000))
    assert len(verdict.body_excerpt) == 123 and verdict.body_excerpt.endswith("...")


def test_body_matches_is_exact_not_substring() -> None:
    assert body_matches("UP", b"UP\n")
    assert not body_matches("UP", b"UPTIME")


def test_a_new_server_starts_unhealthy_and_its_first_pass_brings_it_up() -> None:
    state = HealthState(rise=3, fall=2)
    assert not state.healthy
    assert state.observe(FAIL) is None
    change = state.observe(PASS)
    assert change is not None and change.healthy and state.healthy


def test_fall_consecutive_failures_take_it_down() -> None:
    state = HealthState(rise=2, fall=3)
    state.observe(PASS)
    assert state.observe(FAIL) is None
    assert state.observe(FAIL) is None
    change = state.observe(FAIL)
    assert change is not None and not change.healthy
    assert change.detail == "status 503 (expected 200)"


def test_a_pass_between_failures_resets_the_fall_count() -> None:
    state = HealthState(rise=1, fall=2)
    state.observe(PASS)
    for verdict in (FAIL, PASS, FAIL, PASS, FAIL):
        assert state.observe(verdict) is None
    assert state.healthy


def test_after_falling_it_needs_rise_consecutive_passes() -> None:
    state = HealthState(rise=3, fall=1)
    state.observe(PASS)
    state.observe(FAIL)
    assert state.observe(PASS) is None
    assert state.observe(FAIL) is None  # breaks the run
    assert state.observe(PASS) is None
    assert state.observe(PASS) is None
    change = state.observe(PASS)
    assert change is not None and change.healthy


def test_last_verdict_is_kept_for_status() -> None:
    state = HealthState()
    state.observe(FAIL)
    assert state.last == FAIL
