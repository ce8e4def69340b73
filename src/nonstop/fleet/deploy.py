"""``nonstop fleet deploy`` and ``fleet rollback``: every host through the front, as one.

The decisions are pure functions of what the hosts answered (``serving_problem``,
``verify_problem``, ``Ledger``); ``FleetRun`` is the thin shell that asks the hosts over
SSH, in this order:

1. take the fleet lock (``lease.py``) on the lock host, and keep renewing it every third
   of its ttl; a lease that is lost aborts the deploy;
2. every host reachable and running the app (or, with ``skip_unreachable``, the
   unreachable ones left out and named);
3. stage the artifact on every host before any switch (``staging.py``);
4. per batch, the batch's hosts in parallel, per host: drain it at the front, deploy the
   staged release on it holding the old release warm, check it serves the release,
   undrain it; the next batch only once this one serves;
5. a fleet-wide verify window (a host whose new release crashes, turns unhealthy, answers
   5xx or was rolled back by its own daemon fails it), then commit on every host.

Any failure before the commit, and a cancellation (Ctrl-C, SIGTERM, a lost lease), aborts
the held deploy on every host that switched (its old release is warm), undrains what was
drained, and raises ``FleetDeployFailed`` naming the host and the reason.  The lease is
released at the end, always.
"""

from __future__ import annotations

import asyncio
import json
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from nonstop.fleet.config import FleetSpec
from nonstop.fleet.errors import FleetError, HostError, HostsFailed, HostUnreachable
from nonstop.fleet.lease import new_token
from nonstop.fleet.ssh import Connection, Destination, Sessions
from nonstop.fleet.staging import pack, stage

__all__ = [
    "FleetDeployFailed",
    "FleetRun",
    "Ledger",
    "LockRefused",
    "batches_of",
    "serving_problem",
    "verify_problem",
]

LEASE_TTL = 30.0
"""Seconds a silent lease outlives its last heartbeat (renewed every third of it)."""
DRAIN_TIMEOUT = 30.0
POLL = 0.5
"""Seconds between two looks at the hosts during the verify window."""

Emit = Callable[[dict[str, Any]], None]


class FleetDeployFailed(FleetError):
    """The fleet deploy failed before its commit; every switched host was rolled back."""

    def __init__(self, host: str, reason: str, rollback: list[str] | None = None) -> None:
        self.host = host
        self.reason = reason
        self.rollback = rollback or []
        trouble = "; ".join(self.rollback)
        tail = f" (rolling back: {trouble})" if trouble else ""
        super().__init__(f"{host}: {reason}{tail}")


class LockRefused(FleetError):
    """Another run holds the fleet lock."""


# -- pure decisions -----------------------------------------------------------------------


def batches_of(hosts: Sequence[Destination], sizes: Sequence[int]) -> list[list[Destination]]:
    """``hosts`` cut into batches of ``sizes``, in order."""
    out: list[list[Destination]] = []
    start = 0
    for size in sizes:
        out.append(list(hosts[start : start + size]))
        start += size
    return [batch for batch in out if batch]


def _app(status: dict[str, Any], app: str) -> dict[str, Any] | None:
    apps = status.get("apps") or {}
    found = apps.get(app)
    return found if isinstance(found, dict) else None


def serving_instances(app_status: dict[str, Any]) -> list[dict[str, Any]]:
    """The instances that take the app's traffic: while a deploy holds, those of its new
    release (the live record and slot change only at the commit), else the live ones."""
    instances = app_status.get("instances") or []
    run = app_status.get("deploy") or {}
    if run.get("phase") == "hold":
        return [i for i in instances if i.get("release") == run.get("release")]
    return [i for i in instances if i.get("live")]


def serving_problem(status: dict[str, Any], app: str, release: str | None) -> str | None:
    """Why the host whose ``nonstop status --json`` is ``status`` does not serve
    ``release`` of ``app`` (any release when None), or None when it does."""
    found = _app(status, app)
    if found is None:
        return f"no app {app} in its nonstop config"
    live = found.get("live")
    if not live:
        return f"{app} has no live release"
    instances = serving_instances(found)
    if not instances:
        return f"{app} has no live instance"
    serving = sorted({str(i.get("release")) for i in instances})
    if release is not None and serving != [release]:
        return f"{app} serves {', '.join(serving)}, not {release}"
    gone = [i for i in instances if i.get("state", "running") != "running"]
    if gone:
        state = gone[0].get("state")
        what = "crashed" if state == "crashed" else f"is {state}"
        return f"{app}'s instance on port {gone[0].get('port')} {what}"
    down = [i for i in instances if i.get("health") != "up"]
    if down:
        return f"{app}'s instance on port {down[0].get('port')} is {down[0].get('health')}"
    return None


