"""The lab every benchmark runs in: a run folder, free ports, the backend, the proxies.

Every process is started by PID into the run folder (its own prefix, pid file and log) and
stopped by that PID when the lab closes -- on success, on an exception and on Ctrl-C alike.
The proxies run pinned to one core (``taskset``); the backend and the load generator share
the other, so a proxy never competes with its own load for CPU.
"""

from __future__ import annotations

import argparse
import contextlib
import http.client
import json
import os
import platform
import shutil
import signal
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any

from _configs import (
    TlsFiles,
    render_backend_conf,
    render_driven_conf,
    render_haproxy_cfg,
    render_proxy_conf,
)
from _procfs import ProcInfo, proc_info, tree_pids

__all__ = [
    "ALL_PROXIES",
    "BENCH_DIR",
    "ONE_PROCESS",
    "Lab",
    "Proxy",
    "StartFailed",
    "TlsProbe",
    "default_nonstop",
    "free_ports",
    "http_status",
    "https_probe",
    "machine_info",
    "make_certificate",
    "parse_only",
    "pinned_self",
    "poll_until",
    "raise_on_sigterm",
    "require_tools",
]

BENCH_DIR = Path(__file__).resolve().parent
ALL_PROXIES = ("nonstop", "nginx256", "nginx32", "haproxy", "nginx-driven")
# nonstop with master_process off (the proxy in its own process): asked for by name only
ONE_PROCESS = "nonstop1p"
_STOP_TIMEOUT_S = 10.0


class StartFailed(Exception):
    """A process did not come up; the message says why (exit status, log tail)."""


def default_nonstop() -> Path:
    """The ``nonstop`` executable installed next to the running Python (the venv's)."""
    return Path(os.path.normpath(Path(sys.executable).parent / "nonstop"))


def parse_only(text: str, allowed: Sequence[str] = ALL_PROXIES) -> list[str]:
    """``"nginx256,haproxy"`` -> the names, in the canonical order; unknown names raise."""
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = sorted(set(names) - set(allowed))
    if unknown:
        raise ValueError(f"unknown proxy {', '.join(unknown)}; choose from {', '.join(allowed)}")
    return [name for name in allowed if name in names]


def raise_on_sigterm() -> None:
    """Turn SIGTERM into SystemExit so ``finally`` blocks stop every started process."""

    def _exit(signum: int, frame: FrameType | None) -> None:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _exit)


def free_ports(count: int) -> list[int]:
    """``count`` distinct loopback ports that were free a moment ago."""
    with contextlib.ExitStack() as stack:
        ports = []
        for _ in range(count):
            sock = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
        return ports


def http_status(port: int, timeout_s: float = 1.0) -> int | None:
    """Status of ``GET /`` on a loopback port, or None when nothing answers."""
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=timeout_s)
    try:
        conn.request("GET", "/")
        response = conn.getresponse()
        response.read()
        return response.status
    except OSError:
        return None
    finally:
        conn.close()


@dataclass(frozen=True)
class TlsProbe:
    """What one ``GET /`` over TLS saw: the status and the session it negotiated."""

    status: int
    version: str | None  # e.g. "TLSv1.3"
    cipher: str | None  # e.g. "TLS_AES_256_GCM_SHA384"


def _unverified_context() -> ssl.SSLContext:
    """A client context that accepts any certificate: the benchmark's own self-signed one,
    on loopback only, where there is nothing to authenticate."""
    context = ssl.create_default_context()
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def https_probe(port: int, timeout_s: float = 1.0) -> TlsProbe | None:
    """``GET /`` over TLS on a loopback port (certificate not verified), or None when
    nothing answers or the handshake fails."""
    conn = http.client.HTTPSConnection(
        "127.0.0.1", port, timeout=timeout_s, context=_unverified_context()
    )
    try:
        conn.request("GET", "/")
        sock = conn.sock  # read the session now: a closing response drops the socket
        version, cipher = None, None
        if isinstance(sock, ssl.SSLSocket):
            version, cipher = sock.version(), (sock.cipher() or (None,))[0]
        response = conn.getresponse()
        response.read()
        return TlsProbe(response.status, version, cipher)
    except (OSError, http.client.HTTPException):
        return None
    finally:
        conn.close()


