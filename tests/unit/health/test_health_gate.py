"""The deploy gate with scripted probes: passes, dies, times out, rejects a stranger."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from nonstop.config.model import HealthSpec
from nonstop.health.active import Verdict
from nonstop.health.checker import ProbeFn
from nonstop.health.gate import wait_healthy

SPEC = HealthSpec(path="/h", interval=0.001, start_timeout=0.2, expect_body="UP")
PASS = Verdict(True, 200, "UP")
REFUSED = Verdict(False, error="connection refused", reason="connection refused")
DOWN = Verdict(False, 503, "DOWN", reason="status 503 (expected 200), body 'DOWN'")


def script(verdicts: Iterable[Verdict], then: Verdict = REFUSED) -> tuple[ProbeFn, list[int]]:
    queue = list(verdicts)
    calls: list[int] = []

    async def probe(host: str, port: int, spec: HealthSpec) -> Verdict:
        calls.append(port)
        return queue.pop(0) if queue else then

    return probe, calls


def test_passes_on_the_first_healthy_answer() -> None:
    probe, calls = script([REFUSED, REFUSED, PASS])
    result = asyncio.run(wait_healthy("127.0.0.1", 9, SPEC, probe_fn=probe))
    assert result.ok and result.probes == 3 and len(calls) == 3
    assert result.last_status == 200


def test_rise_needs_that_many_passes_in_a_row() -> None:
    probe, _ = script([PASS, DOWN, PASS, PASS], then=PASS)
    spec = HealthSpec(interval=0.001, start_timeout=1.0, rise=2)
    result = asyncio.run(wait_healthy("127.0.0.1", 9, spec, probe_fn=probe))
    assert result.ok and result.probes == 4


def test_times_out_with_the_last_status_and_body() -> None:
    probe, _ = script([], then=DOWN)
    result = asyncio.run(
        wait_healthy("127.0.0.1", 9, SPEC, probe_fn=probe, tail=lambda: "booting\nstill booting")
    )
    assert not result.ok
    assert result.reason == "not healthy after 0.2s: status 503 (expected 200), body 'DOWN'"
    assert result.last_status == 503 and result.body_excerpt == "DOWN"
    assert "still booting" in result.message()


def test_times_out_with_the_connection_error() -> None:
    probe, _ = script([], then=REFUSED)
    result = asyncio.run(wait_healthy("127.0.0.1", 9, SPEC, probe_fn=probe))
    assert not result.ok and result.error == "connection refused"
    assert result.last_status is None


def test_fails_fast_when_the_process_dies() -> None:
    probe, calls = script([], then=REFUSED)
    alive = iter([True, True, False])
    spec = HealthSpec(interval=0.001, start_timeout=60.0)
    result = asyncio.run(
        wait_healthy(
            "127.0.0.1",
            9,
            spec,
            is_alive=lambda: next(alive),
            tail=lambda: "Exception: boom",
            probe_fn=probe,
        )
    )
    assert not result.ok
    assert result.reason.startswith("the process exited before passing its health check")
    assert result.log_tail == "Exception: boom"
    assert len(calls) == 2


def test_a_pass_answered_after_the_process_died_is_not_trusted() -> None:
    probe, _ = script([PASS])
    alive = iter([True, False])
    result = asyncio.run(
        wait_healthy("127.0.0.1", 9, SPEC, is_alive=lambda: next(alive), probe_fn=probe)
    )
    assert not result.ok
    assert "the new process had exited" in result.reason


def test_an_explicit_deadline_in_the_past_allows_exactly_one_probe() -> None:
    probe, calls = script([], then=DOWN)
    result = asyncio.run(wait_healthy("127.0.0.1", 9, SPEC, deadline=0.0, probe_fn=probe))
    assert not result.ok and len(calls) == 1


def test_a_wait_is_reported_from_1s_on_once_a_second_and_when_the_answer_changes() -> None:
    from nonstop.clock import FakeClock
    from nonstop.health.gate import GateWait

    # 2.5 s refused, then 503 for 0.5 s, then healthy: a probe every 0.25 s.
    probe, _ = script([REFUSED] * 10 + [DOWN] * 2, then=PASS)
    spec = HealthSpec(interval=0.25, start_timeout=60.0)
    heard: list[GateWait] = []
    result = asyncio.run(
        wait_healthy("127.0.0.1", 9, spec, on_wait=heard.append, probe_fn=probe, clock=FakeClock())
    )
    assert result.ok
    assert [(int(w.elapsed), w.detail) for w in heard] == [
        (1, "connection refused"),
        (2, "connection refused"),
        (2, DOWN.detail),
    ]
    assert all(w.timeout == 60.0 for w in heard)


def test_a_gate_that_passes_within_a_second_reports_no_wait() -> None:
    probe, _ = script([REFUSED, DOWN, PASS])
    heard: list[object] = []
    assert asyncio.run(wait_healthy("127.0.0.1", 9, SPEC, on_wait=heard.append, probe_fn=probe)).ok
    assert heard == []
