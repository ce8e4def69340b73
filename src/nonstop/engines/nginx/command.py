"""The nginx binary behind a small interface, and a fake of it for unit tests.

Five things are asked of nginx: check a config (``nginx -t``), start a master in the
foreground under a prefix -- or attach to one the system already runs, found through its
pid file --, take a signal, and list the master's worker processes.  The
engine gets an ``NginxCommand`` through its constructor (as ingress-nginx's controller
gets its ``NginxExecTester``), so its decisions are tested against ``FakeNginx`` and the
real binary only in the integration tests.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import shutil
import signal
import socket
import struct
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Final, Protocol

from nonstop.errors import NonstopError

__all__ = [
    "AttachFailed",
    "AttachedMaster",
    "CheckResult",
    "FakeMaster",
    "FakeNginx",
    "Master",
    "NginxCommand",
    "SystemNginx",
    "children",
    "established",
    "established_to",
    "find_nginx",
    "master_conf",
    "process_title",
    "read_pid",
    "retiring",
]


class AttachFailed(NonstopError):
    """No nginx master nonstop may drive behind the configured pid file (and why)."""


@dataclass(frozen=True, slots=True)
class CheckResult:
    """``nginx -t``: whether it passed, and what nginx said (its own words)."""

    ok: bool
    output: str


class Master(Protocol):
    """A running nginx master (``asyncio.subprocess.Process`` is one)."""

    @property
    def pid(self) -> int: ...

    @property
    def returncode(self) -> int | None: ...

    async def wait(self) -> int: ...


class NginxCommand(Protocol):
    async def check(self, prefix: str, conf: str, error_log: str) -> CheckResult: ...

    async def start(self, prefix: str, conf: str, error_log: str, stderr: str) -> Master: ...

    def attach(self, pid_file: str, conf: str) -> Master: ...

    def signal(self, pid: int, signum: int) -> None: ...

    def workers(self, master: int) -> frozenset[int]: ...

    def retiring(self, worker: int) -> bool: ...

    def connections(self, ports: frozenset[int]) -> int: ...

    def connections_to(self, peers: frozenset[tuple[str, int]]) -> int: ...


def find_nginx() -> str | None:
    """The nginx binary on PATH, or the Debian/Ubuntu one in /usr/sbin."""
    found = shutil.which("nginx")
    if found is None and os.access("/usr/sbin/nginx", os.X_OK):
        found = "/usr/sbin/nginx"
    return found


def children(pid: int, proc: str = "/proc") -> frozenset[int]:
    """The live child processes of ``pid``, read from /proc.

    ``/proc/PID/task/*/children`` when the kernel has it; otherwise every
    ``/proc/*/stat`` whose parent is ``pid`` (the field after the command in parentheses).
    """
    found: set[int] = set()
    try:
        tasks = os.listdir(f"{proc}/{pid}/task")
    except OSError:
        return frozenset()
    listed = False
    for task in tasks:
        try:
            with open(f"{proc}/{pid}/task/{task}/children") as handle:
                found.update(int(p) for p in handle.read().split())
            listed = True
        except (OSError, ValueError):
            continue
    if listed:
        return frozenset(found)
    return _scan_parent(pid, proc)


def retiring(pid: int, proc: str = "/proc") -> bool:
    """Whether an nginx worker has stopped taking requests: it exited, or it retitled
    itself "worker process is shutting down" (``ngx_worker_process_cycle`` does that as it
    closes its listening sockets and idle connections)."""
    title = process_title(pid, proc)
    return "shutting down" in title or not title


# Flags with which nginx only tests, signals or prints, and never becomes a master.
_NOT_A_MASTER: Final = frozenset({"-t", "-T", "-s", "-v", "-V", "-h", "-?", "-q"})


def master_conf(title: str, default_conf: str, cwd: str = "/") -> str | None:
    """The config file an nginx master runs, from its process title; None: not a master.

    nginx retitles its master "nginx: master process " followed by its command line
    (``ngx_setproctitle``), so ``-c`` is there when it was given; otherwise the master
    reads the path it was compiled with (``nginx -V``: ``--conf-path``).  A relative
    ``-c`` is taken from ``-p`` or the master's working directory.
    """
    head = "nginx: master process "
    if title.startswith(head):
        words = title[len(head) :].split()
    else:
        # A daemonized master writes its pid file (ngx_create_pidfile) before it retitles
        # itself (ngx_master_process_cycle): in between, /proc shows its command line.
        words = title.split()
        if not words or os.path.basename(words[0]) != "nginx" or _NOT_A_MASTER & set(words):
            return None
    conf, prefix = default_conf, cwd
    for flag, value in itertools.pairwise(words):
        if flag == "-c":
            conf = value
        elif flag == "-p":
            prefix = value
    return os.path.normpath(os.path.join(prefix, conf))


class AttachedMaster:
    """A master nonstop did not start: alive while /proc shows an nginx master there."""

    def __init__(self, pid: int, poll: float = 0.2, proc: str = "/proc") -> None:
        self.pid = pid
        self._poll = poll
        self._proc = proc
        self._code: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._code is None and not process_title(self.pid, self._proc).startswith(
            "nginx: master"
        ):
            self._code = -1  # not our child: its exit status is its parent's to read
        return self._code

    async def wait(self) -> int:
        while self.returncode is None:
            await asyncio.sleep(self._poll)
        assert self._code is not None
        return self._code


def process_title(pid: int, proc: str = "/proc") -> str:
    """A process's title as ``ps`` shows it (nginx retitles its processes); "" if gone."""
    try:
        with open(f"{proc}/{pid}/cmdline", "rb") as handle:
            return handle.read().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