def verify_problem(
    before: dict[str, Any], now: dict[str, Any], app: str, release: str
) -> str | None:
    """What went wrong on a host since ``before`` (both its ``status --json``), during the
    fleet-wide verify window: not serving ``release`` any more, a live instance that
    restarted (its pid changed), a held deploy its own daemon ended, or a 5xx answer."""
    problem = serving_problem(now, app, release)
    if problem is not None:
        return problem
    then_app, now_app = _app(before, app) or {}, _app(now, app) or {}
    if not now_app.get("deploy") or now_app["deploy"].get("phase") != "hold":
        return f"{app}'s held deploy ended on its own (see `nonstop status {app}` there)"
    earlier = {i.get("port"): i for i in serving_instances(then_app)}
    for instance in serving_instances(now_app):
        old = earlier.get(instance.get("port"))
        if old is None:
            continue
        if old.get("pid") != instance.get("pid"):
            return f"{app}'s instance on port {instance.get('port')} restarted (crashed)"
        errors = (instance.get("responses_5xx") or 0) - (old.get("responses_5xx") or 0)
        if errors > 0:
            return f"{app} answered {errors} 5xx response(s) on port {instance.get('port')}"
    return None


@dataclass
class Ledger:
    """What the deploy changed so far, so a failure undoes exactly that."""

    drained: list[Destination] = field(default_factory=list)
    switched: list[Destination] = field(default_factory=list)
    committed: bool = False

    def to_abort(self) -> list[Destination]:
        """Hosts whose held deploy must be aborted: every one that (maybe) switched."""
        return [] if self.committed else list(self.switched)

    def to_undrain(self) -> list[Destination]:
        return list(self.drained)


def last_json(stdout: bytes) -> dict[str, Any] | None:
    """The answer a ``nonstop ... --json`` printed: the whole output when it is one
    (indented) JSON object, else its last line (after one line per event)."""
    text = stdout.decode("utf-8", "replace").strip()
    for candidate in (text, text.rsplit("\n", 1)[-1]):
        try:
            value = json.loads(candidate)
        except ValueError:
            continue
        if isinstance(value, dict):
            return value
    return None


def front_servers(status: dict[str, Any], upstream: str | None) -> list[str]:
    """The server addresses of ``upstream`` in the front's ``nonstop status --json``."""
    servers = (status.get("upstreams") or {}).get(upstream) or []
    return [str(server.get("address")) for server in servers]


def holder_name() -> str:
    try:
        import getpass

        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()} (pid {os.getpid()})"


# -- the shell: SSH to the hosts ----------------------------------------------------------


