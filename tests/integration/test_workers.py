"""``worker_processes``: one control process and N workers, on real processes and sockets.

Each test runs ``nonstop run`` as a subprocess and reads what it does from the outside:
which worker holds which connection (``nonstop status --json``), the error log, the
access log, and every answer the clients got.
"""

from __future__ import annotations

import contextlib
import gzip
import http.client
import json
import os
import re
import select
import shutil
import signal
import socket
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.integration.test_tls import Site
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, Load, deployed, pyapp_daemons
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess
from tests.support.restarts import SocketActivated, stop_leftover_apps

from nonstop.workers.engine import APPLY_LIMIT

Make = Callable[..., AppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, AppDaemon)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Callable[..., NonstopProcess]]:
    """``proxy(http_block, main="")``: nonstop on an nginx.conf, listening on ``{port}``."""
    started: list[NonstopProcess] = []

    def make(http: str, main: str = "worker_processes 2;") -> NonstopProcess:
        port = free_port()
        path = tmp_path / f"p{len(started)}" / "nginx.conf"
        path.parent.mkdir()
        path.write_text(f"{main}\nevents {{}}\nhttp {{\n{http.replace('{port}', str(port))}\n}}\n")
        process = NonstopProcess(path, [port], ["--shutdown-timeout", "5s"])
        started.append(process)
        return process.start()

    yield make
    for process in started:
        process.stop()


def status(process: NonstopProcess) -> dict[str, Any]:
    done = process.cli("status", "--json")
    assert done.returncode == 0, done.stdout + done.stderr
    answer: dict[str, Any] = json.loads(done.stdout)
    return answer


def per_worker(process: NonstopProcess) -> list[int]:
    return [int(w["connections"] or 0) for w in status(process)["workers"]]


