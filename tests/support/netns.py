"""Test hosts on one machine: network namespaces on a bridge, each with its own real sshd.

``TestHosts(n)`` is a context manager that builds, for one test run:

- a Linux bridge in the root namespace with an address from a private /24 picked for this
  run (claimed with a file under ``/run/nonstop-testhosts`` so parallel checkouts on the
  machine never share one), so the tests and a front in the root namespace reach every host;
- per host a network namespace joined to the bridge by a veth pair, with ``lo`` and
  ``eth0`` up and the address ``.11``, ``.12``, ...;
- per host a real OpenSSH ``sshd`` (Debian's openssh-server) with its own host key and a
  client key of this run in its ``authorized_keys``, started in a private mount namespace
  where ``/srv/web`` is a bind mount of that host's own directory: every host sees the same
  paths, each backed by ``Host.root``;
- a ``known_hosts`` holding every host's key, so clients keep host-key checking on.

Everything it made is removed on exit, also when the test failed; the exit then checks that
nothing is left (``leftovers``) and raises if something is.  Resources of a run that was
killed before its exit are swept by the next run (its claim file names a dead pid).
Readiness is polled with a deadline; nothing sleeps a fixed time.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType

import pytest

__all__ = [
    "SSHD",
    "SSHD_CONFIG",
    "Host",
    "TestHosts",
    "can_create_namespaces",
    "leftovers",
    "needs_namespaces",
]

SSHD = "/usr/sbin/sshd"
CLAIMS = Path("/run/nonstop-testhosts")
PREFIX = "nst"  # every namespace, bridge and veth of these tests starts with it
SUBNET_BASE = "10.231"  # 10.231.X.0/24, X claimed per run; used only inside these namespaces
WEB_ROOT = "/srv/web"

SSHD_CONFIG = """\
Port {port}
ListenAddress {address}
HostKey {host_key}
PidFile none
AuthorizedKeysFile {authorized_keys}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
StrictModes no
UseDNS no
MaxSessions 64
MaxStartups 64:30:128
Subsystem sftp internal-sftp
"""


def can_create_namespaces() -> tuple[bool, str]:
    """Whether this machine lets the tests create namespaces, and why not."""
    if not hasattr(os, "geteuid") or not Path("/proc/self/ns/net").exists():
        return False, "network namespaces need Linux"
    if os.geteuid() != 0:
        return False, "creating network namespaces (ip netns add) needs root"
    return True, ""


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
    if check and done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} exited {done.returncode}: {done.stderr.strip()}")
    return done


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _netns_names() -> list[str]:
    out = _run("ip", "netns", "list").stdout
    return [line.split()[0] for line in out.splitlines() if line.strip()]


def _link_names() -> list[str]:
    out = _run("ip", "-o", "link", "show").stdout
    return [line.split(":")[1].strip().split("@")[0] for line in out.splitlines()]


def leftovers(token: str) -> list[str]:
    """Namespaces and links of run ``token`` that still exist."""
    tag = f"{PREFIX}{token}"
    return [n for n in _netns_names() if n.startswith(tag)] + [
        f"link {n}" for n in _link_names() if n.startswith(tag)
    ]


def _kill_netns_processes(netns: str, deadline: float) -> None:
    """Stop by pid every process still running in ``netns`` (sshd and its sessions)."""
    pids = [int(p) for p in _run("ip", "netns", "pids", netns, check=False).stdout.split()]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)
        while pids and time.monotonic() < deadline:
            pids = [p for p in pids if _pid_alive(p) and not _is_zombie(p)]
            if pids:
                time.sleep(0.01)
        deadline = time.monotonic() + 2.0


def _is_zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1].startswith("Z")
    except (OSError, IndexError):
        return True


def _remove_run(token: str) -> None:
    tag = f"{PREFIX}{token}"
    for netns in _netns_names():
        if netns.startswith(tag):
            _kill_netns_processes(netns, time.monotonic() + 5.0)
            _run("ip", "netns", "del", netns, check=False)
    for link in _link_names():
        if link.startswith(tag):
            _run("ip", "link", "del", link, check=False)


def _sweep_dead_runs() -> None:
    """Remove what runs killed before their cleanup left behind (their pid is gone)."""
    if not CLAIMS.is_dir():
        return
    for claim in CLAIMS.iterdir():
        try:
            pid_text, token, workdir = claim.read_text().split()
        except (OSError, ValueError):
            continue
        if not _pid_alive(int(pid_text)):
            _remove_run(token)
            shutil.rmtree(workdir, ignore_errors=True)
            claim.unlink(missing_ok=True)


def _claim_subnet(token: str, workdir: Path) -> tuple[str, Path]:
    """A /24 under ``SUBNET_BASE`` that no other run holds and no route uses."""
    CLAIMS.mkdir(parents=True, exist_ok=True)
    routes = _run("ip", "-4", "route", "show").stdout
    for third in secrets.SystemRandom().sample(range(256), 256):
        subnet = f"{SUBNET_BASE}.{third}"
        if f"{subnet}.0/24" in routes:
            continue
        claim = CLAIMS / subnet
        try:
            fd = os.open(claim, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            continue
        with os.fdopen(fd, "w") as handle:
            handle.write(f"{os.getpid()} {token} {workdir}\n")
        return subnet, claim
    raise RuntimeError(f"no free /24 left under {SUBNET_BASE}.0.0/16")


def _keygen(path: Path, comment: str) -> str:
    _run("ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path))
    return path.with_suffix(".pub").read_text().strip()


@dataclass
class Host:
    """One test host: a network namespace, its sshd, and its own ``/srv/web``."""

    name: str
    netns: str
    address: str
    root: Path  # what the host sees as /srv/web
    dir: Path  # its sshd's keys, config and log
    home: Path  # what the host sees as /root
    sshd: subprocess.Popen[bytes] | None = None
    veth: str = ""
    public_key: str = ""

    @property
    def destination(self) -> str:
        return f"root@{self.address}:22"

    def run(self, *argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``argv`` inside this host: its network and its mount namespace."""
        assert self.sshd is not None
        return _run(
            "nsenter", f"--target={self.sshd.pid}", "--net", "--mount", "--", *argv, check=check
        )

    def link_down(self) -> None:
        """Cut the host off the bridge (its end of the veth pair goes down)."""
        _run("ip", "link", "set", self.veth, "down")

    def link_up(self) -> None:
        _run("ip", "link", "set", self.veth, "up")

    def log(self) -> str:
        path = self.dir / "sshd.log"
        return path.read_text(errors="replace") if path.exists() else ""


