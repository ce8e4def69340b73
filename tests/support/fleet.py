"""A whole fleet on one machine: app hosts running ``nonstop run``, a front, SSH to both.

``Fleet`` builds, on ``TestHosts`` (network namespaces with sshd each):

- on every host, ``nonstop run`` inside the host's namespaces with the test app "web"
  blue-green on ports 9001/9002 and nonstop listening on the host's address, port 8080;
  the same paths on every host (``/srv/web/nonstop.toml``, ``/srv/web/state``), each
  backed by the host's own directory;
- the front: ``nonstop run`` in the root namespace with the static upstream "app" whose
  servers are the hosts' port 8080, listening on 127.0.0.1 (the load goes through it);
- an sshd in the root network namespace on the bridge's address, so the fleet deploy
  reaches the front over SSH as it would a real load balancer;
- ``fleet.toml`` naming all of it, with host keys checked.

Releases are small launchers of the test app: ``launcher(dir, name)`` writes one; it
refuses to start (exit 3) on a host that has ``/srv/web/refuse``.  Every process it
starts is stopped by its pid on ``close``, also after a failure.
"""

from __future__ import annotations

import json
import shlex
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from types import TracebackType
from typing import Any

from tests.support.apps import PYAPP
from tests.support.apps.harness import app_config
from tests.support.backends import free_port
from tests.support.netns import SSHD, SSHD_CONFIG, Host, TestHosts, python_under_root
from tests.support.proc import NonstopProcess

__all__ = ["HOST_PORT", "Fleet", "launcher", "read_until"]

HOST_PORT = 8080
APP_PORTS = (9001, 9002)
REMOTE_CONFIG = "/srv/web/nonstop.toml"
NONSTOP = str(Path(sys.executable).parent / "nonstop")

_FRONT_CONF = """
events {{}}
http {{
  access_log off;
  upstream app {{
{servers}
    keepalive 16;
  }}
  server {{
    listen 127.0.0.1:{port};
    location / {{
      proxy_pass http://app;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
    }}
  }}
}}
"""

_LAUNCHER = """\
# release {name}
import os
import runpy
import sys

if os.path.exists("/srv/web/refuse"):
    sys.exit("release {name}: refusing to start, /srv/web/refuse exists")
sys.argv = [{pyapp!r}, *sys.argv[1:]]
runpy.run_path({pyapp!r}, run_name="__main__")
"""


def launcher(where: Path, name: str) -> Path:
    """A release: ``where/name/app.py``, the test app that refuses on a marked host."""
    path = where / name / "app.py"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(_LAUNCHER.format(name=name, pyapp=str(PYAPP)))
    return path


def read_until(
    process: subprocess.Popen[str], event: str, host: str | None = None
) -> list[dict[str, Any]]:
    """The ``--json`` events of a running ``nonstop fleet ...`` up to and including the
    first ``event`` (on ``host``); an AssertionError when the command ends before it.
    Bounded by the command's own timeouts: its output ends when it does."""
    assert process.stdout is not None
    seen: list[dict[str, Any]] = []
    for line in process.stdout:
        seen.append(json.loads(line))
        if (seen[-1]["event"], seen[-1].get("host")) == (event, host):
            return seen
    raise AssertionError(f"the command ended before {event} on {host}: {seen}")


