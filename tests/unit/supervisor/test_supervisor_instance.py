"""Instance start/stop/crash logic on the fake launcher: no processes, no sockets."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path

import pytest

from nonstop.clock import FakeClock
from nonstop.config.model import AppSpec
from nonstop.supervisor import (
    FakeLauncher,
    FakeProcess,
    Instance,
    InstanceState,
    PortBusy,
    StartFailed,
)

APP = AppSpec(
    name="web", command="app --port={port} {release}", ports=(8080, 8000), stop_timeout=0.05
)


def make(tmp_path: Path, launcher: FakeLauncher, **kw: object) -> Instance:
    return Instance(APP, 0, 8080, "v1", tmp_path / "web-8080.log", launcher, FakeClock(), **kw)  # type: ignore[arg-type]


def proc(launcher: FakeLauncher) -> FakeProcess:
    return launcher.launched[-1]


def test_start_launches_the_substituted_command_and_logs_a_header(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher()
        inst = make(tmp_path, launcher)
        await inst.start()
        assert proc(launcher).spec.argv == ("app", "--port=8080", "v1")
        assert inst.state is InstanceState.RUNNING and inst.is_alive()
        assert "start app=web release=v1 port=8080" in inst.tail()

    asyncio.run(go())


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher(busy={8080})
        inst = make(tmp_path, launcher)
        with pytest.raises(PortBusy, match="port 8080"):
            await inst.start()
        assert launcher.launched == []
        assert inst.state is InstanceState.NEW

    asyncio.run(go())


def test_stop_sends_the_stop_signal_to_the_group(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher()
        inst = make(tmp_path, launcher)
        await inst.start()
        assert await inst.stop() == -signal.SIGTERM
        assert proc(launcher).signals == [signal.SIGTERM]
        assert proc(launcher).reaped
        assert inst.state is InstanceState.STOPPED

    asyncio.run(go())


def test_stop_escalates_to_sigkill_after_stop_timeout(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher(ignore=frozenset({signal.SIGTERM}))
        inst = make(tmp_path, launcher)
        await inst.start()
        assert await inst.stop() == -signal.SIGKILL
        assert proc(launcher).signals == [signal.SIGTERM, signal.SIGKILL]

    asyncio.run(go())


def test_a_crash_is_reported_and_the_dead_process_is_never_signalled(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher()
        seen: list[tuple[int, bool]] = []
        inst = make(
            tmp_path, launcher, on_exit=lambda i, code, crashed: seen.append((code, crashed))
        )
        await inst.start()
        proc(launcher).exit(3)
        assert await inst.wait() == 3
        assert seen == [(3, True)]
        assert inst.state is InstanceState.CRASHED and not inst.is_alive()
        assert await inst.stop() == 3
        assert proc(launcher).signals == [] and proc(launcher).refused == []
        assert "crash app=web release=v1 port=8080" in inst.tail()
        assert "exited with code 3" in inst.tail()

    asyncio.run(go())


def test_stopping_twice_signals_once(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher()
        inst = make(tmp_path, launcher)
        await inst.start()
        await asyncio.gather(inst.stop(), inst.stop())
        await inst.stop()
        assert proc(launcher).signals == [signal.SIGTERM]
        assert proc(launcher).refused == []

    asyncio.run(go())


def test_an_expected_stop_is_not_a_crash(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher()
        seen: list[bool] = []
        inst = make(tmp_path, launcher, on_exit=lambda i, code, crashed: seen.append(crashed))
        await inst.start()
        await inst.stop()
        assert seen == [False]

    asyncio.run(go())


def test_a_launch_failure_is_written_to_the_log(tmp_path: Path) -> None:
    async def go() -> None:
        launcher = FakeLauncher(fail=StartFailed("cannot start web ('app'): No such file"))
        inst = make(tmp_path, launcher)
        with pytest.raises(StartFailed):
            await inst.start()
        assert "start failed: cannot start web" in inst.tail()
        assert inst.state is InstanceState.NEW

    asyncio.run(go())