def make_certificate(folder: Path, name: str = "localhost") -> TlsFiles:
    """A fresh self-signed ECDSA P-256 certificate for ``name`` and 127.0.0.1, made with the
    ``openssl`` CLI into ``folder``: certificate, key, and both in one PEM for HAProxy."""
    folder.mkdir(parents=True, exist_ok=True)
    cert, key, combined = folder / "cert.pem", folder / "key.pem", folder / "cert+key.pem"
    argv = [
        "openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-nodes", "-days", "2", "-subj", f"/CN={name}",
        "-addext", f"subjectAltName=DNS:{name},IP:127.0.0.1",
        "-keyout", str(key), "-out", str(cert),
    ]  # fmt: skip
    done = subprocess.run(argv, capture_output=True, text=True, timeout=30, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"openssl could not make a certificate: {done.stderr.strip()}")
    combined.write_text(cert.read_text() + key.read_text())
    return TlsFiles(certificate=cert, key=key, combined=combined, kind="ECDSA P-256")


def _version(argv: list[str]) -> str:
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except OSError as exc:
        return f"unavailable ({exc})"
    text = (done.stdout + done.stderr).strip()
    return text.splitlines()[0] if text else "unknown"


def machine_info() -> dict[str, str]:
    """What the numbers were measured on: cores, CPU model, kernel, tool versions."""
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return {
        "nproc": str(os.cpu_count()),
        "cpu_model": model,
        "kernel": platform.release(),
        "nginx": _version(["nginx", "-v"]),
        "haproxy": _version(["haproxy", "-v"]),
        "wrk": _version(["wrk", "-v"]),
        "python": platform.python_version(),
    }


@dataclass
class Proxy:
    """One running proxy under test."""

    name: str
    kind: str  # "nginx" | "haproxy" | "nonstop"
    port: int
    proc: subprocess.Popen[bytes]
    prefix: Path
    conf: Path
    log: Path
    scheme: str = "http"  # "https" when the proxy terminates TLS

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}/"

    def pids(self) -> list[int]:
        """Every process of this proxy: root first, then its descendants."""
        return tree_pids(self.pid)

    def alive(self) -> bool:
        return self.proc.poll() is None


