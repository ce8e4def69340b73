"""The seed's two-server setup on one Linux machine, and a fleet deploy through its front.

    sudo .venv/bin/python examples/fleet/run.py          # deploy v2 under traffic, then serve
    sudo .venv/bin/python examples/fleet/run.py --once   # the same, then remove everything

Three hosts -- lb1 (the front), app1 and app2 -- are network namespaces on a bridge, each
with its own OpenSSH sshd and its own ``/srv/web`` (a private mount namespace): the same
paths and ports as on real machines, built by the tests' ``tests/support/netns.py``.
app1 and app2 run ``nonstop run`` with ``host.toml`` (the app blue-green on 8080/8000,
nonstop on port 80); lb1 runs ``nonstop run`` with ``front.conf`` (80 -> 301, TLS on 443
with a self-signed certificate, HSTS, 10 MB bodies, ip_hash over app1 and app2).  Then
``nonstop fleet deploy`` ships release v2 over SSH and deploys host after host through
the front while clients send HTTPS requests to lb1; the failed requests are counted.
Needs root (namespaces), openssh-server and openssl (scripts/system-deps.sh).
"""

from __future__ import annotations

import argparse
import http.client
import shutil
import signal
import ssl
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parents[1]))  # the checkout: tests/support/netns.py

from tests.support.netns import Host, TestHosts  # noqa: E402

NONSTOP = str(Path(sys.executable).parent / "nonstop")
WEB = "/srv/web"  # every host's own directory, as on the real machines


class Traffic:
    """``clients`` keep-alive HTTPS clients through the front, GETs and 1 MB POSTs, until
    stopped (at most ``limit`` seconds); every error or non-200 answer is a failure."""

    def __init__(self, address: str, clients: int = 4, limit: float = 300.0) -> None:
        self.address, self.limit = address, limit
        self.ok = 0
        self.failed: list[str] = []
        self.seen: dict[str, int] = {}
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [threading.Thread(target=self._run, daemon=True) for _ in range(clients)]

    def __enter__(self) -> Traffic:
        for thread in self._threads:
            thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(20)

    def _connect(self) -> http.client.HTTPSConnection:
        context = ssl.create_default_context()
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # self-signed
        return http.client.HTTPSConnection(self.address, 443, timeout=15, context=context)

    def _run(self) -> None:
        deadline = time.monotonic() + self.limit
        conn, n = self._connect(), 0
        body = b"x" * (1 << 20)
        while not self._stop.is_set() and time.monotonic() < deadline:
            n += 1
            try:
                if n % 5:
                    conn.request("GET", "/")
                else:
                    conn.request("POST", "/upload", body=body)
                resp = conn.getresponse()
                answer = resp.read()
                ok = resp.status == 200 and (n % 5 != 0 or answer == body)
                with self._lock:
                    if not ok:
                        self.failed.append(f"{resp.status} {answer[:60]!r}")
                        continue
                    self.ok += 1
                    if n % 5:
                        release = answer.decode().split(" ", 1)[0]
                        self.seen[release] = self.seen.get(release, 0) + 1
            except (OSError, http.client.HTTPException) as exc:
                with self._lock:
                    self.failed.append(repr(exc))
                conn.close()
                conn = self._connect()
        conn.close()


def inside(host: Host, *argv: str, log: Path | None = None) -> subprocess.Popen[bytes]:
    """``argv`` in ``host``'s network and mount namespaces (where its sshd runs)."""
    assert host.sshd is not None
    out = open(log, "ab") if log else subprocess.DEVNULL  # noqa: SIM115
    try:
        return subprocess.Popen(
            ["nsenter", f"--target={host.sshd.pid}", "--net", "--mount", "--", *argv],
            stdout=out,
            stderr=out,
            cwd="/",
        )
    finally:
        if log:
            out.close()  # type: ignore[union-attr]


def nonstop_on(host: Host, *args: str, config: str = f"{WEB}/nonstop.toml") -> str:
    done = host.run(NONSTOP, *args, "-c", config, check=False)
    if done.returncode != 0:
        raise SystemExit(f"{host.name}: nonstop {' '.join(args)}: {done.stderr.strip()}")
    return done.stdout


