"""Active health checks and the deploy gate against real pyapp processes."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import uvloop
from tests.support.apps import pyapp_command
from tests.support.backends import free_port

from nonstop.config.model import AppSpec, HealthSpec
from nonstop.health import HealthChecker, probe, wait_healthy
from nonstop.supervisor import Instance, Supervisor

T = TypeVar("T")
HEALTH = HealthSpec(path="/infra/health", expect_body="UP", interval=0.05, start_timeout=10)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


async def start(tmp_path: Path, extra: str = "") -> tuple[Supervisor, Instance]:
    spec = AppSpec(name="web", command=pyapp_command(extra), ports=(0, 0), health=HEALTH)
    sup = Supervisor(tmp_path)
    return sup, await sup.start(spec, 0, free_port(), "v1")


async def gate(inst: Instance, spec: HealthSpec = HEALTH) -> Any:
    return await wait_healthy("127.0.0.1", inst.port, spec, is_alive=inst.is_alive, tail=inst.tail)


async def until(predicate: Any, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


def test_a_healthy_app_passes_the_gate_quickly(tmp_path: Path) -> None:
    async def go() -> None:
        sup, inst = await start(tmp_path)
        result = await gate(inst)
        assert result.ok and result.last_status == 200 and result.body_excerpt == "UP"
        assert result.elapsed < 5
        await sup.close()

    run(go())


def test_an_unhealthy_app_is_refused_with_status_and_body(tmp_path: Path) -> None:
    async def go() -> None:
        sup, inst = await start(tmp_path, "--unhealthy")
        spec = HealthSpec(path="/infra/health", expect_body="UP", interval=0.05, start_timeout=1)
        result = await gate(inst, spec)
        assert not result.ok
        assert result.reason == "not healthy after 1s: status 503 (expected 200), body 'DOWN'"
        assert result.last_status == 503 and result.body_excerpt == "DOWN"
        assert "pyapp release=v1 listening" in result.log_tail
        assert inst.is_alive()  # the gate reports; stopping is the deployer's call
        await sup.close()

    run(go())


def test_a_body_that_only_contains_up_is_refused(tmp_path: Path) -> None:
    async def go() -> None:
        sup, inst = await start(tmp_path, "--health-body UP2")
        spec = HealthSpec(path="/infra/health", expect_body="UP", interval=0.05, start_timeout=1)
        result = await gate(inst, spec)
        assert not result.ok
        assert result.reason == "not healthy after 1s: body 'UP2' is not 'UP' (status 200)"
        await sup.close()

    run(go())


def test_nothing_listening_is_reported_as_connection_refused() -> None:
    async def go() -> None:
        port = free_port()
        spec = HealthSpec(path="/infra/health", interval=0.05, start_timeout=0.3)
        result = await wait_healthy("127.0.0.1", port, spec)
        assert not result.ok
        assert result.error == f"connection refused by 127.0.0.1:{port}"
        assert result.reason.endswith(f"connection refused by 127.0.0.1:{port}")
        assert result.probes >= 2

    run(go())


def test_the_checker_brings_a_server_up_then_down_when_it_dies(tmp_path: Path) -> None:
    async def go() -> None:
        sup, inst = await start(tmp_path, "--die-after 0.3")
        changes: list[tuple[str, bool, str]] = []
        checker = HealthChecker(HEALTH, lambda *c: changes.append(c))
        checker.watch(inst.address, "127.0.0.1", inst.port)
        await until(lambda: len(changes) == 2)
        assert changes[0] == (inst.address, True, "passed: status 200")
        assert changes[1][:2] == (inst.address, False)
        assert "connection refused" in changes[1][2]
        assert not checker.healthy(inst.address)
        await checker.close()
        assert await inst.wait() == 4  # pyapp's --die-after exit code
        await sup.close()

    run(go())


def test_one_probe_judges_a_real_answer(tmp_path: Path) -> None:
    async def go() -> None:
        sup, inst = await start(tmp_path)
        assert (await gate(inst)).ok
        verdict = await probe("127.0.0.1", inst.port, HealthSpec(path="/infra/port"))
        assert verdict.ok and verdict.body_excerpt == str(inst.port)
        missing = await probe(
            "127.0.0.1", inst.port, HealthSpec(path="/infra/port", expect_body="1")
        )
        assert not missing.ok
        await sup.close()

    run(go())