def read_pid(pid_file: str) -> int:
    try:
        with open(pid_file) as handle:
            text = handle.read().strip()
    except OSError as exc:
        raise AttachFailed(f"no nginx to drive: cannot read {pid_file}: {exc.strerror}") from exc
    if not text:
        raise AttachFailed(f"no nginx to drive: {pid_file} is empty")
    if not text.isdigit():
        raise AttachFailed(f"no nginx to drive: {pid_file} holds {text[:40]!r}, not a pid")
    return int(text)


def established(ports: frozenset[int], proc: str = "/proc") -> int:
    """Open TCP connections accepted on ``ports`` (the server's side), from /proc/net.

    A connection nginx holds to an app, busy or idle in its keep-alive cache, is one of
    these until nginx closes it.
    """
    return sum(int(local.rsplit(":", 1)[1], 16) in ports for local, _ in _established(proc))


def established_to(peers: frozenset[tuple[str, int]], proc: str = "/proc") -> int:
    """Open TCP connections to ``peers`` (IP address, port): the client's side, as nginx
    holds them to the servers of an upstream on other hosts, busy or idle in its
    keep-alive cache."""
    wanted = {_proc_address(ip, port) for ip, port in peers}
    return sum(remote in wanted for _, remote in _established(proc))


def _established(proc: str) -> Iterator[tuple[str, str]]:
    """(local, remote) of every ESTABLISHED TCP connection, as /proc/net/tcp{,6} print
    them; ``st`` 01 is ESTABLISHED (include/net/tcp_states.h)."""
    for table in ("tcp", "tcp6"):
        try:
            with open(f"{proc}/net/{table}") as handle:
                next(handle, None)  # the header
                for line in handle:
                    fields = line.split()
                    if len(fields) > 3 and fields[3] == "01":
                        yield fields[1], fields[2]
        except OSError:
            continue


def _proc_address(ip: str, port: int) -> str:
    """``ip:port`` as /proc/net/tcp{,6} prints it: 32-bit words in host byte order, hex."""
    family = socket.AF_INET6 if ":" in ip else socket.AF_INET
    packed = socket.inet_pton(family, ip)
    words = struct.unpack(f"={len(packed) // 4}I", packed)
    return "".join(f"{word:08X}" for word in words) + f":{port:04X}"


def _scan_parent(pid: int, proc: str) -> frozenset[int]:
    found: set[int] = set()
    for name in os.listdir(proc):
        if not name.isdigit():
            continue
        try:
            with open(f"{proc}/{name}/stat") as handle:
                stat = handle.read()
        except OSError:
            continue
        fields = stat[stat.rfind(")") + 2 :].split()
        if len(fields) > 1 and fields[1] == str(pid):
            found.add(int(name))
    return frozenset(found)


class SystemNginx:
    """The real binary.  Every run names the prefix, the config and the early error log,
    so nothing touches the paths nginx was compiled with."""

    def __init__(self, binary: str) -> None:
        self.binary = binary

    async def check(self, prefix: str, conf: str, error_log: str) -> CheckResult:
        process = await asyncio.create_subprocess_exec(
            *self._argv(prefix, conf, error_log),
            "-t",
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )
        out, _ = await process.communicate()
        return CheckResult(process.returncode == 0, out.decode(errors="replace").strip())

    async def start(self, prefix: str, conf: str, error_log: str, stderr: str) -> Master:
        with open(stderr, "ab") as handle:
            return await asyncio.create_subprocess_exec(
                *self._argv(prefix, conf, error_log),
                "-g",
                "daemon off;",
                stdin=asyncio.subprocess.DEVNULL,
                stdout=handle,
                stderr=handle,
                start_new_session=True,  # the terminal's ^C is for nonstop, which stops nginx
            )

    def attach(self, pid_file: str, conf: str) -> Master:
        """The running master behind ``pid_file``, if it is nginx and runs ``conf``.

        Refused, with the reason, when the pid file is missing, the process is gone or is
        not an nginx master, or its config is another file (a reload would not read ours).
        """
        pid = read_pid(pid_file)
        title = process_title(pid)
        if not title:
            raise AttachFailed(f"no nginx to drive: process {pid} (from {pid_file}) is not running")
        runs = master_conf(title, self.default_conf(), _cwd(pid))
        if runs is None:
            raise AttachFailed(f"process {pid} (from {pid_file}) is not an nginx master: {title!r}")
        if os.path.realpath(runs) != os.path.realpath(conf):
            raise AttachFailed(
                f"nginx master {pid} (from {pid_file}) runs {runs}, not nonstop's {conf}: "
                f"start it with `-c {conf}`, or make {runs} a symlink to it"
            )
        return AttachedMaster(pid)

    def default_conf(self) -> str:
        """The config path this nginx binary was compiled with (``nginx -V``)."""
        out = subprocess.run(
            [self.binary, "-V"], capture_output=True, text=True, check=False
        ).stderr
        for word in out.split():
            if word.startswith("--conf-path="):
                return word.split("=", 1)[1]
        return "conf/nginx.conf"  # nginx's own default, under its prefix

    def signal(self, pid: int, signum: int) -> None:
        os.kill(pid, signum)

    def workers(self, master: int) -> frozenset[int]:
        return children(master)

    def retiring(self, worker: int) -> bool:
        return retiring(worker)

    def connections(self, ports: frozenset[int]) -> int:
        return established(ports)

    def connections_to(self, peers: frozenset[tuple[str, int]]) -> int:
        return established_to(peers)

    def _argv(self, prefix: str, conf: str, error_log: str) -> list[str]:
        return [self.binary, "-p", prefix.rstrip("/") + "/", "-c", conf, "-e", error_log]