def wait_up(host: Host, daemon: subprocess.Popen[bytes], config: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while host.run(NONSTOP, "status", "-c", config, check=False).returncode != 0:
        if daemon.poll() is not None or time.monotonic() > deadline:
            log = (host.root / "nonstop.log").read_text(errors="replace")[-2000:]
            raise SystemExit(f"nonstop on {host.name} did not start:\n{log}")
        time.sleep(0.1)


def release(build: Path, name: str) -> Path:
    """A release directory: the app as its ``__main__.py`` (``python3 DIR PORT`` runs it)."""
    where = build / name
    where.mkdir(parents=True)
    shutil.copy(HERE / "app.py", where / "__main__.py")
    return where


def build_world(hosts: TestHosts, work: Path) -> tuple[Path, list[subprocess.Popen[bytes]]]:
    lb, app1, app2 = hosts
    daemons: list[subprocess.Popen[bytes]] = []
    build = work / "build"
    v1 = release(build, "v1")
    for host, name in ((app1, "app1"), (app2, "app2")):
        shutil.copy(HERE / "host.toml", host.root / "nonstop.toml")
        daemons.append(
            inside(host, NONSTOP, "run", "-c", f"{WEB}/nonstop.toml", log=host.root / "nonstop.log")
        )
        wait_up(host, daemons[-1], f"{WEB}/nonstop.toml")
        nonstop_on(host, "deploy", "web", "--release", str(v1))
        print(f"{name} ({host.address}): nonstop on :80, web v1 on 8080", flush=True)
    tls = lb.root / "tls"
    tls.mkdir()
    subprocess.run(
        [
            *("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "30"),
            *("-subj", "/CN=lb1", "-keyout", str(tls / "privkey.pem")),
            *("-out", str(tls / "fullchain.pem")),
        ],
        check=True,
        capture_output=True,
    )
    conf = (HERE / "front.conf").read_text()
    conf = conf.replace("app1:80", f"{app1.address}:80").replace("app2:80", f"{app2.address}:80")
    (lb.root / "front.conf").write_text(conf)
    front_conf = f"{WEB}/front.conf"
    daemons.append(inside(lb, NONSTOP, "run", "-c", front_conf, log=lb.root / "nonstop.log"))
    wait_up(lb, daemons[-1], front_conf)
    print(f"lb1 ({lb.address}): the front, 80 -> 301, TLS on 443, ip_hash over both", flush=True)
    fleet_toml = work / "fleet.toml"
    fleet_toml.write_text(
        (HERE / "fleet.toml")
        .read_text()
        .replace("deploy@app1:22", app1.destination)
        .replace("deploy@app2:22", app2.destination)
        .replace("deploy@lb1:22", lb.destination)
        .replace('"~/.ssh/known_hosts"', f'"{hosts.known_hosts}"')
        .replace('"~/.ssh/id_ed25519"', f'"{hosts.client_key}"')
        + f'remote_nonstop = "{NONSTOP}"\nconnect_timeout = "5s"\n'
    )
    return fleet_toml, daemons


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--once", action="store_true", help="stop after the deploy")
    args = parser.parse_args()
    daemons: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory(prefix="nonstop-fleet-example-") as scratch:
        work = Path(scratch)
        with TestHosts(3) as hosts:
            try:
                fleet_toml, daemons = build_world(hosts, work)
                lb = hosts[0]
                redirect = http.client.HTTPConnection(lb.address, 80, timeout=10)
                redirect.request("GET", "/login")
                answer = redirect.getresponse()
                print(
                    f"http://{lb.address}/login -> {answer.status} {answer.getheader('Location')}"
                )
                fleet = [NONSTOP, "fleet"]
                v2 = release(work / "build", "v2")
                print(f"\n$ nonstop fleet deploy web --release {v2} -c {fleet_toml}", flush=True)
                with Traffic(lb.address) as traffic:
                    deadline = time.monotonic() + 10
                    while traffic.ok < 50 and time.monotonic() < deadline:
                        time.sleep(0.05)
                    done = subprocess.run(
                        [*fleet, "deploy", "web", "--release", str(v2), "-c", str(fleet_toml)],
                        timeout=300,
                    )
                    settled, deadline = traffic.ok + 50, time.monotonic() + 10
                    while traffic.ok < settled and time.monotonic() < deadline:
                        time.sleep(0.05)
                print(
                    f"\nthrough the front during the deploy: {traffic.ok} answered "
                    f"({', '.join(f'{r}: {n}' for r, n in sorted(traffic.seen.items()))}), "
                    f"{len(traffic.failed)} failed {traffic.failed[:3]}"
                )
                print(f"\n$ nonstop fleet status web -c {fleet_toml}", flush=True)
                subprocess.run([*fleet, "status", "web", "-c", str(fleet_toml)], timeout=60)
                if not args.once:
                    print(
                        f"\nServing until Ctrl-C. Try:\n  curl -k https://{lb.address}/\n"
                        f"  {NONSTOP} fleet rollback web -c {fleet_toml}\n"
                        f"  {NONSTOP} fleet status web -c {fleet_toml}",
                        flush=True,
                    )
                    stop = threading.Event()
                    signal.signal(signal.SIGTERM, lambda *_: stop.set())
                    try:
                        stop.wait()
                    except KeyboardInterrupt:
                        pass
                if done.returncode != 0 or traffic.failed:
                    raise SystemExit(1)
            finally:
                for daemon in daemons:
                    if daemon.poll() is None:
                        # SIGINT: each daemon stops its apps too (SIGTERM leaves them
                        # running for the next start to adopt)
                        daemon.send_signal(signal.SIGINT)
                for daemon in daemons:
                    try:
                        daemon.wait(timeout=20)
                    except subprocess.TimeoutExpired:
                        daemon.kill()
                        daemon.wait()


if __name__ == "__main__":
    main()