class TestHosts:
    """``with TestHosts(3) as hosts:`` three hosts with sshd, removed again on exit."""

    __test__ = False  # not a pytest test class

    def __init__(self, count: int, *, ready_timeout: float = 15.0) -> None:
        self.count = count
        self.ready_timeout = ready_timeout
        self.token = secrets.token_hex(3)  # interface names stay within 15 characters
        self.tag = f"{PREFIX}{self.token}"
        self.hosts: list[Host] = []
        self.bridge = f"{self.tag}br"
        self.workdir = Path(tempfile.mkdtemp(prefix=f"nonstop-{self.tag}-"))
        self.client_key = self.workdir / "id_ed25519"
        self.known_hosts = self.workdir / "known_hosts"
        self.subnet = ""
        self._claim: Path | None = None

    def __enter__(self) -> TestHosts:
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def __iter__(self) -> Iterator[Host]:
        return iter(self.hosts)

    def __getitem__(self, index: int) -> Host:
        return self.hosts[index]

    def __len__(self) -> int:
        return len(self.hosts)

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge (where a front would listen)."""
        return f"{self.subnet}.1"

    # -- building -----------------------------------------------------------

    def _create(self) -> None:
        if not Path(SSHD).exists():
            raise RuntimeError(f"{SSHD} is missing: run scripts/system-deps.sh")
        _sweep_dead_runs()
        self.subnet, self._claim = _claim_subnet(self.token, self.workdir)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privilege separation dir
        client_public = _keygen(self.client_key, f"nonstop-tests-{self.token}")
        _run("ip", "link", "add", self.bridge, "type", "bridge")
        _run("ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge)
        _run("ip", "link", "set", self.bridge, "up")
        for index in range(self.count):
            self.hosts.append(self._add_host(index, client_public))
        self.known_hosts.write_text("".join(f"{h.address} {h.public_key}\n" for h in self.hosts))
        self._wait_ready()

    def _add_host(self, index: int, client_public: str) -> Host:
        name = f"h{index + 1}"
        netns = f"{self.tag}{name}"
        veth = f"{self.tag}v{index + 1}"
        host = Host(
            name=name,
            netns=netns,
            address=f"{self.subnet}.{11 + index}",
            root=self.workdir / name / "web",
            dir=self.workdir / name / "sshd",
            home=self.workdir / name / "home",
            veth=veth,
        )
        host.root.mkdir(parents=True)
        host.dir.mkdir(parents=True)
        host.home.mkdir(mode=0o700)
        _run("ip", "netns", "add", netns)
        _run("ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", netns)
        _run("ip", "link", "set", veth, "master", self.bridge, "up")
        inside = ("ip", "netns", "exec", netns)
        _run(*inside, "ip", "addr", "add", f"{host.address}/24", "dev", "eth0")
        _run(*inside, "ip", "link", "set", "eth0", "up")
        _run(*inside, "ip", "link", "set", "lo", "up")
        host.public_key = " ".join(_keygen(host.dir / "host_key", name).split()[:2])
        (host.dir / "authorized_keys").write_text(client_public + "\n")
        config = host.dir / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                port=22,
                address=host.address,
                host_key=host.dir / "host_key",
                authorized_keys=host.dir / "authorized_keys",
            )
        )
        host.sshd = self._start_sshd(host, config)
        return host

    def _start_sshd(self, host: Host, config: Path) -> subprocess.Popen[bytes]:
        # /srv/web must exist to be a mount point: a tmpfs over /srv (in this host's own
        # mount namespace) makes it without touching the machine's /srv.  The host also
        # gets its own empty /root, so root's login is a clean one, not this machine's
        # (bash sources ~/.bashrc for commands run by sshd).
        # The Python running the tests may live under /root (pyenv): bound into the
        # empty home first, and the home bound recursively, so the hosts can run nonstop.
        keep = "".join(
            f'mkdir -p "$5"/{shlex.quote(name)} && '
            f'mount --bind /root/{shlex.quote(name)} "$5"/{shlex.quote(name)} && '
            for name in python_under_root()
        )
        script = (
            'mount -t tmpfs -o mode=0755,size=1m tmpfs /srv && mkdir "$2" && '
            f'mount --bind "$1" "$2" && {keep}mount --rbind "$5" /root && '
            'exec "$3" -D -e -f "$4"'
        )
        with open(host.dir / "sshd.log", "ab") as log:
            return subprocess.Popen(
                [
                    *("ip", "netns", "exec", host.netns),
                    *("unshare", "--mount", "--propagation", "private"),
                    *("sh", "-c", script, "sh", str(host.root), WEB_ROOT, SSHD, str(config)),
                    str(host.home),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )

    def _wait_ready(self) -> None:
        """Until every sshd answers with its SSH banner on port 22 (polled, deadline)."""
        deadline = time.monotonic() + self.ready_timeout
        waiting = list(self.hosts)
        while waiting:
            host = waiting[0]
            assert host.sshd is not None
            if host.sshd.poll() is not None:
                raise RuntimeError(f"sshd of {host.name} exited:\n{host.log()}")
            if _banner(host.address):
                waiting.pop(0)
                continue
            if time.monotonic() > deadline:
                raise TimeoutError(f"sshd of {host.name} not ready:\n{host.log()}")
            time.sleep(0.02)

    # -- removing -----------------------------------------------------------

    def close(self) -> None:
        """Remove every process, namespace, link and file of this run; then check."""
        for host in self.hosts:
            if host.sshd is not None and host.sshd.poll() is None:
                host.sshd.terminate()
        for host in self.hosts:
            if host.sshd is not None:
                try:
                    host.sshd.wait(timeout=5)
                except subprocess.TimeoutExpired:
                    host.sshd.kill()
                    host.sshd.wait(timeout=5)
        _remove_run(self.token)
        if self._claim is not None:
            self._claim.unlink(missing_ok=True)
        shutil.rmtree(self.workdir, ignore_errors=True)
        left = leftovers(self.token)
        if left:
            raise RuntimeError(f"test hosts left behind: {', '.join(left)}")


def python_under_root() -> list[str]:
    """The entries of /root that the Python running the tests lives in (pyenv puts it
    there), which a test host's own empty /root must still show."""
    names = set()
    for path in (os.path.realpath(sys.executable), sys.base_prefix, sys.prefix):
        if path.startswith("/root/"):
            names.add(Path(path).relative_to("/root").parts[0])
    return sorted(names)


def _banner(address: str) -> bool:
    try:
        with socket.create_connection((address, 22), timeout=0.5) as sock:
            return sock.recv(8).startswith(b"SSH-")
    except OSError:
        return False


_ABLE, _WHY = can_create_namespaces()
needs_namespaces = pytest.mark.skipif(not _ABLE, reason=_WHY)
"""Mark for tests on test hosts: skipped only where namespaces cannot be created."""
