"""The embedded engine on a real proxy state: atomic switch, drain signal, backup, reload."""

from __future__ import annotations

import asyncio
import dataclasses

from nonstop.config.model import Config, ServerSpec, UpstreamSpec
from nonstop.engines.embedded import EmbeddedEngine
from nonstop.proxy.server import Backend
from nonstop.proxy.upstream import Attempt, Outcome, Peer, Upstream
from nonstop.servers import ServerState

CONFIG = Config(
    path="nonstop.toml",
    prefix=".",
    servers=(),
    upstreams=(UpstreamSpec(name="web", servers=(), app=True, keepalive=8),),
)


def spec(port: int, backup: bool = False) -> ServerSpec:
    return ServerSpec(address=f"127.0.0.1:{port}", host="127.0.0.1", port=port, backup=backup)


def up(port: int, draining: bool = False, healthy: bool = True) -> ServerState:
    return ServerState(spec(port), draining, healthy)


def backend(engine: EmbeddedEngine) -> Backend:
    return engine.proxy.state.upstreams["web"]


def picks(engine: EmbeddedEngine, count: int) -> list[str]:
    balancer = backend(engine).balancer
    out = []
    for _ in range(count):
        attempt = balancer.begin(b"\x7f\x00\x00\x01", None)
        peer = balancer.pick(attempt, 0.0)
        assert peer is not None
        out.append(peer.address)
        balancer.free(attempt, peer, Outcome.OK, 0.0)
    return out


async def switched_with_a_request_on_8080(
    engine: EmbeddedEngine,
) -> tuple[Upstream, Attempt, Peer]:
    """8080 serves one request in flight when 8000 takes over and 8080 drains."""
    await engine.set_servers("web", (up(8080),))
    balancer = backend(engine).balancer
    attempt = balancer.begin(b"", None)
    peer = balancer.pick(attempt, 0.0)
    assert peer is not None
    await engine.set_servers("web", (up(8080, draining=True), up(8000)))
    return balancer, attempt, peer


def test_switch_sends_every_new_pick_to_the_new_server_at_once() -> None:
    async def scenario() -> None:
        engine = EmbeddedEngine(CONFIG)
        await engine.set_servers("web", (up(8080),))
        assert picks(engine, 3) == ["127.0.0.1:8080"] * 3
        await engine.set_servers("web", (up(8080, draining=True), up(8000)))
        assert picks(engine, 5) == ["127.0.0.1:8000"] * 5
        assert backend(engine).balancer.peer("127.0.0.1:8080").draining  # type: ignore[union-attr]
        reports = {r.address: r.state for r in await engine.servers("web")}
        assert reports == {"127.0.0.1:8080": "draining", "127.0.0.1:8000": "up"}

    asyncio.run(scenario())


def test_drain_ends_when_the_last_request_on_the_old_server_ends() -> None:
    async def scenario() -> tuple[int, float]:
        engine = EmbeddedEngine(CONFIG)
        balancer, attempt, peer = await switched_with_a_request_on_8080(engine)
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, balancer.free, attempt, peer, Outcome.OK, 0.0)
        start = loop.time()
        left = await engine.drain("web", frozenset({"127.0.0.1:8080"}), timeout=5)
        return left, loop.time() - start

    left, took = asyncio.run(scenario())
    assert left == 0 and 0.09 <= took < 1


def test_a_request_begun_before_a_reload_still_ends_the_drain() -> None:
    async def scenario() -> int:
        engine = EmbeddedEngine(CONFIG)
        balancer, attempt, peer = await switched_with_a_request_on_8080(engine)
        drain = asyncio.ensure_future(engine.drain("web", frozenset({"127.0.0.1:8080"}), 5))
        await asyncio.sleep(0)
        await engine.apply(dataclasses.replace(CONFIG, max_connections=99))
        assert backend(engine).balancer is not balancer
        balancer.free(attempt, peer, Outcome.OK, 0.0)  # the old upstream, the same peer
        return await asyncio.wait_for(drain, 1.0)

    assert asyncio.run(scenario()) == 0


def test_drain_gives_up_after_its_timeout_and_reports_what_is_left() -> None:
    async def scenario() -> int:
        engine = EmbeddedEngine(CONFIG)
        await switched_with_a_request_on_8080(engine)
        return await engine.drain("web", frozenset({"127.0.0.1:8080"}), timeout=0.05)

    assert asyncio.run(scenario()) == 1


def test_a_demoted_old_server_waits_as_backup_and_takes_no_request() -> None:
    async def scenario() -> None:
        engine = EmbeddedEngine(CONFIG)
        await engine.set_servers("web", (up(8080),))
        await engine.set_servers("web", (ServerState(spec(8080, backup=True)), up(8000)))
        assert picks(engine, 4) == ["127.0.0.1:8000"] * 4
        assert [p.address for p in backend(engine).balancer.backups] == ["127.0.0.1:8080"]
        assert await engine.supports_backup("web")

    asyncio.run(scenario())


def test_an_unhealthy_server_gets_no_pick_until_it_is_healthy_again() -> None:
    async def scenario() -> None:
        engine = EmbeddedEngine(CONFIG)
        await engine.set_servers("web", (up(8080, healthy=False),))
        balancer = backend(engine).balancer
        assert balancer.pick(balancer.begin(b"", None), 0.0) is None
        await engine.set_servers("web", (up(8080),))
        assert picks(engine, 1) == ["127.0.0.1:8080"]

    asyncio.run(scenario())


def test_a_reload_builds_the_new_state_with_the_servers_and_keeps_their_peers() -> None:
    async def scenario() -> None:
        engine = EmbeddedEngine(CONFIG)
        await engine.set_servers("web", (up(8080, draining=True), up(8000)))
        old = backend(engine)
        draining_peer = old.balancer.peer("127.0.0.1:8080")
        await engine.apply(dataclasses.replace(CONFIG, max_connections=99))
        assert backend(engine) is not old
        assert backend(engine).balancer.peer("127.0.0.1:8080") is draining_peer
        assert picks(engine, 3) == ["127.0.0.1:8000"] * 3

    asyncio.run(scenario())
