"""The fleet lock: a lease with a holder, a heartbeat and an expiry.

A fleet deploy holds the lease from its first step to its commit or rollback.  The holder
renews it (the heartbeat) every third of its ``ttl``; a deployer that is killed, or a CI
job that is cancelled, stops renewing, and its lease expires on its own ``ttl`` after the
last heartbeat — the next deploy takes it over and says whose lease it replaced.  (A lock
that is a directory, or a row nobody renews, stays behind after a cancelled run until a
person removes it.)

The lease lives in one small JSON file on one host (the front, or the fleet's first
host).  Every change is made on that host by ``nonstop fleet lease``, run over SSH, under
an exclusive ``flock``: read the file, decide (the pure functions below), write the new
state to a temporary file, ``fsync`` it and rename it over the old one.  Two deployers
racing for the lease are serialised by the ``flock``; exactly one of them is granted it.
A token drawn at acquisition identifies the holder's run: renewing or releasing needs it,
so a run that lost its lease (it stalled past the ``ttl`` and another run took over) can
neither extend nor free the new holder's lease.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import secrets
from collections.abc import Callable
from dataclasses import asdict, dataclass

from nonstop.errors import NonstopError

__all__ = [
    "Decision",
    "Lease",
    "LeaseFile",
    "LeaseFileError",
    "acquire",
    "new_token",
    "release",
    "renew",
]


class LeaseFileError(NonstopError):
    """The lease file cannot be read or written; no deploy may assume it holds the lock."""

    exit_code = 4


@dataclass(frozen=True, slots=True)
class Lease:
    holder: str  # who, for people: "ci@runner-7 (pid 4242)"
    token: str  # drawn at acquisition; renew and release must present it
    acquired: float  # wall-clock seconds
    heartbeat: float  # wall-clock seconds of the last renewal
    ttl: float  # seconds a lease outlives its last heartbeat

    @property
    def expires(self) -> float:
        return self.heartbeat + self.ttl

    def expired(self, now: float) -> bool:
        return now >= self.expires

    def describe(self, now: float) -> str:
        return (
            f"{self.holder}, since {now - self.acquired:.0f}s ago, last heartbeat "
            f"{now - self.heartbeat:.0f}s ago, expires in {max(0.0, self.expires - now):.0f}s"
        )


@dataclass(frozen=True, slots=True)
class Decision:
    """What a change to the lease came to.

    ``lease`` is the lease in force afterwards: the caller's when ``granted``, else the
    one that stands in its way (None when there is none).  ``replaced`` is an expired lease
    an acquisition took over.
    """

    granted: bool
    lease: Lease | None
    replaced: Lease | None = None
    reason: str = ""
    changed: bool = False  # whether the file must be written


def new_token() -> str:
    return secrets.token_hex(16)


def acquire(current: Lease | None, holder: str, token: str, now: float, ttl: float) -> Decision:
    """Take the lease if nobody holds it, or its holder stopped renewing it."""
    if ttl <= 0:
        raise ValueError("a lease needs a positive ttl")
    if current is not None and current.token == token:
        return renew(current, token, now)
    if current is not None and not current.expired(now):
        return Decision(False, current, reason=f"the fleet is locked by {current.describe(now)}")
    mine = Lease(holder=holder, token=token, acquired=now, heartbeat=now, ttl=ttl)
    return Decision(True, mine, replaced=current, changed=True)


def renew(current: Lease | None, token: str, now: float) -> Decision:
    """The heartbeat: extend the caller's lease; refused once another run holds it."""
    if current is None:
        return Decision(False, None, reason="the lease was released: nobody holds the fleet lock")
    if current.token != token:
        return Decision(
            False, current, reason=f"the lease was taken over by {current.describe(now)}"
        )
    return Decision(True, _replace_heartbeat(current, now), changed=True)


def release(current: Lease | None, token: str) -> Decision:
    """Give the lease up; releasing a lease another run holds changes nothing."""
    if current is None:
        return Decision(True, None)
    if current.token != token:
        return Decision(False, current, reason=f"the lease is held by {current.holder}")
    return Decision(True, None, changed=True)


def _replace_heartbeat(lease: Lease, now: float) -> Lease:
    return Lease(lease.holder, lease.token, lease.acquired, now, lease.ttl)


class LeaseFile:
    """The lease's one file, changed only under an exclusive ``flock`` of ``PATH.lock``."""

    def __init__(self, path: str) -> None:
        self.path = path

    def read(self) -> Lease | None:
        try:
            with open(self.path, encoding="utf-8") as f:
                text = f.read()
        except FileNotFoundError:
            return None
        except OSError as exc:
            raise LeaseFileError(f"cannot read the fleet lease {self.path}: {exc}") from exc
        if not text.strip():
            return None
        try:
            data = json.loads(text)
            return Lease(
                holder=str(data["holder"]),
                token=str(data["token"]),
                acquired=float(data["acquired"]),
                heartbeat=float(data["heartbeat"]),
                ttl=float(data["ttl"]),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise LeaseFileError(
                f"the fleet lease {self.path} is not a lease ({exc!r}): remove it once you "
                "are sure no fleet deploy runs"
            ) from exc

    def change(self, decide: Callable[[Lease | None], Decision]) -> Decision:
        """Read, decide and write as one step with respect to every other ``change``."""
        directory = os.path.dirname(self.path) or "."
        try:
            os.makedirs(directory, mode=0o700, exist_ok=True)
            lock = os.open(self.path + ".lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        except OSError as exc:
            raise LeaseFileError(f"cannot open the fleet lease {self.path}: {exc}") from exc
        try:
            fcntl.flock(lock, fcntl.LOCK_EX)
            decision = decide(self.read())
            if decision.changed:
                self._write(decision.lease)
            return decision
        finally:
            os.close(lock)  # closing the descriptor releases the flock

    def _write(self, lease: Lease | None) -> None:
        if lease is None:
            try:
                os.unlink(self.path)
            except FileNotFoundError:
                pass
            except OSError as exc:
                raise LeaseFileError(f"cannot remove the fleet lease {self.path}: {exc}") from exc
            return
        temporary = f"{self.path}.{os.getpid()}.tmp"
        try:
            fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, 0o600)
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                json.dump(asdict(lease), f)
                f.flush()
                os.fsync(f.fileno())
            os.replace(temporary, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(temporary)
            raise LeaseFileError(f"cannot write the fleet lease {self.path}: {exc}") from exc
