"""The checker loop with scripted probes: it reports flips through on_change only."""

from __future__ import annotations

import asyncio

from nonstop.config.model import HealthSpec
from nonstop.health.active import Verdict
from nonstop.health.checker import HealthChecker

SPEC = HealthSpec(interval=0.001, rise=1, fall=2)
PASS = Verdict(True, 200, "UP")
DOWN = Verdict(False, 503, "DOWN", reason="status 503 (expected 200)")


async def until(predicate: object, timeout: float = 2.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not predicate():  # type: ignore[operator]
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError("condition not reached in time")
        await asyncio.sleep(0.001)


def test_transitions_are_reported_once_each_with_detail() -> None:
    async def go() -> None:
        script = {"a": [DOWN, PASS, PASS, DOWN, DOWN, DOWN, PASS]}
        changes: list[tuple[str, bool, str]] = []

        async def probe(host: str, port: int, spec: HealthSpec) -> Verdict:
            queue = script[host]
            return queue.pop(0) if len(queue) > 1 else queue[0]

        checker = HealthChecker(SPEC, lambda *c: changes.append(c), probe)
        checker.watch("a:1", "a", 1)
        await until(lambda: len(script["a"]) == 1 and len(changes) == 3)
        await checker.close()
        assert changes == [
            ("a:1", True, "passed: status 200"),
            ("a:1", False, "status 503 (expected 200)"),
            ("a:1", True, "passed: status 200"),
        ]

    asyncio.run(go())


def test_an_unwatched_server_is_no_longer_probed_or_reported() -> None:
    async def go() -> None:
        calls: list[str] = []
        changes: list[tuple[str, bool, str]] = []

        async def probe(host: str, port: int, spec: HealthSpec) -> Verdict:
            calls.append(host)
            return DOWN

        checker = HealthChecker(SPEC, lambda *c: changes.append(c), probe)
        checker.watch("a:1", "a", 1)
        checker.watch("b:1", "b", 1)
        await until(lambda: calls.count("a") >= 2)
        await checker.unwatch("a:1")
        seen = calls.count("a")
        await until(lambda: calls.count("b") >= seen + 5)
        assert calls.count("a") == seen
        assert checker.addresses() == ["b:1"]
        assert not checker.healthy("b:1") and checker.last("b:1") == DOWN
        assert changes == []  # never passed: never up, so never a flip
        await checker.close()

    asyncio.run(go())


def test_a_server_carried_over_healthy_is_reported_down_on_its_first_failure() -> None:
    async def go() -> None:
        changes: list[tuple[str, bool, str]] = []

        async def probe(host: str, port: int, spec: HealthSpec) -> Verdict:
            return DOWN

        checker = HealthChecker(
            HealthSpec(interval=0.001, fall=1), lambda *c: changes.append(c), probe
        )
        checker.watch("a:1", "a", 1, healthy=True)
        await until(lambda: len(changes) == 1)
        await checker.close()
        assert changes == [("a:1", False, "status 503 (expected 200)")]

    asyncio.run(go())
