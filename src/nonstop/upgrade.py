"""``nonstop upgrade`` and SIGUSR2: the running nonstop hands itself over to a new one.

The order (docs/operations.md), as nginx's USR2 binary upgrade and HAProxy's ``-x``
hand-over do it, but with the apps kept as well as the listeners:

1. The old daemon stops supervising its app instances (they keep running and serving)
   and closes its ``[admin] listen`` HTTP listener (a status page may blink; traffic
   does not).
2. It starts the new one — the code installed now, with the same arguments — in a
   session of its own, with one end of a socket pair as ``NONSTOP_UPGRADE_FD``.  Over it
   (``SCM_RIGHTS``) go the state directory's lock, the admin socket and every listening
   socket, with a JSON line saying which is which: with ``worker_processes`` above 1,
   one socket per worker per address, each with its worker's index.  The kernel takes
   at most 253 descriptors a call, so they go ``SCM_BATCH`` at a time: the first with the
   line, each further batch with one byte (64 workers on 4 addresses are 256 sockets).
3. The new daemon takes the lock (the descriptor is the same open file description, so
   the ``flock`` the old one holds is its own: at no moment is the state directory
   unlocked, and a third ``nonstop run`` is refused throughout), accepts on the same
   sockets (one kernel queue: a connection is accepted by one of the two, never
   refused; with workers, new worker *i* accepts from old worker *i*'s socket, so the
   ``SO_REUSEPORT`` group is the same sockets and nothing queued is lost; with the
   nginx engine there is no listening socket to pass: the new daemon adopts the nginx
   master, which keeps serving), adopts the app instances from the state store (pid,
   start time, command line, a passing health check), brings back any that were not
   running, and writes ``{"ready": true, "pid": N}`` on the pair.
4. Only then does the old daemon stop accepting, finish its in-flight requests and
   WebSockets within ``--shutdown-timeout``, and exit 0 leaving the apps.

If the new daemon writes an error, exits, or is not ready within the timeout, it is
killed (by its pid) if still running, the old one takes its instances back (the same
adoption), reopens what it closed, and keeps serving; ``nonstop upgrade`` exits 1 with
the reason.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import socket
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field

from nonstop.errors import NonstopError
from nonstop.listeners import SCM_BATCH, Listeners

__all__ = ["ENV", "Handoff", "UpgradeFailed", "receive", "start_new"]

log = logging.getLogger("nonstop")

ENV = "NONSTOP_UPGRADE_FD"
_MAX_MANIFEST = 64 * 1024


class UpgradeFailed(NonstopError):
    """The new nonstop did not become ready; the old one keeps serving."""

    exit_code = 1


@dataclass
class Handoff:
    """The new daemon's side: what the old one handed over, and the way to answer it."""

    channel: socket.socket
    lock_fd: int
    admin: socket.socket
    listeners: int
    answered: bool = field(default=False)
    # the listening sockets are systemd's (LISTEN_FDS), kept open across a stop
    outlive: bool = field(default=False)

    def ready(self) -> None:
        self._answer({"ready": True, "pid": os.getpid()})

    def failed(self, reason: str) -> None:
        self._answer({"ready": False, "error": reason})

    def _answer(self, message: dict[str, object]) -> None:
        if self.answered:
            return
        self.answered = True
        with contextlib.suppress(OSError):
            self.channel.sendall(json.dumps(message).encode() + b"\n")
        self.channel.close()


def receive(fd: int, registry: Listeners) -> Handoff:
    """In the new daemon, before anything else: take what the old one sends.

    Listening sockets go into ``registry``; ``ValueError`` if the message is not one.
    """
    channel = socket.socket(fileno=fd)
    channel.set_inheritable(False)
    channel.settimeout(30.0)
    try:
        message, fds = _receive_all(channel)
    except BaseException:
        channel.close()
        raise
    channel.settimeout(None)
    try:
        manifest = json.loads(message)
        count = int(manifest["listeners"])
        workers = [int(i) for i in manifest.get("workers", [0] * count)]
        if len(workers) != count:
            raise ValueError(f"{len(workers)} worker indexes for {count} listeners")
    except (ValueError, KeyError, TypeError, AttributeError) as exc:
        for passed in fds:
            os.close(passed)
        raise ValueError(f"{ENV}: not an upgrade hand-over: {exc}") from None
    if len(fds) != count + 2:
        for passed in fds:
            os.close(passed)
        raise ValueError(f"{ENV}: {len(fds)} descriptors for {count} listeners")
    lock_fd, admin_fd, *listening = fds
    for worker, passed in zip(workers, listening, strict=True):
        registry.add(socket.socket(fileno=passed), worker)
    admin = socket.socket(fileno=admin_fd)
    admin.setblocking(False)
    return Handoff(channel, lock_fd, admin, count, outlive=manifest.get("outlive") is True)