def wait_for(what: Callable[[], bool], timeout: float = 15.0, message: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not what():
        assert time.monotonic() < deadline, message or "timed out"
        time.sleep(0.05)


def get(port: int, path: str = "/") -> tuple[int, str]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("GET", path)
        resp = conn.getresponse()
        return resp.status, resp.read().decode()
    finally:
        conn.close()


def held(port: int, count: int) -> list[http.client.HTTPConnection]:
    """``count`` keep-alive connections, each answered once (so a worker accepted it)."""
    out = []
    for _ in range(count):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
        conn.request("GET", "/")
        resp = conn.getresponse()
        resp.read()
        assert resp.status == 200
        out.append(conn)
    return out


def held_by_every_worker(
    process: NonstopProcess, port: int, count: int
) -> list[http.client.HTTPConnection]:
    """At least ``count`` held connections, more until every worker holds one.

    The kernel spreads SO_REUSEPORT connections by a hash of the client's port,
    so a handful can all land on one worker (6 of 6: one run in 32)."""
    conns = held(port, count)
    while min(per_worker(process)) == 0 and len(conns) < 64:
        conns += held(port, 1)
    assert min(per_worker(process)) > 0, per_worker(process)
    return conns


RETURN_OK = (
    'access_log off;\nserver { listen 127.0.0.1:{port}; location / { return 200 "ok\\n"; } }'
)


def test_two_workers_share_the_listener_and_both_take_connections(proxy) -> None:
    p = proxy(RETURN_OK)
    answer = status(p)
    pids = [w["pid"] for w in answer["workers"]]
    assert len(set(pids)) == 2 and answer["pid"] not in pids
    conns = held(p.ports[0], 40)
    try:
        split = per_worker(p)
        assert sum(split) == 40 and min(split) >= 8, split  # both workers serve
        assert status(p)["connections"] == 40
    finally:
        for conn in conns:
            conn.close()


def test_a_worker_killed_under_load_is_replaced_and_new_connections_never_fail(
    daemon: Make,
) -> None:
    d = daemon(workers=2)
    deployed(d, "v1")
    before = [w["pid"] for w in d.status()["workers"]]
    with Load(d.port, clients=10, limit=40, slow_ms=0, check_reuse=True) as load:
        load.wait_requests(100)
        os.kill(before[0], signal.SIGKILL)
        wait_for(
            lambda: len({w["pid"] for w in d.status()["workers"]} - set(before)) == 1,
            message="the killed worker was not replaced",
        )
        load.wait_requests(200)
    # only requests on the killed worker's own connections can fail: at most one per client
    assert len(load.failed) <= 10, load.failed
    for _ in range(40):  # new connections: the survivors and the replacement serve them
        assert d.get() == (200, "v1")
    log = d.process.stderr()
    assert f"[alert] {d.process.proc.pid if d.process.proc else 0}#0: worker process " in log
    assert f"worker process {before[0]} exited on signal 9" in log
    after = d.status()
    assert after["worker_restarts"] == 1 and before[1] in [w["pid"] for w in after["workers"]]


def test_a_deploy_with_two_workers_fails_no_request_and_drains_both(daemon: Make) -> None:
    d = daemon(workers=2, verify="300ms", drain_timeout="20s")
    deployed(d, "v1")
    # slow requests are in flight in both workers when the switch comes: the old release
    # may only stop once every worker has finished its own
    with Load(d.port, clients=12, limit=60, slow_ms=800) as load:
        load.wait_requests(40)
        wait_for(  # each client reconnects now and then: a moment may find a worker idle
            lambda: all(int(w["connections"] or 0) > 0 for w in d.status()["workers"]),
            message="a worker holds no connection",
        )
        started = time.monotonic()
        done = d.cli("deploy", "web", "--release", "v2", "--json")
        assert done.returncode == 0, done.stdout + done.stderr
        load.wait_requests(60)
    assert load.failed == [], load.failed[:5]
    assert [r for r, t in load.first_seen.items() if t > started] == ["v2"]
    drained = [json.loads(line) for line in done.stdout.splitlines() if '"drained"' in line]
    assert drained, done.stdout
    for _ in range(20):  # fresh connections, whichever worker takes them: the new release
        assert d.get() == (200, "v2")


def test_a_reload_reaches_every_worker_without_a_failed_request(proxy) -> None:
    p = proxy(RETURN_OK)
    port = p.ports[0]
    before = [w["pid"] for w in status(p)["workers"]]
    with Load(port, clients=8, limit=30, slow_ms=0) as load:
        load.wait_requests(50)
        p.config.write_text(p.config.read_text().replace('"ok\\n"', '"new\\n"'))
        done = p.cli("reload")
        assert done.returncode == 0, done.stdout + done.stderr
        load.stop()
    # Load counts any 200; every new connection, whichever worker takes it, has the new text
    assert [f for f in load.failed if "status" not in f] == []
    for _ in range(30):
        assert get(port) == (200, "new\n")
    assert [w["pid"] for w in status(p)["workers"]] == before  # workers are kept
    text = p.cli("status")
    assert f"2 workers (pid and connections): {before[0]} (" in text.stdout, text.stdout


def test_a_reload_that_changes_worker_processes_starts_or_stops_the_difference(proxy) -> None:
    p = proxy(RETURN_OK)
    before = [w["pid"] for w in status(p)["workers"]]
    p.config.write_text(p.config.read_text().replace("worker_processes 2;", "worker_processes 3;"))
    assert p.cli("reload").returncode == 0
    three = [w["pid"] for w in status(p)["workers"]]
    assert three[:2] == before and len(set(three)) == 3
    assert get(p.ports[0]) == (200, "ok\n")
    p.config.write_text(p.config.read_text().replace("worker_processes 3;", "worker_processes 1;"))
    assert p.cli("reload").returncode == 0  # one worker process is still a worker process
    assert [w["pid"] for w in status(p)["workers"]] == before[:1]
    assert get(p.ports[0]) == (200, "ok\n")
    p.config.write_text(p.config.read_text().replace("worker_processes 1;", "worker_processes 2;"))
    assert p.cli("reload").returncode == 0
    again = [w["pid"] for w in status(p)["workers"]]
    assert again[0] == before[0] and len(set(again)) == 2
    for gone in three[1:]:
        wait_for(lambda gone=gone: not Path(f"/proc/{gone}/status").exists() or "Z" in _state(gone))
    assert "exited" not in p.stderr()  # a worker stopped by a reload is no death to report
    p.config.write_text("master_process off;\n" + p.config.read_text())  # into nonstop's own
    refused = p.cli("reload")
    assert refused.returncode == 2
    assert '"master_process" cannot change on reload' in refused.stdout + refused.stderr
    assert [w["pid"] for w in status(p)["workers"]] == again


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return "gone"


def test_tls_and_websockets_are_served_by_every_worker(tmp_path: Path) -> None:
    backend = RecordingBackend(name="b1").start()
    site = Site(tmp_path, backend)
    try:
        site.issue("site", "example.com", "www.example.com")
        site.issue("api", "*.api.test")
        site.start("worker_processes 2;\n" + site.config())
        assert site.process is not None
        clients = [site.connect() for _ in range(12)]
        for client in clients:
            code, _, _ = client.get("/hello")
            assert code == 200
        tunnels = []
        for i in range(12):
            tls = site.tls_socket()
            tls.sendall(
                b"GET /upgrade HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
                b"Connection: Upgrade\r\n\r\n"
            )
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = tls.recv(65536)
                assert chunk, head
                head += chunk
            assert head.startswith(b"HTTP/1.1 101"), head
            frame = b"frame-%d" % i * 1000
            tls.sendall(frame)
            echoed = b""
            while len(echoed) < len(frame):
                echoed += tls.recv(65536)
            assert echoed == frame
            tunnels.append(tls)
        split = per_worker(site.process)
        assert sum(split) == 24 and min(split) > 0, split
        for connection in [*clients, *tunnels]:
            connection.close()
    finally:
        site.stop()
        backend.stop()


# the client sends an empty User-Agent: nginx logs it as "", an absent Referer as "-"
COMBINED = re.compile(r'^127\.0\.0\.1 - - \[[^\]]+\] "GET /(\d+)-(x+) HTTP/1\.1" 200 3 "-" ""$')


def test_workers_write_one_access_log_without_torn_lines(proxy, tmp_path: Path) -> None:
    log = tmp_path / "access.log"
    p = proxy(
        f"server {{ listen 127.0.0.1:{{port}}; access_log {log};"
        ' location / { return 200 "ok\\n"; } }'
    )
    port = p.ports[0]
    pad = "x" * 3000  # lines near PIPE_BUF, in batches far above it
    failures: list[str] = []

    # both workers write to the log (each connection's first request is logged: "GET /")
    conns = held_by_every_worker(p, port, 6)
    threads = len(conns)
    per_thread = 1800 // threads

    def client(n: int) -> None:
        conn = conns[n]
        for i in range(per_thread):
            conn.request("GET", f"/{n * per_thread + i}-{pad}", headers={"User-Agent": ""})
            resp = conn.getresponse()
            if resp.read() != b"ok\n":
                failures.append(str(resp.status))
        conn.close()

    workers = [threading.Thread(target=client, args=(n,)) for n in range(threads)]
    for thread in workers:
        thread.start()
    for thread in workers:
        thread.join(120)
    assert failures == []
    p.stop()  # flushes every worker's buffer
    lines = [
        line for line in log.read_text(encoding="latin-1").splitlines() if "GET / " not in line
    ]
    matched = [COMBINED.match(line) for line in lines]
    torn = [line[:120] for line, m in zip(lines, matched, strict=True) if m is None]
    assert torn == []
    numbers = sorted(int(m.group(1)) for m in matched if m is not None)
    assert numbers == list(range(per_thread * threads))
    assert all(len(m.group(2)) == len(pad) for m in matched if m is not None)


def _soft_open_files(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    [line] = [row for row in limits.splitlines() if row.startswith("Max open files")]
    return int(line.split()[3])


def test_worker_rlimit_nofile_sets_every_process_limit(proxy) -> None:
    p = proxy(RETURN_OK, main="worker_processes 2;\nworker_rlimit_nofile 3000;")
    assert p.proc is not None
    pids = [p.proc.pid, *(w["pid"] for w in status(p)["workers"])]
    assert [_soft_open_files(pid) for pid in pids] == [3000, 3000, 3000]


def test_worker_cpu_affinity_and_priority_bind_each_worker_and_follow_a_reload(proxy) -> None:
    allowed = sorted(os.sched_getaffinity(0))
    first, last = allowed[0], allowed[-1]

    def mask(cpu: int) -> str:
        return "1" + "0" * cpu

    main = f"worker_processes 2;\nworker_cpu_affinity {mask(first)} {mask(last)};\n"
    p = proxy(RETURN_OK, main=main + "worker_priority 5;")
    pids = [w["pid"] for w in status(p)["workers"]]
    # by index, the first mask and the second: the order status lists them in may differ
    assert sorted(sorted(os.sched_getaffinity(pid)) for pid in pids) == sorted([[first], [last]])
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [5, 5]
    assert p.proc is not None and len(os.sched_getaffinity(p.proc.pid)) == len(allowed)
    assert f"using CPU {last}" in p.stderr()
    # a reload without the binding gives each worker every CPU back; a new priority applies
    p.config.write_text(p.config.read_text().replace(main, "worker_processes 2;\n"))
    p.config.write_text(p.config.read_text().replace("worker_priority 5;", "worker_priority 10;"))
    assert p.cli("reload").returncode == 0
    assert [w["pid"] for w in status(p)["workers"]] == pids  # the same workers
    assert [sorted(os.sched_getaffinity(pid)) for pid in pids] == [allowed, allowed]
    assert [os.getpriority(os.PRIO_PROCESS, pid) for pid in pids] == [10, 10]
    assert get(p.ports[0]) == (200, "ok\n")


def test_a_worker_that_does_not_apply_a_reload_is_killed_and_replaced_from_it(proxy) -> None:
    """A worker stopped with SIGSTOP cannot hold the reload: after APPLY_LIMIT it is killed,
    the reload is done, and its replacement serves the new config."""
    p = proxy(RETURN_OK)
    pids = [w["pid"] for w in status(p)["workers"]]
    os.kill(pids[0], signal.SIGSTOP)
    try:
        p.config.write_text(p.config.read_text().replace('"ok\\n"', '"new\\n"'))
        started = time.monotonic()
        done = p.cli("reload", timeout=60)
        took = time.monotonic() - started
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pids[0], signal.SIGCONT)
    assert done.returncode == 0, done.stdout + done.stderr
    assert took >= APPLY_LIMIT - 1
    assert f"worker process {pids[0]} did not answer apply in {APPLY_LIMIT:.0f} s: killed" in (
        p.stderr()
    )
    wait_for(
        lambda: (
            len(status(p)["workers"]) == 2
            and pids[0] not in [w["pid"] for w in status(p)["workers"]]
        ),
        message="not replaced",
    )
    assert pids[1] in [w["pid"] for w in status(p)["workers"]]
    conns = held_by_every_worker(p, p.ports[0], 4)  # every worker answered "new"
    for conn in conns:
        conn.request("GET", "/")
        assert conn.getresponse().read() == b"new\n"
        conn.close()


@pytest.mark.parametrize("workers", [1, 2])
def test_out_of_descriptors_accepting_pauses_logs_and_resumes(proxy, workers: int) -> None:
    """At EMFILE: open connections keep being served, new ones wait in the queue (none is
    refused or closed unanswered), one log line a second, and accepting resumes alone."""
    p = proxy(RETURN_OK, main=f"worker_processes {workers};\nworker_rlimit_nofile 64;")
    port = p.ports[0]
    started = time.monotonic()
    socks = []
    for _ in range(120 * workers):  # far more than 64 descriptors per process allow
        sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        sock.sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        socks.append(sock)
    wait_for(
        lambda: "accept() failed (24: Too many open files)" in p.stderr(),
        message="no accept() failure logged",
    )
    answered: list[socket.socket] = []
    while True:  # the answers that come while descriptors are exhausted
        ready, _, _ = select.select([s for s in socks if s not in answered], [], [], 0.5)
        if not ready:
            break
        answered += ready
    for sock in answered:
        assert sock.recv(4096).startswith(b"HTTP/1.1 200")
    waiting = [s for s in socks if s not in answered]
    assert answered and waiting
    # the connections already open keep being served
    answered[0].sendall(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
    assert answered[0].recv(4096).startswith(b"HTTP/1.1 200")
    for sock in answered:
        sock.close()
    # descriptors are free again: every waiting connection is accepted and answered
    for sock in waiting:
        sock.settimeout(15)
        data = sock.recv(4096)
        assert data.startswith(b"HTTP/1.1 200"), data
        sock.close()
    elapsed = time.monotonic() - started
    lines = p.stderr().count("accept() failed (24: Too many open files)")
    assert 1 <= lines <= workers * (elapsed + 1), (lines, elapsed)  # one a second at most
    assert "[crit]" in p.stderr()


def test_workers_exit_by_themselves_when_the_control_process_is_killed(proxy) -> None:
    p = proxy(RETURN_OK)
    pids = [w["pid"] for w in status(p)["workers"]]
    assert p.proc is not None
    os.kill(p.proc.pid, signal.SIGKILL)
    p.proc.wait(10)

    def gone() -> bool:
        return not any(Path(f"/proc/{pid}").exists() for pid in pids)

    wait_for(gone, message=f"workers {pids} outlived their control process")
    for pid in pids:  # each says why it leaves
        assert f"worker process {pid}: the control process is gone" in p.stderr()


@pytest.mark.skipif(
    shutil.which("systemd-socket-activate") is None, reason="systemd-socket-activate missing"
)
def test_socket_activation_gives_worker_0_the_socket_and_the_others_join_it(
    tmp_path: Path,
) -> None:
    """systemd's socket serves, the other worker's socket is in its SO_REUSEPORT group, and
    a socket made without SO_REUSEPORT is refused with what to do."""
    d = AppDaemon(tmp_path / "d", pyapp_command(), workers=2, verify="200ms")
    activated = SocketActivated(d, reuse_port=True)
    try:
        activated.start()
        deployed(d, "v1")
        assert len(d.status()["workers"]) == 2
        for _ in range(20):
            assert d.get() == (200, "v1")
        activated.kill(signal.SIGTERM)
        activated.sock.close()
        activated.sock = socket.create_server(("127.0.0.1", d.port), backlog=511)
        with pytest.raises(RuntimeError, match=r"set ReusePort=yes in the \.socket unit"):
            activated.start(timeout=10)
        d.write(pyapp_command(), workers=1)  # one worker takes it as it is (ReusePort=no)
        activated.start()
        for _ in range(5):
            assert d.get() == (200, "v1")
        d.write(pyapp_command(), workers=2)
        other = free_port()  # and one more server, which the refused config must not start
        with d.config.open("a") as conf:
            conf.write(
                f'\n[[servers]]\nlisten = ["127.0.0.1:{other}"]\nreturn = {{ code = 204 }}\n'
            )
        refused = d.cli("reload")
        assert refused.returncode != 0 and "set ReusePort=yes" in refused.stdout + refused.stderr
        assert len(d.status()["workers"]) == 1 and d.get() == (200, "v1")
        with pytest.raises(ConnectionRefusedError):  # no worker applied any of it
            socket.create_connection(("127.0.0.1", other), timeout=5).close()
    finally:
        activated.stop()
        stop_leftover_apps(d.dir / "state")


def test_workers_write_one_gzip_buffered_log_zcat_reads_whole(proxy, tmp_path: Path) -> None:
    log = tmp_path / "access.log.gz"
    p = proxy(
        "log_format n '$uri $status';"
        f"server {{ listen 127.0.0.1:{{port}}; access_log {log} n buffer=2k gzip=5;"
        ' location / { return 200 "ok\\n"; } }'
    )
    port = p.ports[0]
    conns = held_by_every_worker(p, port, 2)
    threads = len(conns)
    per_thread = 400 // threads
    for n, conn in enumerate(conns):
        for i in range(per_thread):
            conn.request("GET", f"/{n * per_thread + i}-{'y' * 200}")
            assert conn.getresponse().read() == b"ok\n"
        conn.close()
    p.stop()  # each worker writes what its buffer holds
    lines = gzip.decompress(log.read_bytes()).decode().splitlines()
    numbered = sorted(int(line[1:].split("-")[0]) for line in lines if line != "/ 200")
    assert numbered == list(range(per_thread * threads))
    assert all(line.endswith("y" * 200 + " 200") for line in lines if line != "/ 200")


def test_a_worker_that_cannot_be_started_is_named_with_the_interpreter(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The interpreter a worker runs on cannot be executed (a venv under a directory the
    user cannot enter): the error names it, not only "[Errno 13] Permission denied"."""
    import asyncio

    from nonstop.config import load
    from nonstop.workers import engine as workers_engine

    config_file = tmp_path / "nonstop.toml"
    config_file.write_text(
        f'workers = 2\nstate_dir = "{tmp_path / "state"}"\n'
        f'[[servers]]\nlisten = ["127.0.0.1:{free_port()}"]\n'
        "return = { code = 204 }\n"
    )
    python = tmp_path / "python3"
    python.write_bytes(b"")  # there, but not executable
    python.chmod(0o644)
    monkeypatch.setattr(workers_engine.sys, "executable", str(python))
    engine = workers_engine.WorkersEngine(load(str(config_file)))

    async def main() -> str:
        try:
            await engine.start()
        except OSError as exc:
            return str(exc)
        finally:
            await engine.shutdown(0.1)
        return "started"

    said = asyncio.run(main())
    assert said == f"cannot start a worker process: {python}: Permission denied"
