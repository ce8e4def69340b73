"""SSH to the hosts of a fleet, in-process with asyncssh: the one place that speaks SSH.

The rules every caller gets without asking:

- host keys are always checked against the configured ``known_hosts`` (there is no way to
  turn that off: asyncssh's ``known_hosts=None`` is never passed);
- every remote command is an argv list, joined with ``shlex.join`` so each argument arrives
  verbatim through the remote login shell; no caller can hand over a command string;
- a connect timeout (TCP, key exchange and login together) and a per-command timeout,
  enforced on the host by coreutils' ``timeout`` so that a command never outlives it there;
- keepalives every third of the connect timeout, so a host that vanishes mid-command is
  noticed within about the connect timeout;
- one connection per host for the span of a deploy (``Sessions``), every step a new
  channel on it;
- a host's nonstop daemon is asked through its admin socket over that connection
  (``Connection.admin``: an SSH direct stream-local channel, what ``ssh -L`` to a unix
  socket opens), one JSON request line and its answer lines, as ``nonstop`` itself does
  on the host, without starting a process there;
- asyncssh's and the socket layer's exceptions are translated here into the error tree of
  ``nonstop.fleet.errors``, each naming the host.
"""

from __future__ import annotations

import asyncio
import json
import os
import shlex
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

import asyncssh

from nonstop.fleet.errors import (
    AdminUnreachable,
    CommandFailed,
    CommandTimedOut,
    HostError,
    HostKeyRejected,
    HostsFailed,
    HostUnreachable,
    LoginRefused,
)
from nonstop.fleet.hosts import Destination, SshSettings

__all__ = [
    "AdminUnreachable",
    "Completed",
    "Connection",
    "Destination",
    "Sessions",
    "SshSettings",
    "connect",
    "remote_command",
]

T = TypeVar("T")

CHUNK = 1024 * 1024
"""Bytes per write when streaming a file to a remote command's stdin."""

CIPHERS = (
    "aes128-gcm@openssh.com",
    "aes256-gcm@openssh.com",
    "chacha20-poly1305@openssh.com",
    "aes128-ctr",
    "aes256-ctr",
)
"""Preferred first: AES-GCM runs on the CPU's AES instructions in ``cryptography`` and
streams a release about 1.8x faster than asyncssh's default choice, chacha20-poly1305."""

KILL_AFTER = 2.0
"""Seconds between TERM and KILL for a remote command that ran out of time."""
_TIMEOUT_STATUSES = (124, 137)


@dataclass(frozen=True, slots=True)
class Completed:
    """A remote command that ran to its end."""

    host: str
    argv: tuple[str, ...]
    exit_status: int
    stdout: bytes
    stderr: bytes


def remote_command(argv: Sequence[str]) -> str:
    """The command line sent to the host: every argument quoted, none interpreted."""
    if isinstance(argv, str) or not argv:
        raise TypeError("a remote command is a non-empty list of arguments")
    return shlex.join(argv)


def _under_timeout(argv: Sequence[str], limit: float) -> str:
    """The command line for ``argv`` run by coreutils' ``timeout`` on the host.

    OpenSSH's sshd ignores the SSH "signal" request and a command without a terminal
    outlives its closed channel, so only the host itself can stop a command that ran out
    of time, or whose client vanished: ``timeout`` sends TERM to the command's process
    group at ``limit``, KILL ``KILL_AFTER`` seconds later, and exits 124 (137 after KILL).
    """
    wrapper = ["timeout", f"--kill-after={KILL_AFTER:g}s", f"{limit:.3f}s"]
    return f"{remote_command(wrapper)} {remote_command(argv)}"


def _translate(host: str, exc: BaseException) -> HostError:
    """The fleet error for what asyncssh or the socket layer raised while reaching ``host``."""
    if isinstance(exc, asyncssh.HostKeyNotVerifiable):
        return HostKeyRejected(host, f"host key not accepted by known_hosts ({exc.reason})")
    if isinstance(exc, asyncssh.PermissionDenied):
        return LoginRefused(host, f"login refused ({exc.reason})")
    if isinstance(exc, asyncssh.DisconnectError):
        return HostUnreachable(host, f"connection lost ({exc.reason})")
    if isinstance(exc, asyncssh.ChannelOpenError):
        return HostUnreachable(host, f"cannot open a session ({exc.reason})")
    if isinstance(exc, TimeoutError):
        return HostUnreachable(host, "connect timed out")
    if isinstance(exc, OSError):
        return HostUnreachable(host, exc.strerror or str(exc))
    raise exc