def _receive_all(channel: socket.socket) -> tuple[bytes, list[int]]:
    """The manifest line and every descriptor that came with it (``_send_all``).  A
    manifest sent without its newline (by a nonstop from before batches, with all its
    descriptors at once) is taken when it parses whole."""
    data, fds = b"", []
    manifest: bytes | None = None
    try:
        while True:
            chunk, got, flags, _addr = socket.recv_fds(channel, _MAX_MANIFEST, SCM_BATCH)
            for passed in got:
                os.set_inheritable(passed, False)
            fds.extend(got)
            if flags & socket.MSG_CTRUNC:  # the kernel dropped what did not fit
                raise ValueError(f"{ENV}: more than {SCM_BATCH} descriptors at once")
            data += chunk
            if manifest is None:
                line, newline, _rest = data.partition(b"\n")
                if newline or _whole_json(data):
                    manifest = line
            if manifest is not None and len(fds) >= _expected(manifest):
                return manifest, fds
            if not chunk:
                raise ValueError(f"{ENV}: the hand-over ended after {len(fds)} descriptors")
            if len(data) > _MAX_MANIFEST:
                raise ValueError(f"{ENV}: more than {_MAX_MANIFEST} bytes of manifest")
    except BaseException:
        for passed in fds:
            os.close(passed)
        raise


def _whole_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def _expected(manifest: bytes) -> int:
    """The descriptors a manifest announces (the lock, the admin socket, the listeners);
    0 if it says nothing readable: ``receive`` refuses it then."""
    try:
        return int(json.loads(manifest)["listeners"]) + 2
    except (ValueError, KeyError, TypeError):
        return 0


def _send_all(sock: socket.socket, manifest: bytes, fds: Sequence[int]) -> None:
    """The manifest as one line with the first ``SCM_BATCH`` descriptors, then one byte
    with each further ``SCM_BATCH`` of them."""
    socket.send_fds(sock, [manifest + b"\n"], list(fds[:SCM_BATCH]))
    for start in range(SCM_BATCH, len(fds), SCM_BATCH):
        socket.send_fds(sock, [b"+"], list(fds[start : start + SCM_BATCH]))


@dataclass
class NewDaemon:
    """The old daemon's side: the process it started and the pair's end it reads."""

    proc: subprocess.Popen[bytes]
    channel: socket.socket

    async def wait_ready(self, timeout: float) -> int:
        """The new daemon's pid once it is ready; ``UpgradeFailed`` with the reason."""
        loop = asyncio.get_running_loop()
        reader, writer = await asyncio.open_connection(sock=self.channel)
        try:
            line = await asyncio.wait_for(reader.readline(), timeout)
        except TimeoutError:
            self.kill()
            raise UpgradeFailed(
                f"the new nonstop (pid {self.proc.pid}) was not ready within {timeout:g}s: "
                "killed it"
            ) from None
        finally:
            writer.close()
        try:
            answer = json.loads(line) if line.strip() else None
        except ValueError:
            answer = None
        if isinstance(answer, dict) and answer.get("ready") is True:
            return self.proc.pid
        code = await loop.run_in_executor(None, self._end)
        reason = answer.get("error") if isinstance(answer, dict) else None
        if reason:
            raise UpgradeFailed(f"the new nonstop failed to start: {reason}")
        raise UpgradeFailed(f"the new nonstop exited with code {code} before it was ready")

    def _end(self) -> int | None:
        try:
            return self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.kill()
            return self.proc.returncode

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(10)


def start_new(
    argv: Sequence[str],
    lock_fd: int,
    admin_fd: int,
    listening: Sequence[tuple[int, int]],
    outlive: bool = False,
) -> NewDaemon:
    """Start ``argv`` (``nonstop run ...``) and hand it the lock, the admin socket and the
    listening sockets (``(worker index, fd)``); ``outlive``: they are systemd's, which
    keeps them open across a stop, and so will the new one know."""
    ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        env = dict(os.environ)
        env[ENV] = str(theirs.fileno())
        proc = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            env=env,
            pass_fds=(theirs.fileno(),),
            start_new_session=True,  # not in the old one's process group
        )
    except OSError as exc:
        ours.close()
        raise UpgradeFailed(f"cannot start the new nonstop: {exc.strerror or exc}") from None
    finally:
        theirs.close()
    manifest = json.dumps(
        {
            "listeners": len(listening),
            "workers": [index for index, _ in listening],
            "outlive": outlive,
        }
    ).encode()
    fds = [lock_fd, admin_fd, *(fd for _, fd in listening)]
    try:
        _send_all(ours, manifest, fds)
    except OSError as exc:
        ours.close()
        new = NewDaemon(proc, ours)
        new.kill()
        raise UpgradeFailed(f"cannot hand the sockets over: {exc.strerror or exc}") from None
    ours.setblocking(False)
    return NewDaemon(proc, ours)


def this_command() -> list[str]:
    """The command line that started this daemon, run by the code installed now."""
    return [sys.executable, "-m", "nonstop", *sys.argv[1:]]