class FleetRun:
    """One fleet deploy or rollback: its connections, its lease and its progress."""

    def __init__(self, spec: FleetSpec, app: str, emit: Emit) -> None:
        self.spec = spec
        self.app = app
        self.emit_to = emit
        self.started = time.monotonic()
        self.sessions = Sessions(spec.ssh)
        self.token = new_token()
        self.stop_reason: str | None = None
        self.addresses: dict[Destination, str] = {}
        self.left_out: list[str] = []
        self.switched_status: dict[Destination, dict[str, Any]] = {}
        """Each switched host's status once it served the release: what verify compares
        with, so a crash and a restart between a host's switch and the verify window, or
        a 5xx answered meanwhile, still count."""

    def emit(self, event: str, message: str, host: Destination | None = None, **extra: Any) -> None:
        data: dict[str, Any] = {"event": event, "t": round(time.monotonic() - self.started, 3)}
        if host is not None:
            data["host"] = str(host)
        data["message"] = message
        data.update(extra)
        self.emit_to(data)

    # -- remote commands ------------------------------------------------------------------

    async def nonstop(
        self, host: Destination, *args: str, config: str | None = None
    ) -> tuple[int, dict[str, Any] | None, str]:
        """``nonstop ARGS -c CONFIG`` on ``host``: exit status, its JSON answer, stderr."""
        conn = await self.sessions.get(host)
        argv = [self.spec.remote_nonstop, *args, "-c", config or self.spec.remote_config]
        done = await conn.run(argv, check=False)
        return done.exit_status, last_json(done.stdout), done.stderr.decode("utf-8", "replace")

    async def status(self, host: Destination) -> dict[str, Any]:
        code, answer, stderr = await self.nonstop(host, "status", "--json")
        if code != 0 or answer is None:
            raise HostError(str(host), f"`nonstop status` exited {code}: {stderr.strip()[-300:]}")
        return answer

    async def front_servers(self) -> None:
        """Where each host is in the front's upstream (checked before anything changes)."""
        if self.spec.front is None:
            return
        code, answer, stderr = await self.nonstop(
            self.spec.front, "status", "--json", config=self.front_config
        )
        if code != 0 or answer is None:
            raise HostError(str(self.spec.front), f"`nonstop status` exited {code}: {stderr}")
        servers = front_servers(answer, self.spec.front_upstream)
        for host in self.spec.hosts:
            try:
                self.addresses[host] = self.spec.upstream_address(host, servers)
            except ValueError as exc:
                raise HostError(str(host), str(exc)) from None

    @property
    def front_config(self) -> str:
        return self.spec.front_config or self.spec.remote_config

    async def _front(self, verb: str, host: Destination, *extra: str) -> None:
        assert self.spec.front is not None and self.spec.front_upstream is not None
        address = self.addresses[host]
        args = (verb, self.spec.front_upstream, address, *extra, "--json")
        code, answer, stderr = await self.nonstop(self.spec.front, *args, config=self.front_config)
        if code != 0:
            why = (answer or {}).get("error") or stderr.strip()[-300:]
            raise HostError(str(host), f"{verb} of {address} at the front failed: {why}")

    # -- the lease ------------------------------------------------------------------------

    async def _lease(self, verb: str, *extra: str) -> tuple[int, dict[str, Any]]:
        host = self.spec.lock_host
        conn = await self.sessions.get(host)
        argv = [
            self.spec.remote_nonstop,
            *("fleet", "lease", verb, "--file", self.spec.lease_path, "--token", self.token),
            *extra,
        ]
        done = await conn.run(argv, check=False)
        answer = last_json(done.stdout)
        if done.exit_status not in (0, 1) or answer is None:
            detail = (answer or {}).get("error") or done.stderr.decode("utf-8", "replace")
            raise HostError(str(host), f"the fleet lease: {str(detail).strip()[-300:]}")
        return done.exit_status, answer

    async def acquire(self, wait: float) -> None:
        deadline = time.monotonic() + wait
        holder = holder_name()
        while True:
            code, answer = await self._lease(
                "acquire", "--holder", holder, "--ttl", f"{LEASE_TTL:g}s"
            )
            if code == 0:
                replaced = answer.get("replaced")
                note = f", replacing the expired lease of {replaced['holder']}" if replaced else ""
                self.emit("lock", f"fleet lock taken on {self.spec.lock_host}{note}")
                return
            if time.monotonic() >= deadline:
                raise LockRefused(str(answer.get("reason") or "the fleet is locked"))
            await asyncio.sleep(min(1.0, max(0.0, deadline - time.monotonic())))

    async def heartbeat(self, work: asyncio.Task[Any]) -> None:
        """Renew the lease every third of its ttl; cancel ``work`` once it is lost."""
        last_ok = time.monotonic()
        while True:
            await asyncio.sleep(LEASE_TTL / 3)
            try:
                code, answer = await self._lease("renew")
            except HostError as exc:
                if time.monotonic() - last_ok < LEASE_TTL * 2 / 3:
                    continue
                code, answer = 1, {"reason": str(exc)}
            if code == 0:
                last_ok = time.monotonic()
                continue
            self.stop(work, f"the fleet lock was lost: {answer.get('reason')}")
            return

    def stop(self, work: asyncio.Task[Any], reason: str) -> None:
        """Cancel the deploy (a signal, a lost lease): it rolls back and says ``reason``."""
        if self.stop_reason is None:
            self.stop_reason = reason
            work.cancel()

    async def release_lease(self) -> None:
        try:
            await self._lease("release")
            self.emit("unlock", "fleet lock released")
        except HostError as exc:
            self.emit("unlock", f"could not release the fleet lock (it expires on its own): {exc}")

    # -- the steps ------------------------------------------------------------------------

    async def reachable(self, skip_unreachable: bool) -> list[Destination]:
        """The hosts to deploy: every one running the app (or the reachable ones)."""

        async def check(conn: Connection) -> None:
            problem = serving_problem(await self.status(conn.destination), self.app, None)
            if problem is not None:
                raise HostError(conn.name, problem)

        await self.front_servers()
        try:
            await self.sessions.each("checking the hosts", self.spec.hosts, check)
            return list(self.spec.hosts)
        except HostsFailed as exc:
            down = {h for h, e in exc.failures.items() if isinstance(e, HostUnreachable)}
            if not skip_unreachable or len(down) < len(exc.failures):
                raise
            left = [h for h in self.spec.hosts if str(h) not in down]
            if not left:
                raise
            self.left_out = sorted(down)
            self.emit("skip", f"leaving out unreachable hosts: {', '.join(self.left_out)}")
            return left

    async def each_host(
        self,
        step: str,
        hosts: Sequence[Destination],
        work: Callable[[Destination], Awaitable[None]],
    ) -> None:
        """``work`` on every host at once; the first host that failed, and why, raised."""
        results = await asyncio.gather(*(work(h) for h in hosts), return_exceptions=True)
        for result in results:
            if isinstance(result, HostError):
                raise FleetDeployFailed(result.host, f"{step}: {result.reason}")
            if isinstance(result, BaseException):
                raise result

    async def switch(self, host: Destination, release: str, ledger: Ledger) -> None:
        if self.spec.front is not None:
            self.emit("drain", "draining at the front", host)
            ledger.drained.append(host)
            await self._front("drain", host, "--timeout", f"{DRAIN_TIMEOUT:g}")
        self.emit("deploy", f"deploying {release}, the old release held warm", host)
        ledger.switched.append(host)
        code, answer, stderr = await self.nonstop(
            host,
            *("deploy", self.app, "--release", release),
            *("--hold", "--hold-timeout", f"{self.spec.hold_timeout:g}", "--json"),
        )
        if code != 0 or not answer or not answer.get("ok"):
            why = (answer or {}).get("error") or stderr.strip()[-300:] or f"exit {code}"
            raise HostError(str(host), f"refused {release}: {why}")
        status = await self.status(host)
        problem = serving_problem(status, self.app, release)
        if problem is not None:
            raise HostError(str(host), problem)
        self.switched_status[host] = status
        self.emit("serving", f"serves {release}", host)
        if self.spec.front is not None:
            await self._front("undrain", host)
            ledger.drained.remove(host)
            self.emit("undrain", "back in the front", host)

    async def verify(self, hosts: Sequence[Destination], release: str, window: float) -> None:
        self.emit("verify", f"verifying every host for {window:g}s")
        before = self.switched_status
        deadline = time.monotonic() + window
        while True:

            async def look(host: Destination) -> None:
                problem = verify_problem(before[host], await self.status(host), self.app, release)
                if problem is not None:
                    raise HostError(str(host), problem)

            await self.each_host("verify", hosts, look)
            if time.monotonic() >= deadline:
                return
            await asyncio.sleep(min(POLL, max(0.0, deadline - time.monotonic())))

    async def undo(self, ledger: Ledger) -> list[str]:
        """Abort every switched host's held deploy, undrain what was drained; the
        troubles met on the way (each names its host).  A host that could not be aborted
        (unreachable, say) stays drained at the front: what it serves is not known, and
        its own daemon rolls it back when its hold ends."""
        troubles: list[str] = []
        unknown: set[Destination] = set()

        async def abort(host: Destination) -> None:
            self.emit("abort", "back to the warm previous release", host)
            code, answer, stderr = await self.nonstop(host, "abort", self.app, "--json")
            if code != 0 and "no deploy" not in str((answer or {}).get("error")):
                why = (answer or {}).get("error") or stderr.strip()[-300:]
                raise HostError(str(host), f"abort failed: {why}")

        async def undrain(host: Destination) -> None:
            if host in unknown:
                troubles.append(
                    f"{host}: left drained at the front (its own daemon rolls it back when "
                    f"its hold ends, within {self.spec.hold_timeout:g}s; then `nonstop "
                    "undrain` it at the front)"
                )
                return
            await self._front("undrain", host)
            self.emit("undrain", "back in the front", host)

        for work, hosts in ((abort, ledger.to_abort()), (undrain, ledger.to_undrain())):
            results = await asyncio.gather(*(work(h) for h in hosts), return_exceptions=True)
            for host, result in zip(hosts, results, strict=True):
                if isinstance(result, HostError | OSError):
                    troubles.append(
                        str(result) if isinstance(result, HostError) else f"{host}: {result}"
                    )
                    unknown.add(host)
                elif isinstance(result, BaseException):
                    raise result
            back = [str(h) for h in hosts if h not in unknown]
            if work is abort and back:
                self.emit("aborted", f"back on the previous release: {', '.join(back)}")
        return troubles

    async def deploy(
        self, source: Path, workdir: Path, skip_unreachable: bool, verify: float
    ) -> None:
        hosts = await self.reachable(skip_unreachable)
        artifact = pack(source, workdir)
        self.emit("stage", f"staging {artifact.name} ({artifact.sha256[:12]}) on every host")
        try:
            staged = await stage(self.sessions, hosts, artifact, self.spec.releases_dir)
        except HostsFailed as exc:
            name, error = next(iter(exc.failures.items()))
            raise FleetDeployFailed(name, f"staging: {error.reason}") from exc
        for host, result in staged.items():
            self.emit("staged", "sent" if result.uploaded else "already there", host)
        release = artifact.remote_path(self.spec.releases_dir)
        ledger = Ledger()
        try:
            for number, batch in enumerate(batches_of(hosts, self.sizes(len(hosts))), 1):
                names = ", ".join(map(str, batch))
                self.emit("batch", f"batch {number}: {names}", batch=number)
                await self.each_host(
                    "deploy", batch, lambda host: self.switch(host, release, ledger)
                )
            await self.verify(hosts, release, verify)
        except (FleetDeployFailed, asyncio.CancelledError) as exc:
            await self._roll_back(ledger, exc)
        self.emit("commit", "every host serves the release: committing")
        await self.each_host("commit", hosts, self._commit)
        ledger.committed = True
        left_out = f"; left out: {', '.join(self.left_out)}" if self.left_out else ""
        self.emit("done", f"{self.app} {release} is live on {len(hosts)} host(s){left_out}")

    def sizes(self, count: int) -> list[int]:
        from nonstop.fleet.batches import batch_sizes

        return batch_sizes(self.spec.batches, count)

    async def _commit(self, host: Destination) -> None:
        code, answer, stderr = await self.nonstop(host, "commit", self.app, "--json")
        if code != 0:
            why = (answer or {}).get("error") or stderr.strip()[-300:]
            raise HostError(str(host), f"commit failed: {why}")
        self.emit("committed", "old release stopped", host)

    async def _roll_back(self, ledger: Ledger, exc: BaseException) -> NoReturn:
        if isinstance(exc, FleetDeployFailed):
            host, reason = exc.host, exc.reason
        else:
            host, reason = "the deploying command", self.stop_reason or "interrupted"
        self.emit("rollback", f"{host}: {reason}; rolling every switched host back")
        troubles = await asyncio.shield(self.undo(ledger))
        raise FleetDeployFailed(host, reason, troubles)

    async def rollback(self, hosts: Sequence[Destination]) -> None:
        """Every host back to its previous release, batch by batch through the front."""
        ledger = Ledger()
        await self.front_servers()

        async def back(host: Destination) -> None:
            if self.spec.front is not None:
                self.emit("drain", "draining at the front", host)
                ledger.drained.append(host)
                await self._front("drain", host, "--timeout", f"{DRAIN_TIMEOUT:g}")
            self.emit("rollback", "back to the previous release", host)
            code, answer, stderr = await self.nonstop(host, "rollback", self.app, "--json")
            if code != 0:
                why = (answer or {}).get("error") or stderr.strip()[-300:]
                raise HostError(str(host), f"rollback failed: {why}")
            problem = serving_problem(await self.status(host), self.app, None)
            if problem is not None:
                raise HostError(str(host), problem)
            if self.spec.front is not None:
                await self._front("undrain", host)
                ledger.drained.remove(host)
                self.emit("undrain", "back in the front", host)

        try:
            for batch in batches_of(hosts, self.sizes(len(hosts))):
                await self.each_host("rollback", batch, back)
        except (FleetDeployFailed, asyncio.CancelledError) as exc:
            ledger.switched.clear()  # a rollback holds nothing to abort
            await self._roll_back(ledger, exc)
        self.emit("done", f"{self.app} is back on its previous release on {len(hosts)} host(s)")


async def run_fleet(
    spec: FleetSpec,
    app: str,
    emit: Emit,
    action: Callable[[FleetRun], Awaitable[None]],
    lock_wait: float = 0.0,
) -> None:
    """``action`` under the fleet lock, with its heartbeat; SIGINT and SIGTERM cancel it
    (it rolls back), and the lease is released at the end, always."""
    import signal

    run = FleetRun(spec, app, emit)
    loop = asyncio.get_running_loop()
    async with run.sessions:
        await run.acquire(lock_wait)
        try:
            work = asyncio.ensure_future(action(run))
            for sig in (signal.SIGINT, signal.SIGTERM):
                loop.add_signal_handler(sig, run.stop, work, f"interrupted by {sig.name}")
            beat = asyncio.ensure_future(run.heartbeat(work))
            try:
                await work
            except asyncio.CancelledError:
                raise FleetDeployFailed(
                    "the deploying command", run.stop_reason or "interrupted"
                ) from None
            finally:
                beat.cancel()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.remove_signal_handler(sig)
        finally:
            await run.release_lease()
