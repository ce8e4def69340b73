"""AppPool against a real proxy Backend: atomic switch, drain, backup, re-apply on reload."""

from __future__ import annotations

import asyncio

from nonstop.config.model import ServerSpec, UpstreamSpec
from nonstop.deploy.pool import AppPool
from nonstop.proxy.server import Backend
from nonstop.proxy.upstream import Outcome
from nonstop.proxy.variables import VariableTable


def spec(port: int, backup: bool = False) -> ServerSpec:
    return ServerSpec(address=f"127.0.0.1:{port}", host="127.0.0.1", port=port, backup=backup)


def make_backend(previous: Backend | None = None) -> Backend:
    upstream = UpstreamSpec(name="web", servers=(), app=True, keepalive=8)
    return Backend(upstream, VariableTable(), previous)


def picks(backend: Backend, count: int) -> list[str]:
    out = []
    for _ in range(count):
        attempt = backend.balancer.begin(b"\x7f\x00\x00\x01", None)
        peer = backend.balancer.pick(attempt, 0.0)
        assert peer is not None
        out.append(peer.address)
        backend.balancer.free(attempt, peer, Outcome.OK, 0.0)
    return out


def test_switch_sends_every_new_pick_to_the_new_server_at_once() -> None:
    backend = make_backend()
    pool = AppPool("web", lambda: backend)
    pool.add([spec(8080)])
    assert picks(backend, 3) == ["127.0.0.1:8080"] * 3
    pool.switch([spec(8000)], ["127.0.0.1:8080"])
    assert picks(backend, 5) == ["127.0.0.1:8000"] * 5
    assert backend.balancer.peer("127.0.0.1:8080").draining  # type: ignore[union-attr]


def test_drain_waits_for_in_flight_requests_on_the_old_server() -> None:
    async def scenario() -> tuple[int, float]:
        backend = make_backend()
        pool = AppPool("web", lambda: backend)
        pool.add([spec(8080)])
        attempt = backend.balancer.begin(b"", None)
        peer = backend.balancer.pick(attempt, 0.0)
        assert peer is not None
        pool.switch([spec(8000)], ["127.0.0.1:8080"])
        loop = asyncio.get_running_loop()
        loop.call_later(0.1, backend.balancer.free, attempt, peer, Outcome.OK, 0.0)
        start = loop.time()
        left = await pool.drain(["127.0.0.1:8080"], timeout=5)
        return left, loop.time() - start

    left, took = asyncio.run(scenario())
    assert left == 0 and 0.09 <= took < 1


def test_drain_gives_up_after_its_timeout_and_reports_what_is_left() -> None:
    async def scenario() -> int:
        backend = make_backend()
        pool = AppPool("web", lambda: backend)
        pool.add([spec(8080)])
        attempt = backend.balancer.begin(b"", None)
        assert backend.balancer.pick(attempt, 0.0) is not None
        pool.switch([spec(8000)], ["127.0.0.1:8080"])
        return await pool.drain(["127.0.0.1:8080"], timeout=0.05)

    assert asyncio.run(scenario()) == 1


def test_a_demoted_old_server_waits_as_backup_and_takes_no_request() -> None:
    backend = make_backend()
    pool = AppPool("web", lambda: backend)
    pool.add([spec(8080)])
    pool.switch([spec(8000)], ["127.0.0.1:8080"])
    pool.demote("127.0.0.1:8080", spec(8080, backup=True))
    assert picks(backend, 4) == ["127.0.0.1:8000"] * 4
    assert [p.address for p in backend.balancer.backups] == ["127.0.0.1:8080"]


def test_an_unhealthy_server_gets_no_pick_until_it_is_healthy_again() -> None:
    backend = make_backend()
    pool = AppPool("web", lambda: backend)
    pool.add([spec(8080)], healthy=False)
    attempt = backend.balancer.begin(b"", None)
    assert backend.balancer.pick(attempt, 0.0) is None
    pool.set_health("127.0.0.1:8080", True)
    assert picks(backend, 1) == ["127.0.0.1:8080"]


def test_reapply_after_a_reload_restores_the_servers_and_keeps_their_peers() -> None:
    current = [make_backend()]
    pool = AppPool("web", lambda: current[0])
    pool.add([spec(8080)])
    pool.switch([spec(8000)], ["127.0.0.1:8080"])
    old = current[0]
    draining_peer = old.balancer.peer("127.0.0.1:8080")
    current[0] = make_backend(previous=old)  # what ProxyState.install does on reload
    assert current[0].balancer.peers == []
    pool.reapply(old.balancer)
    assert current[0].balancer.peer("127.0.0.1:8080") is draining_peer
    assert picks(current[0], 3) == ["127.0.0.1:8000"] * 3
