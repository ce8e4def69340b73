"""The nginx engine's decisions against ``FakeNginx``: check before swap, reload only on
change, drain until the pre-reload workers are gone, graceful stop, health as ``down``."""

from __future__ import annotations

import asyncio
import functools
import grp
import os
import pwd
import shutil
import signal
import stat
import tempfile
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

import pytest

from nonstop.config import load
from nonstop.config.model import Config, HealthSpec, ServerSpec
from nonstop.engines.nginx import FakeNginx, NginxEngine, NginxRejected, children
from nonstop.errors import ConfigError
from nonstop.events import EventBus, HealthEvent
from nonstop.health.active import Verdict
from nonstop.servers import ServerState

CONFIG = """
state_dir = "state"

[upstreams.api]
servers = [ {{ address = "127.0.0.1:9101" }}, {{ address = "127.0.0.1:9102" }} ]
{health}

[apps.web]
command = "app {{port}}"
ports = [8080, 8000]
drain_timeout = "{drain}"

[[servers]]
listen = ["127.0.0.1:18080"]
locations = [ {{ path = "/", pass = "web" }}, {{ path = "/api/", pass = "api" }} ]
"""


def run(fn: Callable[..., Coroutine[Any, Any, None]]) -> Callable[..., None]:
    """Each test body runs in its own event loop."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> None:
        asyncio.run(fn(*args, **kwargs))

    return wrapper


def _config(
    tmp_path: Path, drain: str = "30s", extra: str = "", health: bool = False, top: str = ""
) -> Config:
    path = tmp_path / "nonstop.toml"
    checked = 'health = { path = "/health", interval = "10ms" }' if health else ""
    path.write_text(top + CONFIG.format(drain=drain, health=checked) + extra)
    return load(str(path))


def _server(port: int) -> ServerSpec:
    return ServerSpec(f"127.0.0.1:{port}", "127.0.0.1", port)


def _up(port: int, draining: bool = False, healthy: bool = True) -> ServerState:
    return ServerState(_server(port), draining, healthy)


def _live(engine: NginxEngine, name: str = "nginx.conf") -> str:
    return Path(engine.path("conf", name)).read_text()


async def _started(tmp_path: Path) -> tuple[NginxEngine, FakeNginx]:
    fake = FakeNginx()
    engine = NginxEngine(_config(tmp_path), fake, poll=0.001, slot_seen=0.05)
    await engine.start()
    return engine, fake


@run
async def test_start_checks_the_render_then_runs_nginx_on_the_checked_files(tmp_path: Path) -> None:
    engine, fake = await _started(tmp_path)
    assert len(fake.checked) == 1 and fake.started == fake.checked
    assert "upstream web__slot0 {" in _live(engine)
    assert fake.master is not None and engine.describe()["master"] == fake.master.pid
    await engine.shutdown(1.0)


@run
async def test_a_change_reloads_once_and_the_same_bytes_do_not_reload(tmp_path: Path) -> None:
    engine, fake = await _started(tmp_path)
    assert fake.master is not None
    engine.set_down("api", "127.0.0.1:9102", True)
    engine.set_down("api", "127.0.0.1:9102", True)
    await engine.settle()
    assert fake.signals == [(fake.master.pid, signal.SIGHUP)]
    assert "server 127.0.0.1:9102 down;" in _live(engine)
    assert await engine.update() is False
    assert len(fake.signals) == 1 and engine.reloads == 1
    await engine.shutdown(1.0)


@run
async def test_a_rejected_render_keeps_the_live_config_and_reports_nginx_own_words(
    tmp_path: Path,
) -> None:
    engine, fake = await _started(tmp_path)
    before = _live(engine, "nginx.conf")
    fake.reject = "9999"
    bad = _config(
        tmp_path, extra='\n[[servers]]\nlisten = ["127.0.0.1:9999"]\nredirect = "https://x"\n'
    )
    with pytest.raises(NginxRejected, match=r'nginx: \[emerg\] unknown directive "9999"'):
        await engine.apply(bad)
    assert _live(engine, "nginx.conf") == before
    assert engine.config.servers != bad.servers
    assert all(s != signal.SIGHUP for _, s in fake.signals)
    await engine.shutdown(1.0)


@run
async def test_drain_waits_until_every_worker_from_before_the_reload_has_exited(
    tmp_path: Path,
) -> None:
    engine, fake = await _started(tmp_path)
    engine.set_down("api", "127.0.0.1:9102", True)
    drain = asyncio.ensure_future(engine.drain("web", frozenset(), 5.0))
    for _ in range(20):
        await asyncio.sleep(0.002)
    assert not drain.done() and engine.describe()["draining_workers"]
    fake.finish_old()
    assert await asyncio.wait_for(drain, 1.0) == 0
    await engine.shutdown(1.0)


@run
async def test_drain_gives_up_at_its_timeout_and_counts_the_workers_left(tmp_path: Path) -> None:
    engine, _ = await _started(tmp_path)
    engine.set_down("api", "127.0.0.1:9102", True)
    assert await engine.drain("web", frozenset(), 0.02) == 1
    await engine.shutdown(1.0)


@run
async def test_a_reload_nginx_does_not_take_restores_the_previous_files(tmp_path: Path) -> None:
    engine, fake = await _started(tmp_path)
    fake.ignore_reload = True
    before = _live(engine)
    import nonstop.engines.nginx.engine as module

    module.RELOAD_TIMEOUT, saved = 0.05, module.RELOAD_TIMEOUT
    try:
        engine.set_down("api", "127.0.0.1:9102", True)
        with pytest.raises(Exception, match="did not apply the new config"):
            await engine.settle()
    finally:
        module.RELOAD_TIMEOUT = saved
    assert _live(engine) == before
    await engine.shutdown(1.0)


@run
async def test_shutdown_asks_the_master_to_quit_gracefully(tmp_path: Path) -> None:
    engine, fake = await _started(tmp_path)
    assert fake.master is not None
    await engine.shutdown(1.0)
    assert fake.signals[-1] == (fake.master.pid, signal.SIGQUIT)
    assert fake.master.returncode == 0


@run
async def test_a_switch_moves_the_slot_flag_and_never_reloads_nginx(tmp_path: Path) -> None:
    engine, fake = await _started(tmp_path)
    flag = Path(engine.path("slots", "web.slot1"))
    before = _live(engine)
    await engine.set_servers("web", (_up(8080),))
    assert engine.slot("web") == 0 and not flag.exists()
    started = asyncio.get_running_loop().time()
    await engine.set_servers("web", (_up(8080, draining=True), _up(8000)))
    # applied once every worker's cached flag has expired
    assert asyncio.get_running_loop().time() - started >= 0.05
    assert engine.slot("web") == 1 and flag.exists()
    assert engine.describe()["live_upstreams"] == {"web": "web__slot1"}
    states = {r.address: r.state for r in await engine.servers("web")}
    assert states["127.0.0.1:8080"] == "draining"
    await engine.set_servers("web", (_up(8080), _up(8000, draining=True, healthy=False)))
    assert engine.slot("web") == 0 and not flag.exists()  # a rollback
    assert fake.signals == [] and _live(engine) == before
    await engine.shutdown(1.0)


@run
async def test_a_drain_waits_until_nginx_holds_no_connection_to_the_old_ports(
    tmp_path: Path,
) -> None:
    engine, fake = await _started(tmp_path)
    await engine.set_servers("web", (_up(8080, draining=True), _up(8000)))
    fake.open_connections = {8080: 2, 8000: 5}
    old = frozenset({"127.0.0.1:8080"})
    drain = asyncio.ensure_future(engine.drain("web", old, 5.0))
    for _ in range(20):
        await asyncio.sleep(0.002)
    assert not drain.done()
    fake.open_connections[8080] = 0  # nginx closed its idle connections to the old slot
    assert await asyncio.wait_for(drain, 1.0) == 0
    fake.open_connections[8080] = 1
    assert await engine.drain("web", old, 0.02) == 1  # bounded, and says what is left
    await engine.shutdown(1.0)


@run
async def test_a_static_server_failing_its_check_is_rendered_down_and_back_up(
    tmp_path: Path,
) -> None:
    failing = {"127.0.0.1:9102"}

    async def probe(host: str, port: int, spec: HealthSpec) -> Verdict:
        ok = f"{host}:{port}" not in failing
        return Verdict(True, 200) if ok else Verdict(False, error="refused", reason="refused")

    fake = FakeNginx()
    bus = EventBus()
    flips = bus.subscribe(lambda e: isinstance(e, HealthEvent))
    engine = NginxEngine(
        _config(tmp_path, health=True),
        fake,
        poll=0.001,
        slot_seen=0.05,
        probe_fn=probe,
        events=bus,
    )
    await engine.start()
    main = engine.path("conf", "nginx.conf")

    async def rendered(line: str) -> None:
        for _ in range(500):
            await engine.settle()
            if line in Path(main).read_text():
                return
            await asyncio.sleep(0.005)
        raise AssertionError(f"{line!r} never rendered")

    await rendered("server 127.0.0.1:9102 down;")
    assert "server 127.0.0.1:9101;" in Path(main).read_text()
    failing.clear()
    await rendered("server 127.0.0.1:9102;")
    seen = [(e.address, e.healthy) for e in flips.pending() if isinstance(e, HealthEvent)]
    assert seen[-1] == ("127.0.0.1:9102", True)
    await engine.shutdown(1.0)


def test_children_are_read_from_proc_by_parent_pid(tmp_path: Path) -> None:
    proc = tmp_path / "proc"
    for pid, ppid in ((10, 1), (11, 10), (12, 10), (13, 11)):
        (proc / str(pid) / "task" / str(pid)).mkdir(parents=True)
        (proc / str(pid) / "stat").write_text(f"{pid} (nginx: a (b) c) S {ppid} 1 1 0\n")
    assert children(10, str(proc)) == {11, 12}
    (proc / "10" / "task" / "10" / "children").write_text("11 12 ")
    assert children(10, str(proc)) == {11, 12}
    assert children(99, str(proc)) == frozenset()


def test_only_our_own_nginx_master_is_taken_for_an_orphan(tmp_path: Path) -> None:
    from nonstop.engines.nginx.engine import _orphan_master

    home = tmp_path / "state" / "nginx"
    home.mkdir(parents=True)
    proc = tmp_path / "proc"
    pidfile = home / "nginx.pid"
    pidfile.write_text("4242\n")
    (proc / "4242").mkdir(parents=True)
    cmdline = proc / "4242" / "cmdline"
    cmdline.write_bytes(b"nginx: master process /usr/sbin/nginx -p " + str(home).encode() + b"/\0")
    assert _orphan_master(str(pidfile), str(home), str(proc)) == 4242
    cmdline.write_bytes(b"nginx: master process /usr/sbin/nginx -p /etc/nginx/\0")
    assert _orphan_master(str(pidfile), str(home), str(proc)) is None  # someone else's
    cmdline.write_bytes(b"python3 app.py " + str(home).encode() + b"\0")
    assert _orphan_master(str(pidfile), str(home), str(proc)) is None  # not nginx
    pidfile.write_text("4243\n")
    assert _orphan_master(str(pidfile), str(home), str(proc)) is None  # not running


async def _attached(tmp_path: Path, running: bool) -> tuple[NginxEngine, FakeNginx]:
    fake = FakeNginx()
    fake.system_running = running
    engine = NginxEngine(
        _config(tmp_path), fake, poll=0.001, system_pid=str(tmp_path / "run" / "nginx.pid")
    )
    await engine.start()
    return engine, fake


@run
async def test_a_system_nginx_is_reloaded_onto_the_render_and_never_started_or_stopped(
    tmp_path: Path,
) -> None:
    engine, fake = await _attached(tmp_path, running=True)
    assert fake.started == [] and fake.attached == [engine.conf]
    assert fake.master is not None
    assert fake.signals == [(fake.master.pid, signal.SIGHUP)]
    assert f"pid {tmp_path}/run/nginx.pid;" in Path(engine.conf).read_text()
    assert engine.describe()["mode"] == "system"
    engine.set_down("api", "127.0.0.1:9102", True)
    await engine.settle()
    assert "server 127.0.0.1:9102 down;" in _live(engine)
    assert fake.signals[-1] == (fake.master.pid, signal.SIGHUP) and len(fake.signals) == 2
    await engine.shutdown(1.0)
    assert fake.master.returncode is None  # still serving
    assert all(signum == signal.SIGHUP for _, signum in fake.signals)


@run
async def test_nonstop_writes_the_config_first_and_drives_the_system_nginx_once_it_is_up(
    tmp_path: Path,
) -> None:
    engine, fake = await _attached(tmp_path, running=False)
    assert Path(engine.conf).exists() and engine.master is None
    fake.system_running = True  # the system starts nginx on the files nonstop wrote
    for _ in range(400):
        if engine.master is not None:
            break
        await asyncio.sleep(0.01)
    assert engine.master is fake.master and fake.master is not None
    assert fake.signals == [(fake.master.pid, signal.SIGHUP)]
    first = fake.master
    first.exit(0)  # the system restarts it: nonstop follows the new master
    for _ in range(400):
        if engine.master is not None and engine.master is not first:
            break
        await asyncio.sleep(0.01)
    assert engine.master is fake.master and fake.master is not first
    await engine.shutdown(1.0)


def test_the_config_a_master_runs_is_read_from_its_title() -> None:
    from nonstop.engines.nginx.command import master_conf

    default = "/etc/nginx/nginx.conf"
    title = "nginx: master process /usr/sbin/nginx -g daemon on; master_process on;"
    assert master_conf(title, default) == default
    title = "nginx: master process nginx -p /srv/ns/ -c conf/nginx.conf"
    assert master_conf(title, default) == "/srv/ns/conf/nginx.conf"
    title = "nginx: master process /usr/sbin/nginx -c /var/lib/ns/nginx/conf/nginx.conf"
    assert master_conf(title, default) == "/var/lib/ns/nginx/conf/nginx.conf"
    assert master_conf("nginx: worker process", default) is None
    assert master_conf("python3 app.py", default) is None


def test_a_master_that_has_not_retitled_itself_yet_is_read_from_its_command_line() -> None:
    """A daemonized master writes its pid file before it retitles itself."""
    from nonstop.engines.nginx.command import master_conf

    default = "/etc/nginx/nginx.conf"
    title = "/usr/sbin/nginx -c /srv/other.conf -e /srv/early.log"
    assert master_conf(title, default) == "/srv/other.conf"
    assert master_conf("nginx -p /srv/ns/ -c conf/nginx.conf", default) == "/srv/ns/conf/nginx.conf"
    assert master_conf("/usr/sbin/nginx", default) == default
    assert master_conf("/usr/sbin/nginx -t -c /srv/other.conf", default) is None
    assert master_conf("/usr/sbin/nginx -s reload", default) is None
    assert master_conf("/usr/bin/nginx-exporter -c /srv/other.conf", default) is None


def test_connections_to_ports_are_counted_from_proc_net_tcp(tmp_path: Path) -> None:
    from nonstop.engines.nginx.command import established

    net = tmp_path / "net"
    net.mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    (net / "tcp").write_text(
        header
        + "   0: 0100007F:1F90 00000000:0000 0A 0 0\n"  # 8080 listening: not a connection
        + "   1: 0100007F:1F90 0100007F:D431 01 0 0\n"  # 8080 accepted, established
        + "   2: 0100007F:D431 0100007F:1F90 01 0 0\n"  # nginx's side of it: not counted
        + "   3: 0100007F:1F40 0100007F:D432 01 0 0\n"  # 8000
        + "   4: 0100007F:1F90 0100007F:D433 06 0 0\n"  # 8080 in TIME_WAIT
    )
    (net / "tcp6").write_text(
        header + "   0: 00000000000000000000000001000000:1F90 "
        "00000000000000000000000001000000:D434 01 0 0\n"
    )
    assert established(frozenset({8080}), str(tmp_path)) == 2
    assert established(frozenset({8080, 8000}), str(tmp_path)) == 3
    assert established(frozenset({9}), str(tmp_path)) == 0


def test_connections_to_a_server_on_another_host_are_counted_by_its_address(
    tmp_path: Path,
) -> None:
    from nonstop.engines.nginx.command import established_to

    net = tmp_path / "net"
    net.mkdir()
    header = "  sl  local_address rem_address   st tx_queue rx_queue\n"
    (net / "tcp").write_text(
        header  # 10.0.0.2 -> 10.0.0.11:8080 twice (one in TIME_WAIT), and to 10.0.0.12:8080
        + "   0: 0200000A:D431 0B00000A:1F90 01 0 0\n"
        + "   1: 0200000A:D432 0B00000A:1F90 06 0 0\n"
        + "   2: 0200000A:D433 0C00000A:1F90 01 0 0\n"
    )
    (net / "tcp6").write_text(  # to [::1]:8080
        header + "   0: 00000000000000000000000001000000:D434 "
        "00000000000000000000000001000000:1F90 01 0 0\n"
    )
    assert established_to(frozenset({("10.0.0.11", 8080)}), str(tmp_path)) == 1
    assert established_to(frozenset({("::1", 8080)}), str(tmp_path)) == 1
    assert established_to(frozenset({("10.0.0.11", 8000)}), str(tmp_path)) == 0


@run
async def test_a_drained_static_server_is_rendered_down_and_drained_once_nginx_holds_nothing(
    tmp_path: Path,
) -> None:
    engine, fake = await _started(tmp_path)
    fake.open_to = {("127.0.0.1", 9101): 2, ("127.0.0.1", 9102): 7}
    drain = asyncio.ensure_future(engine.drain_server("api", "127.0.0.1:9101", 5.0))
    for _ in range(20):
        await asyncio.sleep(0.002)
    assert "server 127.0.0.1:9101 down" in _live(engine)
    assert "server 127.0.0.1:9102 down" not in _live(engine)
    assert engine.upstreams("api")["api"][0]["state"] == "draining"
    assert not drain.done()  # the workers from before the reload still run
    fake.finish_old()
    for _ in range(20):
        await asyncio.sleep(0.002)
    assert not drain.done()  # and nginx still holds connections to the server
    fake.open_to[("127.0.0.1", 9101)] = 0  # the others' connections do not count
    assert await asyncio.wait_for(drain, 1.0) == 0
    fake.open_to[("127.0.0.1", 9101)] = 1
    reloads = engine.reloads
    assert await engine.drain_server("api", "127.0.0.1:9101", 0.02) == 1  # bounded
    assert engine.reloads == reloads  # already drained: no second reload
    await engine.undrain_server("api", "127.0.0.1:9101")
    assert "server 127.0.0.1:9101 down" not in _live(engine)
    assert engine.upstreams("api")["api"][0]["state"] == "up"
    await engine.shutdown(1.0)


@run
async def test_a_drained_server_stays_down_across_a_config_reload_while_the_config_has_it(
    tmp_path: Path,
) -> None:
    engine, fake = await _started(tmp_path)
    fake.old_exit_at_once = True
    assert await engine.drain_server("api", "127.0.0.1:9101", 1.0) == 0
    await engine.apply(_config(tmp_path, drain="20s"))
    assert "server 127.0.0.1:9101 down" in _live(engine)
    path = tmp_path / "nonstop.toml"
    path.write_text(path.read_text().replace("9101", "9103"))
    await engine.apply(load(str(path)))  # the server left the config: no longer drained
    path.write_text(path.read_text().replace("9103", "9101"))
    await engine.apply(load(str(path)))
    assert "server 127.0.0.1:9101 down" not in _live(engine)
    await engine.shutdown(1.0)


@pytest.mark.parametrize(
    ("upstream", "address", "message"),
    [
        ("nope", "127.0.0.1:9101", 'no upstream "nope"'),
        ("api", "127.0.0.1:1", "has no server 127.0.0.1:1"),
        ("web", "127.0.0.1:8080", '"web" is an app'),
    ],
)
@run
async def test_draining_what_the_config_does_not_have_is_a_usage_error(
    tmp_path: Path, upstream: str, address: str, message: str
) -> None:
    from nonstop.errors import UsageError

    engine, _ = await _started(tmp_path)
    with pytest.raises(UsageError, match=message):
        await engine.drain_server(upstream, address, 1.0)
    await engine.shutdown(1.0)


# -- nginx.conf's ``user``: nginx's workers run as that user ------------------------------

as_root = pytest.mark.skipif(os.geteuid() != 0, reason='"user" takes effect only as root')


@pytest.fixture
def open_dir() -> Iterator[Path]:
    """A directory every user may pass through, from / down (pytest's own are 0700)."""
    made = Path(tempfile.mkdtemp(prefix="nonstop-user-"))
    made.chmod(0o711)
    yield made
    shutil.rmtree(made)


def _mode(path: str | Path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


@as_root
@run
async def test_with_user_nginx_workers_are_that_user_and_may_pass_to_temp_and_slots(
    open_dir: Path,
) -> None:
    nogroup = grp.getgrgid(pwd.getpwnam("nobody").pw_gid).gr_name
    fake = FakeNginx()
    previous = os.umask(0o077)  # as the daemon runs (statedir.restrict_umask)
    left = open_dir / "state" / "nginx" / "slots" / "web.slot1"  # by an earlier nonstop
    left.parent.mkdir(parents=True)
    left.write_text("slot 1\n")
    try:
        engine = NginxEngine(
            _config(open_dir, top='worker_user = "nobody"\n'), fake, user="root", poll=0.001
        )
        await engine.start()
    finally:
        os.umask(previous)
    assert _live(engine).splitlines()[1] == f"user nobody {nogroup};"
    state = engine.config.state_dir
    assert (_mode(state), _mode(engine.home)) == (0o711, 0o711)
    assert (_mode(engine.path("temp")), _mode(engine.path("slots"))) == (0o711, 0o711)
    assert _mode(engine.path("conf")) == 0o700  # the render, the logs: still nonstop's
    assert _mode(engine.path("logs")) == 0o700
    assert _mode(left) == 0o644  # nginx's workers open the flags: readable by all
    engine.set_slot("web", 0)
    engine.set_slot("web", 1)
    assert _mode(left) == 0o644

    # `user` taken out: nginx's workers are nonstop's user again, and the directories stay
    # passable for the user's workers that still finish their connections
    await engine.apply(_config(open_dir))
    assert _live(engine).splitlines()[1] == "user root;"
    assert (_mode(state), _mode(engine.home), _mode(engine.path("slots"))) == (0o711,) * 3
    await engine.shutdown(1.0)


@as_root
@run
async def test_a_directory_that_bars_the_workers_way_is_named_and_nginx_is_not_started(
    tmp_path: Path,
) -> None:
    fake = FakeNginx()
    engine = NginxEngine(_config(tmp_path, top='worker_user = "nobody"\n'), fake, poll=0.001)
    with pytest.raises(ConfigError) as caught:
        await engine.start()
    barred = next(p for p in reversed((tmp_path, *tmp_path.parents)) if not _mode(p) & 0o001)
    assert str(caught.value) == (
        f'nginx\'s workers run as "nobody" ("user") and cannot reach '
        f"{engine.path('temp')}: {barred} does not let them pass; "
        f"let them search it (chmod o+x {barred}) or choose a state_dir they can reach"
    )
    assert fake.master is None and not fake.started


@as_root
@run
async def test_a_state_dir_reached_through_a_link_is_checked_where_it_really_is(
    open_dir: Path, tmp_path: Path
) -> None:
    (tmp_path / "real").mkdir()
    (open_dir / "state").symlink_to(tmp_path / "real")  # open on the way, closed at the end
    engine = NginxEngine(_config(open_dir, top='worker_user = "nobody"\n'), FakeNginx())
    barred = next(p for p in reversed((tmp_path, *tmp_path.parents)) if not _mode(p) & 0o001)
    with pytest.raises(ConfigError, match=f"{barred} does not let them pass"):
        await engine.start()