@dataclass
class FakeMaster:
    pid: int
    returncode: int | None = None
    exited: asyncio.Event = field(default_factory=asyncio.Event)

    async def wait(self) -> int:
        await self.exited.wait()
        assert self.returncode is not None
        return self.returncode

    def exit(self, code: int) -> None:
        self.returncode = code
        self.exited.set()


class FakeNginx:
    """Records every check, start and signal; workers are pids the test can end.

    A reload (SIGHUP) starts one new worker and leaves the old ones running until the
    test calls ``finish_old`` (or immediately with ``old_exit_at_once``), which is the
    window the deployer's drain must wait out.  ``reject`` makes ``check`` fail any config
    containing that text, with an nginx-style message.
    """

    def __init__(self) -> None:
        self.checked: list[str] = []
        self.started: list[str] = []
        self.signals: list[tuple[int, int]] = []
        self.reject: str | None = None
        self.old_exit_at_once = False
        self.ignore_reload = False
        self.master: FakeMaster | None = None
        self.system_running = False  # attach finds a master (one the test "started")
        self.open_connections: dict[int, int] = {}  # port -> connections nginx holds
        self.open_to: dict[tuple[str, int], int] = {}  # peer -> connections nginx holds
        self.attached: list[str] = []
        self.current: set[int] = set()
        self.old: set[int] = set()
        self._next = 5000

    async def check(self, prefix: str, conf: str, error_log: str) -> CheckResult:
        text = _read_tree(conf)
        self.checked.append(text)
        if self.reject is not None and self.reject in text:
            return CheckResult(
                False,
                f'nginx: [emerg] unknown directive "{self.reject}" in {conf}:1\n'
                f"nginx: configuration file {conf} test failed",
            )
        return CheckResult(True, f"nginx: configuration file {conf} test is successful")

    async def start(self, prefix: str, conf: str, error_log: str, stderr: str) -> Master:
        self.started.append(_read_tree(conf))
        self.master = FakeMaster(self._pid())
        self.current = {self._pid()}
        return self.master

    def attach(self, pid_file: str, conf: str) -> Master:
        if not self.system_running:
            raise AttachFailed(f"no nginx to drive: cannot read {pid_file}: No such file")
        if self.master is None or self.master.returncode is not None:
            self.master = FakeMaster(self._pid())
            self.current = {self._pid()}
        self.attached.append(conf)
        return self.master

    def signal(self, pid: int, signum: int) -> None:
        self.signals.append((pid, signum))
        assert self.master is not None and pid == self.master.pid
        if signum == signal.SIGHUP and not self.ignore_reload:
            self.old |= self.current
            self.current = {self._pid()}
            if self.old_exit_at_once:
                self.old.clear()
        elif signum in (signal.SIGQUIT, signal.SIGTERM, signal.SIGKILL):
            self.current.clear()
            self.old.clear()
            self.master.exit(0)

    def workers(self, master: int) -> frozenset[int]:
        return frozenset(self.current | self.old)

    def retiring(self, worker: int) -> bool:
        return worker not in self.current

    def connections(self, ports: frozenset[int]) -> int:
        return sum(n for port, n in self.open_connections.items() if port in ports)

    def connections_to(self, peers: frozenset[tuple[str, int]]) -> int:
        return sum(n for peer, n in self.open_to.items() if peer in peers)

    def finish_old(self) -> None:
        self.old.clear()

    def _pid(self) -> int:
        self._next += 1
        return self._next


def _cwd(pid: int) -> str:
    try:
        return os.readlink(f"/proc/{pid}/cwd")
    except OSError:
        return "/"


def _read_tree(conf: str) -> str:
    """The text a check or start would have read."""
    with open(conf) as handle:
        return handle.read()
