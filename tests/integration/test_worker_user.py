"""nginx.conf's ``user``: nonstop started as root runs its workers as that user.

A real nonstop, started as root (as the tests run), with every file it needs where only
root can reach it: the config's directory is pytest's 0700 temp directory, the key is
0600, the logs go to a 0700 directory.  The workers must serve TLS from that key, log to
those files, spool bodies under the state directory (0700, root's), pick up a new
certificate on reload and new log files on SIGUSR1, and still be unable to read a file
only root may read: the proof that they are not root.
"""

from __future__ import annotations

import contextlib
import ctypes
import grp
import http.client
import http.server
import os
import pwd
import signal
import socket
import ssl
import stat
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import trustme
from tests.integration.test_workers import get, status, wait_for
from tests.support.backends import RecordingBackend, free_port
from tests.support.proc import NonstopProcess
from tests.support.restarts import wait_gone

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="a worker's user needs root")

NOBODY = pwd.getpwnam("nobody")
USER = f"user nobody {grp.getgrgid(NOBODY.pw_gid).gr_name};"  # Debian's nogroup
BIG = 16 * 1024 * 1024  # more than the kernel holds for a client reading nothing


class BigBackend(http.server.ThreadingHTTPServer):
    """Answers every GET with ``BIG`` bytes; ``written`` is set once it wrote them all."""

    daemon_threads = True

    def __init__(self) -> None:
        self.written = threading.Event()
        super().__init__(("127.0.0.1", 0), _BigHandler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


class _BigHandler(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", str(BIG))
        self.end_headers()
        self.wfile.write(bytes(range(256)) * (BIG // 256))
        self.wfile.flush()
        assert isinstance(self.server, BigBackend)
        self.server.written.set()

    def log_message(self, *args: Any) -> None:
        pass


class Site:
    """Certificates, logs and a secret file only root may read, and the config serving
    them; ``start`` runs nonstop on it."""

    def __init__(self, tmp: Path, backend: RecordingBackend, big: BigBackend) -> None:
        self.dir = tmp
        self.ca = trustme.CA()
        self.port = free_port()
        self.tls = self.dir / "tls"
        self.logs = self.dir / "logs"
        for private in (self.tls, self.logs, self.dir / "secret"):
            private.mkdir(mode=0o700)
        (self.dir / "secret" / "key.txt").write_text("root only\n")
        self.issue("site", "one.example")
        self.path = self.dir / "nginx.conf"
        self.backend = backend
        self.big = big
        self.process: NonstopProcess | None = None
        self.upgraded: list[int] = []  # daemons started by `nonstop upgrade`

    def issue(self, stem: str, name: str) -> None:
        cert = self.ca.issue_cert(name)
        crt, key = self.tls / f"{stem}.crt", self.tls / f"{stem}.key"
        crt.write_bytes(b"".join(p.bytes() for p in cert.cert_chain_pems))
        key.write_bytes(cert.private_key_pem.bytes())
        key.chmod(0o600)

    def config(self, main: str, stem: str = "site") -> str:
        return f"""{main}
error_log {self.logs}/error.log info;
events {{}}
http {{
  access_log {self.logs}/access.log;
  upstream app {{ server {self.backend.address}; }}
  server {{
    listen 127.0.0.1:{self.port} ssl;
    ssl_certificate {self.tls}/{stem}.crt;
    ssl_certificate_key {self.tls}/{stem}.key;
    client_body_buffer_size 1k;
    location = /local {{ return 200 "local\\n"; }}
    location /upload {{ proxy_pass http://app; }}
    location /big {{ proxy_pass http://{self.big.address}; }}
    location /secret/ {{ alias {self.dir}/secret/; }}
  }}
}}
"""

    def start(self, main: str) -> NonstopProcess:
        self.path.write_text(self.config(main))
        self.process = NonstopProcess(self.path, [self.port], ["--shutdown-timeout", "5s"])
        return self.process.start()

    def context(self) -> ssl.SSLContext:
        context = ssl.create_default_context()
        context.check_hostname = False  # 127.0.0.1; the chain is still verified
        self.ca.configure_trust(context)
        return context

    def connect(self) -> http.client.HTTPSConnection:
        return http.client.HTTPSConnection(
            "127.0.0.1", self.port, timeout=10, context=self.context()
        )

    def get(self, path: str) -> tuple[int, bytes, str]:
        """The status, the body, and the name on the certificate served."""
        conn = self.connect()
        try:
            conn.request("GET", path, headers={"Host": "one.example"})
            resp = conn.getresponse()
            body = resp.read()
            assert conn.sock is not None
            return resp.status, body, served_name(conn.sock)
        finally:
            conn.close()


def served_name(sock: Any) -> str:
    """The DNS name on the certificate the server sent."""
    return str(next(v for k, v in sock.getpeercert()["subjectAltName"] if k == "DNS"))


@pytest.fixture
def site(tmp_path: Path) -> Iterator[Site]:
    backend = RecordingBackend("app").start()
    big = BigBackend()
    made = Site(tmp_path, backend, big)
    yield made
    if made.process is not None:
        made.process.stop()
    for pid in made.upgraded:  # a nonstop an upgrade started: stopped as Ctrl-C would
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGINT)
        if not wait_gone(pid, 20):
            os.kill(pid, signal.SIGKILL)
    big.shutdown()
    big.server_close()
    backend.stop()


def ids(pid: int) -> dict[str, list[int]]:
    """The real, effective, saved and file-system user and group ids, and the groups."""
    found: dict[str, list[int]] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("Uid", "Gid", "Groups"):
            found[key] = [int(n) for n in value.split()]
    return found


def workers(process: NonstopProcess) -> list[int]:
    return [int(w["pid"]) for w in status(process)["workers"]]


def holds(process: NonstopProcess, pid: int) -> bool:
    """Whether worker ``pid`` holds a client connection now."""
    each = {int(w["pid"]): int(w["connections"] or 0) for w in status(process)["workers"]}
    return each.get(pid, 0) > 0


def open_files(pids: list[int]) -> list[str]:
    """What the descriptors of processes ``pids`` point to."""
    links = []
    for pid in pids:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            with contextlib.suppress(FileNotFoundError):
                links.append(os.readlink(f"/proc/{pid}/fd/{fd}"))
    return links


def assert_nobody(pid: int) -> None:
    assert ids(pid) == {
        "Uid": [NOBODY.pw_uid] * 4,
        "Gid": [NOBODY.pw_gid] * 4,
        "Groups": [NOBODY.pw_gid],
    }, ids(pid)


def test_workers_run_as_the_user_and_serve_what_only_root_may_read(site: Site) -> None:
    p = site.start(USER + "\nworker_processes 2;")
    assert p.proc is not None
    assert ids(p.proc.pid)["Uid"] == [0, 0, 0, 0]  # the control process keeps root
    pids = workers(p)
    assert len(pids) == 2
    for pid in pids:
        assert_nobody(pid)

    # TLS from a 0600 key in a 0700 directory, read by the control process
    assert site.get("/local") == (200, b"local\n", "one.example")
    # a file only root may read: the worker is refused it, as nginx's would be
    status, _body, _name = site.get("/secret/key.txt")
    assert status == 403

    # a request body past client_body_buffer_size goes to a file under the state
    # directory, which stays root's; its client_body_temp is the workers'
    body = os.urandom(256 * 1024)
    conn = site.connect()
    conn.request("POST", "/upload", body=body, headers={"Host": "one.example"})
    assert conn.getresponse().status == 200
    conn.close()
    assert site.backend.received[-1].body == body
    state = site.dir / ".nonstop"
    assert (state.stat().st_uid, stat.S_IMODE(state.stat().st_mode)) == (0, 0o700)
    temp = (state / "client_body_temp").stat()
    assert (temp.st_uid, stat.S_IMODE(temp.st_mode)) == (NOBODY.pw_uid, 0o700)

    # an answer read ahead of a client that reads nothing goes to proxy_temp: the backend
    # writes all of it while the client has not read a byte
    raw = socket.socket()
    raw.settimeout(15)
    raw.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 8192)  # no autotuning: a slow client
    raw.connect(("127.0.0.1", site.port))
    slow = site.context().wrap_socket(raw, server_hostname="one.example")
    slow.sendall(b"GET /big HTTP/1.1\r\nHost: one.example\r\nConnection: close\r\n\r\n")
    assert site.big.written.wait(15), "the answer was not read ahead"
    assert any("/proxy_temp/" in link for link in open_files(pids)), "not into a file"
    answer = b""
    while chunk := slow.recv(1 << 20):
        answer += chunk
    slow.close()
    assert answer.endswith(b"\r\n\r\n" + bytes(range(256)) * (BIG // 256))

    # the logs, in a directory only root may enter
    wait_for(lambda: "/upload" in _text(site.logs / "access.log"), message="no access log line")
    assert (site.logs / "access.log").stat().st_uid == 0

    # a reload with a new certificate: the same workers, still not root, serve it
    site.issue("next", "one.example")
    site.path.write_text(site.config(USER + "\nworker_processes 2;", "next"))
    first = (site.tls / "site.crt").read_bytes()
    assert p.cli("reload").returncode == 0
    assert workers(p) == pids
    conn = site.connect()
    conn.connect()
    assert conn.sock is not None
    served = conn.sock.getpeercert(binary_form=True)
    conn.close()
    assert served is not None and ssl.DER_cert_to_PEM_cert(served).encode() not in first
    assert ssl.DER_cert_to_PEM_cert(served) in (site.tls / "next.crt").read_text()

    # log rotation: the old file renamed, SIGUSR1, and the control process opens a new
    # one in the directory the workers cannot enter
    (site.logs / "access.log").rename(site.logs / "access.log.1")
    p.signal(signal.SIGUSR1)
    wait_for(lambda: (site.logs / "access.log").exists(), message="the access log was not reopened")
    assert site.get("/local")[0] == 200
    wait_for(lambda: "/local" in _text(site.logs / "access.log"), message="no line in the new log")

    # a worker killed: its replacement is also nobody, and serves the current certificate
    os.kill(pids[0], signal.SIGKILL)
    wait_for(lambda: len(set(workers(p)) - set(pids)) == 1, message="the worker was not replaced")
    (new,) = set(workers(p)) - set(pids)
    assert_nobody(new)
    held: list[http.client.HTTPSConnection] = []
    while not holds(p, new) and len(held) < 64:  # until the new worker took one
        conn = site.connect()
        conn.request("GET", "/local", headers={"Host": "one.example"})
        resp = conn.getresponse()
        assert (resp.status, resp.read()) == (200, b"local\n")
        assert conn.sock is not None
        served = conn.sock.getpeercert(binary_form=True)
        assert served is not None
        assert ssl.DER_cert_to_PEM_cert(served) in (site.tls / "next.crt").read_text()
        held.append(conn)
    assert holds(p, new), "no connection reached the new worker"
    for conn in held:
        conn.close()
    errors = _text(site.logs / "error.log")
    assert f"worker process {pids[0]} exited on signal 9" in errors

    # the user cannot change on reload: refused, and the workers go on as they were
    site.path.write_text(site.config("user root;\nworker_processes 2;", "next"))
    refused = p.cli("reload")
    assert refused.returncode != 0
    assert '"user" cannot change on reload' in refused.stdout + refused.stderr
    assert sorted(workers(p)) == sorted({*pids[1:], new})
    assert site.get("/local")[0] == 200


def test_with_one_worker_process_the_proxy_still_runs_apart_as_the_user(site: Site) -> None:
    p = site.start(USER + "\nworker_processes 1;")
    assert p.proc is not None
    (pid,) = workers(p)
    assert pid != p.proc.pid
    assert_nobody(pid)
    assert site.get("/local") == (200, b"local\n", "one.example")


def test_an_upgrade_is_how_workers_running_as_root_come_to_run_as_the_user(
    site: Site,
) -> None:
    """A reload cannot change the user; ``nonstop upgrade`` can: the new nonstop reads the
    config afresh, takes the sockets from the old one, and its workers give up root."""
    p = site.start("worker_processes 2;")
    assert p.proc is not None
    before = workers(p)
    for pid in before:
        assert ids(pid)["Uid"] == [0, 0, 0, 0]
    site.path.write_text(site.config(USER + "\nworker_processes 2;"))
    refused = p.cli("reload")
    assert refused.returncode != 0 and '"user" cannot change on reload' in refused.stderr
    done = p.cli("upgrade")
    assert done.returncode == 0, done.stderr
    answer = status(p)
    site.upgraded.append(int(answer["pid"]))
    assert int(answer["pid"]) != p.proc.pid
    assert p.proc.wait(30) == 0  # the old nonstop handed over and exited
    after = workers(p)
    assert len(after) == 2 and not set(after) & set(before)
    for pid in after:
        assert_nobody(pid)
    assert ids(int(answer["pid"]))["Uid"] == [0, 0, 0, 0]
    for _ in range(4):
        assert site.get("/local") == (200, b"local\n", "one.example")


def test_hundreds_of_log_files_are_all_opened_for_the_workers(site: Site) -> None:
    """More log files than one sendmsg may carry (253): the control process opens every
    one, in a directory the workers cannot enter, and hands them all over."""
    locations = "".join(
        f"    location = /l{n} {{ access_log {site.logs}/l{n}.log; return 204; }}\n"
        for n in range(300)
    )
    site.path.write_text(
        f"{USER}\nworker_processes 2;\nerror_log {site.logs}/error.log info;\n"
        f"events {{}}\nhttp {{\n  server {{\n    listen 127.0.0.1:{site.port};\n"
        f"{locations}  }}\n}}\n"
    )
    site.process = NonstopProcess(site.path, [site.port], ["--shutdown-timeout", "5s"])
    site.process.start()
    asked = (0, 127, 128, 251, 299)
    for n in asked:
        assert get(site.port, f"/l{n}") == (204, "")
    for n in asked:
        wait_for(lambda n=n: _text(site.logs / f"l{n}.log").count("\n") == 1, message=f"l{n}")
    assert len(list(site.logs.glob("l*.log"))) == 300  # each opened by the control process


def test_without_the_right_to_switch_users_nonstop_says_so_and_does_not_start(
    site: Site,
) -> None:
    """Root whose capability bounding set lacks CAP_SETUID and CAP_SETGID (a systemd unit
    that keeps CapabilityBoundingSet=CAP_NET_BIND_SERVICE) cannot become the user."""
    libc = ctypes.CDLL(None, use_errno=True)

    def drop_setuid_setgid() -> None:  # in the child, before nonstop is executed
        for capability in (6, 7):  # CAP_SETGID, CAP_SETUID
            if libc.prctl(24, capability, 0, 0, 0) != 0:  # PR_CAPBSET_DROP
                raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")

    site.path.write_text(site.config(USER + "\nworker_processes 2;"))
    process = NonstopProcess(site.path, [site.port], ["--shutdown-timeout", "5s"])
    process.preexec = drop_setuid_setgid
    with pytest.raises(RuntimeError, match="did not start"):
        process.start()
    assert process.proc is not None and process.proc.wait(10) != 0
    assert 'cannot run the workers as user "nobody": Operation not permitted' in (
        process.stderr() + _text(site.logs / "error.log")
    )


def _text(path: Path) -> str:
    return path.read_text(errors="replace") if path.exists() else ""