class Connection:
    """One SSH connection to one host; every ``run`` is a new channel on it."""

    def __init__(
        self, destination: Destination, conn: asyncssh.SSHClientConnection, settings: SshSettings
    ) -> None:
        self.destination = destination
        self.name = str(destination)
        self.settings = settings
        self._conn = conn

    async def run(
        self,
        argv: Sequence[str],
        *,
        input: bytes | None = None,
        timeout: float | None = None,
        check: bool = True,
    ) -> Completed:
        """Run ``argv`` on the host; ``CommandFailed`` on a non-zero exit when ``check``."""
        return await self._run(argv, input, None, timeout, check)

    async def run_with_file(
        self,
        argv: Sequence[str],
        source: Path,
        *,
        timeout: float | None = None,
        check: bool = True,
    ) -> Completed:
        """Run ``argv`` with the bytes of the local file ``source`` on its stdin."""
        return await self._run(argv, None, source, timeout, check)

    async def _run(
        self,
        argv: Sequence[str],
        input: bytes | None,
        source: Path | None,
        timeout: float | None,
        check: bool,
    ) -> Completed:
        limit = self.settings.command_timeout if timeout is None else timeout
        command = _under_timeout(argv, limit)
        started = asyncio.get_running_loop().time()
        process: asyncssh.SSHClientProcess[bytes] | None = None
        try:
            # The host enforces ``limit`` itself; this deadline only covers a host that
            # stops answering, which the keepalives notice within about connect_timeout.
            async with asyncio.timeout(limit + KILL_AFTER + self.settings.connect_timeout):
                process = await self._conn.create_process(command, input=input, encoding=None)
                if source is not None:
                    await _stream(source, process)
                done = await process.wait()
        except TimeoutError:
            _abandon(process)
            raise CommandTimedOut(self.name, argv, limit) from None
        except (asyncssh.Error, OSError) as exc:
            _abandon(process)
            raise _translate(self.name, exc) from exc
        if done.returncode is None:
            # The channel closed without an exit status: the connection went away under it.
            raise HostUnreachable(self.name, f"connection lost while `{argv[0]}` ran")
        status = done.returncode
        elapsed = asyncio.get_running_loop().time() - started
        if status in _TIMEOUT_STATUSES and elapsed >= limit:
            raise CommandTimedOut(self.name, argv, limit)
        stdout, stderr = _as_bytes(done.stdout), _as_bytes(done.stderr)
        if check and status != 0:
            raise CommandFailed(self.name, argv, status, stderr)
        return Completed(self.name, tuple(argv), status, stdout, stderr)

    async def admin(
        self,
        socket_path: str,
        request: dict[str, Any],
        *,
        on_event: Callable[[dict[str, Any]], None] | None = None,
        timeout: float | None = None,
    ) -> dict[str, Any]:
        """``request`` to the nonstop daemon listening on ``socket_path`` on the host; its
        final answer line (progress events before it go to ``on_event``).

        The daemon answers every request or closes the connection (``admin/server.py``);
        a daemon that does neither within ``timeout`` (the command timeout) is taken to be
        stuck, and a host that vanishes is noticed by the keepalives.  A socket nobody
        listens on, or an sshd that refuses stream-local forwarding, is ``AdminUnreachable``.
        """
        cmd = str(request.get("cmd"))
        limit = self.settings.command_timeout if timeout is None else timeout
        writer: asyncssh.SSHWriter[bytes] | None = None
        try:
            async with asyncio.timeout(limit):
                reader, writer = await self._conn.open_unix_connection(socket_path)
                writer.write(json.dumps(request).encode() + b"\n")
                while True:
                    line = await reader.readline()
                    if not line.endswith(b"\n"):
                        raise self._closed_under(cmd, socket_path)
                    answer = json.loads(line)
                    if not isinstance(answer, dict):
                        raise AdminUnreachable(self.name, f"{socket_path} answered {answer!r}")
                    if "event" in answer and "ok" not in answer:
                        if on_event is not None:
                            on_event(answer)
                        continue
                    return answer
        except TimeoutError:
            raise CommandTimedOut(self.name, [f"nonstop {cmd}"], limit) from None
        except asyncssh.ChannelOpenError as exc:
            if self._conn.is_closed():
                raise _translate(self.name, exc) from exc
            raise AdminUnreachable(
                self.name,
                f"cannot reach the nonstop daemon at {socket_path} ({exc.reason}): is it "
                "running, and does the host's sshd allow stream-local forwarding "
                "(AllowStreamLocalForwarding, on by default)?",
            ) from exc
        except ValueError as exc:
            problem = f"{socket_path} sent a line that is not JSON"
            raise AdminUnreachable(self.name, problem) from exc
        except (asyncssh.Error, OSError) as exc:
            raise _translate(self.name, exc) from exc
        finally:
            if writer is not None:
                writer.close()

    def _closed_under(self, cmd: str, socket_path: str) -> HostError:
        if self._conn.is_closed():
            return HostUnreachable(self.name, f"connection lost while `nonstop {cmd}` ran")
        return AdminUnreachable(
            self.name, f"the daemon at {socket_path} closed without answering `{cmd}`"
        )

    def close(self) -> None:
        self._conn.close()

    async def wait_closed(self) -> None:
        await self._conn.wait_closed()


