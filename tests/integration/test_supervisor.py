"""The supervisor on real processes: pyapp (stdlib) for most tests, SlowApp.java once.

Everything runs under uvloop, as in ``nonstop run``.
"""

from __future__ import annotations

import asyncio
import http.client
import os
import signal
import socket
import time
from collections.abc import Coroutine
from pathlib import Path
from typing import Any, TypeVar

import pytest
import uvloop
from tests.support.apps import build_java_app, javac_missing, pyapp_command
from tests.support.backends import free_port

from nonstop.config.model import AppSpec, HealthSpec
from nonstop.health import wait_healthy
from nonstop.supervisor import (
    Instance,
    InstanceState,
    PortBusy,
    RestartPolicy,
    StartFailed,
    Supervisor,
    SupervisorEvent,
    process_start_ticks,
)

T = TypeVar("T")
HEALTH = HealthSpec(path="/infra/health", expect_body="UP", interval=0.05, start_timeout=15)


def run(coro: Coroutine[Any, Any, T]) -> T:
    return uvloop.run(coro)


def app(extra: str = "", **kw: Any) -> AppSpec:
    kw.setdefault("stop_timeout", 5.0)
    return AppSpec(name="web", command=pyapp_command(extra), ports=(0, 0), health=HEALTH, **kw)


def get(port: int, path: str = "/") -> tuple[int, bytes]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read()
    finally:
        conn.close()


def refused(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    except ConnectionRefusedError:
        return True
    return False


def gone(pid: int, ticks: int | None) -> bool:
    """That exact process (pid + start time) no longer runs (or is a zombie)."""
    if process_start_ticks(pid) != ticks:
        return True
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            data = handle.read()
    except OSError:
        return True
    return data[data.rfind(b")") + 2 :].startswith(b"Z")


async def until(predicate: Any, timeout: float = 10.0, what: str = "condition") -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"{what} not reached within {timeout}s")
        await asyncio.sleep(0.02)


async def healthy(inst: Instance) -> None:
    result = await wait_healthy(
        "127.0.0.1", inst.port, inst.app.health, is_alive=inst.is_alive, tail=inst.tail
    )
    assert result.ok, result.message()


def test_start_serves_the_release_and_stop_frees_the_port(tmp_path: Path) -> None:
    port = free_port()

    async def go() -> None:
        sup = Supervisor(tmp_path)
        inst = await sup.start(app(), 0, port, "v1")
        await healthy(inst)
        assert await asyncio.to_thread(get, port) == (200, b"v1")
        assert await asyncio.to_thread(get, port, "/infra/port") == (200, str(port).encode())
        code = await sup.stop(inst)
        assert code == -signal.SIGTERM
        assert inst.state is InstanceState.STOPPED
        assert refused(port)
        assert sup.instances() == []

    run(go())


def test_stop_kills_the_whole_process_group(tmp_path: Path) -> None:
    port, marker = free_port(), tmp_path / "child.pid"

    async def go() -> None:
        sup = Supervisor(tmp_path)
        inst = await sup.start(app(f"--spawn-child {marker}"), 0, port, "v1")
        await healthy(inst)
        child = int(marker.read_text())
        ticks = process_start_ticks(child)
        assert ticks is not None and os.getpgid(child) == inst.pid
        await sup.stop(inst)
        await until(lambda: gone(child, ticks), 5, "the app's child gone")

    run(go())


def test_a_crashed_leaders_leftover_children_are_killed(tmp_path: Path) -> None:
    port, marker = free_port(), tmp_path / "child.pid"

    async def go() -> None:
        sup = Supervisor(tmp_path)
        inst = await sup.start(app(f"--spawn-child {marker}"), 0, port, "v1")
        await healthy(inst)
        child = int(marker.read_text())
        ticks = process_start_ticks(child)
        assert inst.pid is not None
        os.kill(inst.pid, signal.SIGKILL)  # only the leader; its child would keep running
        assert await inst.wait() == -signal.SIGKILL
        assert inst.state is InstanceState.CRASHED
        await until(lambda: gone(child, ticks), 5, "the orphaned child gone")

    run(go())


def test_an_app_ignoring_sigterm_is_killed_after_stop_timeout(tmp_path: Path) -> None:
    port = free_port()

    async def go() -> None:
        sup = Supervisor(tmp_path)
        inst = await sup.start(app("--ignore-sigterm", stop_timeout=0.5), 0, port, "v1")
        await healthy(inst)
        began = time.monotonic()
        code = await sup.stop(inst)
        took = time.monotonic() - began
        assert code == -signal.SIGKILL
        assert 0.5 <= took < 5
        assert "killed by SIGKILL" in inst.tail()

    run(go())


def test_the_log_is_appended_across_restarts(tmp_path: Path) -> None:
    port = free_port()

    async def go() -> None:
        sup = Supervisor(tmp_path)
        for release in ("v1", "v2"):
            inst = await sup.start(app(), 0, port, release)
            await healthy(inst)
            await sup.stop(inst)
        text = (tmp_path / "logs" / f"web-{port}.log").read_text()
        for release in ("v1", "v2"):
            assert f"start app=web release={release} port={port}" in text
            assert f"pyapp release={release} listening on port {port}" in text
            assert f"stop app=web release={release} port={port}" in text
        assert text.index("release=v1 listening") < text.index("start app=web release=v2")

    run(go())