@dataclass
class Lab:
    """A run folder plus every process started in it; a context manager that stops them all."""

    root: Path
    proxy_cpu: int | None
    client_cpu: int | None
    nonstop: Path = field(default_factory=default_nonstop)
    _procs: list[subprocess.Popen[bytes]] = field(default_factory=list)

    @classmethod
    def create(
        cls, label: str, proxy_cpu: int | None, client_cpu: int | None, nonstop: Path
    ) -> Lab:
        """A fresh run folder ``bench/out/LABEL-TIMESTAMP``."""
        root = BENCH_DIR / "out" / f"{label}-{time.strftime('%Y%m%d-%H%M%S')}"
        root.mkdir(parents=True)
        return cls(root=root, proxy_cpu=proxy_cpu, client_cpu=client_cpu, nonstop=nonstop)

    def __enter__(self) -> Lab:
        return self

    def __exit__(self, *exc: object) -> None:
        for proc in reversed(self._procs):
            self._stop(proc)
        self._procs.clear()

    # -- processes ------------------------------------------------------------------------

    def spawn(
        self, argv: list[str], cpu: int | None, log: Path, cwd: Path
    ) -> subprocess.Popen[bytes]:
        """Start ``argv`` in its own session (Ctrl-C reaches only us), pinned to ``cpu``."""
        pinned = ["taskset", "-c", str(cpu), *argv] if cpu is not None else argv
        with log.open("ab") as out:
            proc = subprocess.Popen(
                pinned,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                cwd=cwd,
                start_new_session=True,
            )
        self._procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes]) -> None:
        """Stop one process started by this lab (and its descendants) and forget it."""
        if proc in self._procs:
            self._procs.remove(proc)
        self._stop(proc)

    @staticmethod
    def _stop(proc: subprocess.Popen[bytes]) -> None:
        """SIGTERM, wait, then SIGKILL whatever of the tree is left, by PID."""
        family = [(pid, proc_info(pid)) for pid in tree_pids(proc.pid)]
        if proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=_STOP_TIMEOUT_S)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signal.SIGKILL)
                proc.wait(timeout=_STOP_TIMEOUT_S)
        deadline = time.monotonic() + _STOP_TIMEOUT_S
        for pid, info in family[1:]:
            while _same_process(pid, info) and time.monotonic() < deadline:
                time.sleep(0.05)
            if _same_process(pid, info):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, signal.SIGKILL)

    def wait_http(
        self, proc: subprocess.Popen[bytes], port: int, log: Path, what: str, tls: bool = False
    ) -> None:
        """Poll ``GET /`` (over TLS when ``tls``) until it answers 200; raise StartFailed if
        the process exits first."""
        deadline = time.monotonic() + 15.0
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                raise StartFailed(f"{what} exited with status {proc.returncode}: {_tail(log)}")
            if tls:
                probe = https_probe(port)
                status = probe.status if probe else None
            else:
                status = http_status(port)
            if status == 200:
                return
            time.sleep(0.05)
        scheme = "https" if tls else "http"
        raise StartFailed(
            f"{what} did not answer 200 over {scheme} on port {port} within 15 s: {_tail(log)}"
        )

    # -- the backend ----------------------------------------------------------------------

    def start_backend(self, ports: Sequence[int]) -> subprocess.Popen[bytes]:
        """The fast backend nginx, on the client core, listening on every port in ``ports``."""
        prefix = self._prefix("backend")
        conf = prefix / "nginx.conf"
        conf.write_text(render_backend_conf(ports))
        log = prefix / "stderr.log"
        argv = ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"]
        proc = self.spawn(argv, self.client_cpu, log, prefix)
        for port in ports:
            self.wait_http(proc, port, log, "backend nginx")
        return proc

    # -- the proxies ----------------------------------------------------------------------

    def start_proxy(
        self, name: str, port: int, backend_ports: Sequence[int], tls: TlsFiles | None = None
    ) -> Proxy:
        """Start the proxy called ``name`` (see ALL_PROXIES) and wait until it proxies a 200;
        with ``tls`` it terminates TLS with that certificate on ``port``."""
        prefix = self._prefix(name)
        log = prefix / "stderr.log"
        if name == "haproxy":
            conf = prefix / "haproxy.cfg"
            pidfile = str(prefix / "haproxy.pid")
            conf.write_text(render_haproxy_cfg(port, backend_ports, pidfile, tls))
            argv, kind = ["haproxy", "-W", "-db", "-f", str(conf)], "haproxy"
        elif name == "nginx-driven":
            conf = prefix / "nginx.conf"
            conf.write_text(render_driven_conf(port, backend_ports, free_ports(2), prefix))
            argv, kind = self._nginx_like_argv(name, prefix, conf)
        else:
            keepalive = 32 if name == "nginx32" else 256
            conf = prefix / "nginx.conf"
            text = render_proxy_conf(port, backend_ports, keepalive, tls)
            conf.write_text("master_process off;\n" + text if name == ONE_PROCESS else text)
            argv, kind = self._nginx_like_argv(name, prefix, conf)
        try:
            proc = self.spawn(argv, self.proxy_cpu, log, prefix)
        except OSError as exc:
            raise StartFailed(f"{name}: cannot execute {argv[0]}: {exc}") from exc
        scheme = "https" if tls else "http"
        proxy = Proxy(name, kind, port, proc, prefix, conf, log, scheme)
        try:
            self.wait_http(proc, port, log, name, tls=tls is not None)
        except StartFailed:
            self.stop(proc)
            raise
        return proxy

    def _nginx_like_argv(self, name: str, prefix: Path, conf: Path) -> tuple[list[str], str]:
        if name not in ("nonstop", ONE_PROCESS):
            return ["nginx", "-p", f"{prefix}/", "-c", str(conf), "-g", "daemon off;"], "nginx"
        if not self.nonstop.is_file() or not os.access(self.nonstop, os.X_OK):
            raise StartFailed(f"nonstop: no executable at {self.nonstop} (see --nonstop)")
        return [str(self.nonstop), "run", "-c", str(conf), "-p", str(prefix)], "nonstop"

    def reload(self, proxy: Proxy, nonstop_via_cli: bool = False) -> None:
        """Ask ``proxy`` to reload its (unchanged) config the way its users would."""
        if proxy.kind == "nginx":
            argv = ["nginx", "-p", f"{proxy.prefix}/", "-c", str(proxy.conf), "-s", "reload"]
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        elif proxy.kind == "haproxy":
            os.kill(proxy.pid, signal.SIGUSR2)  # master-worker mode: the master re-execs
        elif nonstop_via_cli:
            argv = [str(self.nonstop), "reload", "-c", str(proxy.conf)]
            subprocess.run(argv, check=True, capture_output=True, timeout=30)
        else:
            os.kill(proxy.pid, signal.SIGHUP)

    def _prefix(self, name: str) -> Path:
        prefix = self.root / name
        (prefix / "temp").mkdir(parents=True, exist_ok=True)
        return prefix