class Fleet:
    """Daemons on ``hosts`` and a front, for one test; ``close`` stops them all."""

    def __init__(
        self,
        hosts: TestHosts,
        work: Path,
        verify: str = "300ms",
        hold_timeout: str = "10m",
        admin_sockets: dict[int, str] | None = None,
    ) -> None:
        self.hosts = hosts
        self.admin_sockets = admin_sockets or {}  # host index -> its daemon's [admin] socket
        self.work = work
        self.verify = verify
        self.hold_timeout = hold_timeout
        self.daemons: dict[str, subprocess.Popen[bytes]] = {}
        self.front_dir = work / "front"
        self.front_dir.mkdir(parents=True)
        self.front_port = free_port()
        self.front: NonstopProcess | None = None
        self.front_ssh_port = 0
        self.sshd: subprocess.Popen[bytes] | None = None
        self.fleet_toml = work / "fleet.toml"
        self.lease = self.front_dir / "fleet.lease"

    def __enter__(self) -> Fleet:
        try:
            self._start()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # -- building -------------------------------------------------------------------------

    def _start(self) -> None:
        python = subprocess.list2cmdline([sys.executable])
        command = f"{python} {{release}} {{port}} --release {{release}}"
        for index, host in enumerate(self.hosts):
            text = app_config(HOST_PORT, APP_PORTS, command, verify=self.verify)
            text = text.replace(f"127.0.0.1:{HOST_PORT}", f"{host.address}:{HOST_PORT}")
            if index in self.admin_sockets:
                text += f'\n[admin]\nsocket = "{self.admin_sockets[index]}"\n'
            (host.root / "nonstop.toml").write_text(text)
            self.daemons[host.name] = self._start_daemon(host)
        for host in self.hosts:
            self._wait_daemon(host)
        servers = "\n".join(f"    server {h.address}:{HOST_PORT};" for h in self.hosts)
        conf = self.front_dir / "front.conf"
        conf.write_text(_FRONT_CONF.format(servers=servers, port=self.front_port))
        self.front = NonstopProcess(conf, [self.front_port], ["--shutdown-timeout", "10s"])
        self.front.start()
        known_hosts = self._start_front_sshd()
        self.fleet_toml.write_text(
            "[fleet]\n"
            f"hosts = {json.dumps([h.destination for h in self.hosts])}\n"
            f'front = "root@{self.hosts.gateway}:{self.front_ssh_port}"\n'
            'front_upstream = "app"\n'
            f'front_config = "{conf}"\n'
            f'remote_config = "{REMOTE_CONFIG}"\n'
            'releases_dir = "/srv/web/releases"\n'
            f'known_hosts = "{known_hosts}"\n'
            f'identity = "{self.hosts.client_key}"\n'
            f'remote_nonstop = "{NONSTOP}"\n'
            f'lease_file = "{self.lease}"\n'
            'connect_timeout = "3s"\n'
            'command_timeout = "60s"\n'
            f'hold_timeout = "{self.hold_timeout}"\n'
        )

    def _start_daemon(self, host: Host) -> subprocess.Popen[bytes]:
        assert host.sshd is not None
        log = open(host.root / "nonstop.log", "ab")  # noqa: SIM115
        try:
            return subprocess.Popen(
                [
                    *("nsenter", f"--target={host.sshd.pid}", "--net", "--mount", "--"),
                    *(sys.executable, "-m", "nonstop", "run", "-c", REMOTE_CONFIG),
                    *("--shutdown-timeout", "10s"),
                ],
                stdout=log,
                stderr=log,
                cwd="/",
            )
        finally:
            log.close()

    def _wait_daemon(self, host: Host, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while True:
            if self.daemons[host.name].poll() is not None:
                raise RuntimeError(f"nonstop on {host.name} exited:\n{self.log(host)}")
            if self.nonstop(host, "status", "--json").returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"nonstop on {host.name} not ready:\n{self.log(host)}")
            time.sleep(0.1)

    def _start_front_sshd(self) -> Path:
        """sshd in the root network namespace on the bridge (its own mount namespace, so
        the sessions get an empty home); returns a known_hosts with it and every host."""
        ssh_dir = self.work / "front-sshd"
        home = ssh_dir / "home"
        home.mkdir(parents=True, mode=0o700)
        subprocess.run(
            ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(ssh_dir / "host_key")],
            check=True,
            capture_output=True,
        )
        shutil.copy(self.hosts.client_key.with_suffix(".pub"), ssh_dir / "authorized_keys")
        self.front_ssh_port = _free_port_on(self.hosts.gateway)
        config = ssh_dir / "sshd_config"
        config.write_text(
            SSHD_CONFIG.format(
                port=self.front_ssh_port,
                address=self.hosts.gateway,
                host_key=ssh_dir / "host_key",
                authorized_keys=ssh_dir / "authorized_keys",
            )
        )
        keep = "".join(
            f'mkdir -p "$1"/{shlex.quote(name)} && '
            f'mount --bind /root/{shlex.quote(name)} "$1"/{shlex.quote(name)} && '
            for name in python_under_root()
        )
        script = f'{keep}mount --rbind "$1" /root && exec "$2" -D -e -f "$3"'
        with open(ssh_dir / "sshd.log", "ab") as log:
            self.sshd = subprocess.Popen(
                [
                    *("unshare", "--mount", "--propagation", "private"),
                    *("sh", "-c", script, "sh", str(home), SSHD, str(config)),
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        _wait_banner(self.hosts.gateway, self.front_ssh_port, self.sshd)
        key = " ".join((ssh_dir / "host_key.pub").read_text().split()[:2])
        known = self.work / "known_hosts"
        known.write_text(
            self.hosts.known_hosts.read_text()
            + f"[{self.hosts.gateway}]:{self.front_ssh_port} {key}\n"
        )
        return known

    # -- using ----------------------------------------------------------------------------

    def nonstop(self, host: Host, *args: str) -> subprocess.CompletedProcess[str]:
        """``nonstop ARGS`` on ``host``, as someone logged in there would run it."""
        return host.run(sys.executable, "-m", "nonstop", *args, "-c", REMOTE_CONFIG, check=False)

    def status(self, host: Host) -> dict[str, Any]:
        done = self.nonstop(host, "status", "web", "--json")
        assert done.returncode == 0, done.stderr
        answer: dict[str, Any] = json.loads(done.stdout)
        return answer

    def live(self, host: Host) -> str:
        return str(self.status(host)["apps"]["web"]["live"]["release"])

    def deploy_everywhere(self, release: Path) -> None:
        """The first release on every host, deployed there directly."""
        for host in self.hosts:
            done = self.nonstop(host, "deploy", "web", "--release", str(release))
            assert done.returncode == 0, done.stdout + done.stderr + self.log(host)

    def fleet(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "nonstop", "fleet", *args, "-c", str(self.fleet_toml)],
            capture_output=True,
            text=True,
            timeout=timeout,
        )

    def fleet_async(self, *args: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "nonstop", "fleet", *args, "-c", str(self.fleet_toml)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )

    def front_status(self) -> str:
        assert self.front is not None
        done = self.front.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        return done.stdout

    def log(self, host: Host) -> str:
        path = host.root / "nonstop.log"
        return path.read_text(errors="replace")[-3000:] if path.exists() else ""

    # -- removing -------------------------------------------------------------------------

    def close(self) -> None:
        """Stop every process this fleet started, by pid; empty every host's directory."""
        for process in self.daemons.values():
            if process.poll() is None:
                process.send_signal(signal.SIGINT)  # a daemon stops its apps too
        if self.sshd is not None and self.sshd.poll() is None:
            self.sshd.terminate()  # sshd -D ends on SIGTERM; SIGINT it ignores
        if self.front is not None:
            self.front.stop()
        for process in [*self.daemons.values(), self.sshd]:
            if process is None:
                continue
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait(timeout=5)
        for host in self.hosts:
            for entry in host.root.iterdir():
                if entry.is_dir():
                    shutil.rmtree(entry, ignore_errors=True)
                else:
                    entry.unlink(missing_ok=True)


def _free_port_on(address: str) -> int:
    import socket

    with socket.socket() as sock:
        sock.bind((address, 0))
        return int(sock.getsockname()[1])


def _wait_banner(address: str, port: int, process: subprocess.Popen[bytes]) -> None:
    import socket

    deadline = time.monotonic() + 15.0
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError("the front's sshd exited")
        try:
            with socket.create_connection((address, port), timeout=0.5) as sock:
                if sock.recv(8).startswith(b"SSH-"):
                    return
        except OSError:
            pass
        time.sleep(0.02)
    raise TimeoutError("the front's sshd is not ready")