def test_a_busy_port_is_refused_with_its_number(tmp_path: Path) -> None:
    async def go() -> None:
        with socket.socket() as squatter:
            squatter.bind(("127.0.0.1", 0))
            squatter.listen()
            port = squatter.getsockname()[1]
            sup = Supervisor(tmp_path)
            with pytest.raises(PortBusy, match=f"port {port} is already in use"):
                await sup.start(app(), 0, port, "v1")
            assert sup.instances() == []
            assert not (tmp_path / "logs" / f"web-{port}.log").exists()

    run(go())


def test_a_missing_binary_is_a_clear_start_failure(tmp_path: Path) -> None:
    async def go() -> None:
        spec = AppSpec(name="web", command="/nonexistent/bin/app {port}", ports=(0, 0))
        with pytest.raises(StartFailed, match="cannot start web"):
            await Supervisor(tmp_path).start(spec, 0, free_port(), "v1")

    run(go())


def test_a_crash_on_start_fails_the_gate_fast_with_the_log_tail(tmp_path: Path) -> None:
    async def go() -> None:
        inst = await Supervisor(tmp_path).start(app("--crash-on-start"), 0, free_port(), "v1")
        began = time.monotonic()
        result = await wait_healthy(
            "127.0.0.1", inst.port, HEALTH, is_alive=inst.is_alive, tail=inst.tail
        )
        assert not result.ok
        assert time.monotonic() - began < 5  # not the 15 s start_timeout
        assert "exited before passing" in result.reason
        assert "crashing on start as asked" in result.log_tail

    run(go())


def test_a_crashed_live_instance_is_restarted(tmp_path: Path) -> None:
    port = free_port()

    async def go() -> None:
        events: list[SupervisorEvent] = []
        policy = RestartPolicy(base=0.05, cap=0.2, reset_after=1.0)
        sup = Supervisor(tmp_path, policy=policy, on_event=events.append)
        first = await sup.start(app(), 0, port, "v1", restart=True)
        await healthy(first)
        assert first.pid is not None
        os.killpg(first.pid, signal.SIGKILL)
        await until(lambda: [e.kind for e in events].count("started") == 2, what="restart")
        second = sup.get("web", port)
        assert second is not None and second.pid != first.pid
        await healthy(second)
        assert await asyncio.to_thread(get, port) == (200, b"v1")
        await sup.close()
        assert refused(port)

    run(go())


@pytest.fixture(scope="session")
def java_jar(tmp_path_factory: pytest.TempPathFactory) -> Path:
    why = javac_missing()
    if why:
        pytest.skip(f"the Java test app cannot be built: {why}")
    return build_java_app(tmp_path_factory.mktemp("slowapp"))


@pytest.mark.slow
def test_the_java_app_starts_serves_and_exits_at_once_on_sigterm(
    tmp_path: Path, java_jar: Path
) -> None:
    port = free_port()
    spec = AppSpec(
        name="java",
        command=f"java -Xshare:auto -XX:TieredStopAtLevel=1 -jar {java_jar} {{port}} {{release}}",
        ports=(0, 0),
        health=HealthSpec(path="/infra/health", expect_body="UP", interval=0.1, start_timeout=30),
    )

    async def go() -> None:
        sup = Supervisor(tmp_path)
        inst = await sup.start(spec, 0, port, "v7")
        await healthy(inst)
        assert await asyncio.to_thread(get, port) == (200, b"v7")
        assert await asyncio.to_thread(get, port, "/infra/port") == (200, str(port).encode())
        assert await asyncio.to_thread(get, port, "/slow?ms=50") == (200, b"slept 50ms on v7")
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        conn.request("POST", "/echo", body=b"hello")
        assert conn.getresponse().read() == b"hello"
        conn.close()
        began = time.monotonic()
        code = await sup.stop(inst)
        assert code == 0  # Runtime.halt(0) from the SIGTERM handler
        assert time.monotonic() - began < 2
        assert refused(port)

    run(go())


def test_an_orphan_is_reclaimed_only_when_pid_and_start_time_match(tmp_path: Path) -> None:
    port = free_port()

    async def go() -> None:
        import subprocess
        import sys

        from tests.support.apps import PYAPP

        from nonstop.supervisor import is_our_process, reclaim

        # Started outside any Supervisor, as a dead daemon would have left it.
        proc = subprocess.Popen(
            [sys.executable, str(PYAPP), str(port)],
            start_new_session=True,
            stdout=subprocess.DEVNULL,
        )
        try:
            ticks = process_start_ticks(proc.pid)
            assert ticks is not None and is_our_process(proc.pid, ticks)
            assert not await reclaim(proc.pid, ticks + 1, "SIGTERM", 1.0)  # not the same process
            assert proc.poll() is None
            assert await reclaim(proc.pid, ticks, "SIGTERM", 5.0)
            assert proc.wait(5) == -signal.SIGTERM
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

    run(go())


def test_start_and_stop_work_on_the_default_asyncio_loop_too(tmp_path: Path) -> None:
    port = free_port()

    async def go() -> None:
        sup = Supervisor(tmp_path)
        inst = await sup.start(app(), 0, port, "v1")
        await healthy(inst)
        assert await sup.stop(inst) == -signal.SIGTERM

    asyncio.run(go())