def _same_process(pid: int, before: ProcInfo | None) -> bool:
    """True while ``pid`` is still the process read as ``before`` (guards PID reuse)."""
    now = proc_info(pid)
    return now is not None and before is not None and now.starttime == before.starttime


def _tail(log: Path, lines: int = 8) -> str:
    try:
        text = log.read_text(errors="replace").strip()
    except OSError:
        return "(no log)"
    return " | ".join(text.splitlines()[-lines:]) or "(empty log)"


def poll_until(check: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    """Poll ``check`` until it is true or ``timeout_s`` passes; returns the last answer."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if check():
            return True
        time.sleep(interval_s)
    return check()


@contextlib.contextmanager
def pinned_self(cpu: int | None) -> Iterator[None]:
    """Pin this Python process (and so its load-generating coroutines) to ``cpu``."""
    if cpu is None:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, {cpu})
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def require_tools(names: Sequence[str]) -> None:
    """Exit with a clear message when a system tool the run needs is missing."""
    missing = [name for name in names if shutil.which(name) is None]
    if missing:
        sys.exit(f"missing: {', '.join(missing)} -- apt-get install nginx haproxy wrk util-linux")


def save_results(folder: Path, benchmark: str, args: Any, payload: dict[str, Any]) -> Path:
    """Write one run's JSON (machine, settings, then ``payload``) to ``folder``."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{benchmark}-{time.strftime('%Y%m%d-%H%M%S')}.json"
    settings = {k: str(v) for k, v in vars(args).items() if k not in ("names", "results")}
    document = {"benchmark": benchmark, "machine": machine_info(), "settings": settings}
    path.write_text(json.dumps({**document, **payload}, indent=2) + "\n")
    return path


def measure_each(
    benchmark: str,
    args: Any,
    measure: Callable[[Lab, str, list[int], Any], dict[str, Any]],
) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """Start the backend, then run ``measure`` for each proxy in ``args.names``, fresh.

    A proxy that does not start is reported and left out; the others still run.
    """
    results: dict[str, dict[str, Any]] = {}
    failures: dict[str, str] = {}
    with (
        Lab.create(benchmark, args.proxy_cpu, args.client_cpu, nonstop=args.nonstop) as lab,
        pinned_self(args.client_cpu),
    ):
        print(f"run folder: {lab.root}", flush=True)
        backend_ports = free_ports(2)
        lab.start_backend(backend_ports)
        for name in args.names:
            try:
                results[name] = measure(lab, name, backend_ports, args)
                print(f"{name}: {results[name]}", flush=True)
            except StartFailed as exc:
                failures[name] = str(exc)
                print(f"SKIPPING {name}: {exc}", file=sys.stderr, flush=True)
    return results, failures


def parse_bench_args(
    parser: argparse.ArgumentParser,
    argv: Sequence[str] | None,
    allowed: Sequence[str] = ALL_PROXIES,
) -> argparse.Namespace:
    """Add the options every side-by-side benchmark has, parse, and check ``--only``."""
    parser.add_argument("--nonstop", type=Path, default=default_nonstop(), help="executable")
    parser.add_argument("--proxy-cpu", type=int, default=1, help="core for the proxies")
    parser.add_argument(
        "--client-cpu", type=int, default=0, help="core for wrk, the client and the backend"
    )
    parser.add_argument("--results", type=Path, default=BENCH_DIR / "results")
    args = parser.parse_args(argv)
    try:
        args.names = parse_only(args.only, allowed)
    except ValueError as exc:
        parser.error(str(exc))
    return args