async def _stream(source: Path, process: asyncssh.SSHClientProcess[bytes]) -> None:
    """``source`` into the command's stdin, until its end or until the command stops
    reading (it failed: its exit status and stderr then say why, e.g. a full disk)."""
    loop = asyncio.get_running_loop()
    try:
        with open(source, "rb") as handle:
            while chunk := await loop.run_in_executor(None, handle.read, CHUNK):
                process.stdin.write(chunk)
                await process.stdin.drain()
        process.stdin.write_eof()
    except BrokenPipeError:
        pass


def _abandon(process: asyncssh.SSHClientProcess[bytes] | None) -> None:
    """Close the channel of a command we stopped waiting for (the host's timeout ends it)."""
    if process is not None:
        process.close()


def _as_bytes(data: object) -> bytes:
    if data is None:
        return b""
    if isinstance(data, str):
        return data.encode()
    assert isinstance(data, bytes)
    return data


async def connect(destination: Destination, settings: SshSettings) -> Connection:
    """Open a connection to ``destination``, host key checked; ``HostError`` if not."""
    name = str(destination)
    keepalive = max(settings.connect_timeout / 3, 0.5)
    try:
        conn = await asyncssh.connect(
            destination.host,
            destination.port,
            username=destination.user or (),
            known_hosts=os.path.expanduser(settings.known_hosts),
            client_keys=[os.path.expanduser(settings.identity)] if settings.identity else (),
            connect_timeout=settings.connect_timeout,
            login_timeout=settings.connect_timeout,
            keepalive_interval=keepalive,
            keepalive_count_max=3,
            compression_algs=None,
            encryption_algs=CIPHERS,
        )
    except (asyncssh.Error, OSError) as exc:
        raise _translate(name, exc) from exc
    return Connection(destination, conn, settings)


class Sessions:
    """The connections of one deploy: opened on first use, one per host, closed together."""

    def __init__(self, settings: SshSettings) -> None:
        self.settings = settings
        self._open: dict[Destination, asyncio.Task[Connection]] = {}

    async def __aenter__(self) -> Sessions:
        return self

    async def __aexit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.close()

    async def get(self, destination: Destination) -> Connection:
        """The connection to ``destination``, opening it if this is the first use.

        Concurrent callers for one host share one attempt; a failed attempt is forgotten,
        so a later step tries again.
        """
        task = self._open.get(destination)
        if task is None or (task.done() and task.exception() is not None):
            task = asyncio.ensure_future(connect(destination, self.settings))
            self._open[destination] = task
        return await asyncio.shield(task)

    async def each(
        self,
        step: str,
        hosts: Sequence[Destination],
        work: Callable[[Connection], Awaitable[T]],
    ) -> dict[Destination, T]:
        """``work`` on every host at once; ``HostsFailed`` naming each host that failed.

        Every host runs to its end (a failure elsewhere cancels nothing), so the error
        lists every host that failed and why, not just the first.
        """

        async def one(host: Destination) -> T:
            return await work(await self.get(host))

        results = await asyncio.gather(*(one(h) for h in hosts), return_exceptions=True)
        failures: dict[str, HostError] = {}
        done: dict[Destination, T] = {}
        for host, result in zip(hosts, results, strict=True):
            if isinstance(result, HostError):
                failures[str(host)] = result
            elif isinstance(result, BaseException):
                raise result
            else:
                done[host] = result
        if failures:
            raise HostsFailed(step, failures)
        return done

    async def close(self) -> None:
        tasks, self._open = list(self._open.values()), {}
        for task in tasks:
            if not task.done():
                task.cancel()
        for task in tasks:
            try:
                connection = await task
            except (asyncio.CancelledError, HostError):
                continue
            connection.close()
            await connection.wait_closed()
