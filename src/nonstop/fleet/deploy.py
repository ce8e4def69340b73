"""``nonstop fleet deploy`` and ``fleet rollback``: every host through the front, as one.

The decisions are pure functions of what the hosts answered (``serving_problem``,
``verify_problem``, ``Ledger``); ``FleetRun`` is the thin shell that asks the hosts'
daemons, through their admin API over SSH (``daemons.py``), in this order:

1. take the fleet lock (``lease.py``) on the lock host, and keep renewing it every third
   of its ttl; a lease that is lost aborts the deploy (meanwhile, connect to every host
   and find its daemon: read-only);
2. every host reachable and running the app (or, with ``skip_unreachable``, the
   unreachable ones left out and named), and where each is in the front's upstream;
3. stage the artifact on every host before any switch (``staging.py``);
4. per batch: drain the batch's hosts at the front (one request), deploy the staged
   release on each of them in parallel, holding the old release warm, check each serves
   the release, undrain them (one request); the next batch only once this one serves;
5. a fleet-wide verify window (a host whose new release crashes, turns unhealthy, answers
   5xx or was rolled back by its own daemon fails it), then commit on every host.

Any failure before the commit, and a cancellation (Ctrl-C, SIGTERM, a lost lease), aborts
the held deploy on every host that switched, all at once (its old release is warm),
undrains what was drained, and raises ``FleetDeployFailed`` naming the host and the
reason.  The lease is released at the end, always.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from nonstop.fleet.config import FleetSpec
from nonstop.fleet.daemons import Daemons, last_json
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


def front_servers(status: dict[str, Any], upstream: str | None) -> list[str]:
    """The server addresses of ``upstream`` in the front's ``nonstop status --json``."""
    servers = (status.get("upstreams") or {}).get(upstream) or []
    return [str(server.get("address")) for server in servers]


def holder_name() -> str:
    return f"{_user_at_host()} (pid {os.getpid()})"


def _user_at_host() -> str:
    try:
        import getpass

        user = getpass.getuser()
    except (KeyError, OSError):
        user = str(os.getuid())
    return f"{user}@{socket.gethostname()}"


# -- the shell: SSH to the hosts ----------------------------------------------------------


class FleetRun:
    """One fleet deploy or rollback: its connections, its lease and its progress."""

    def __init__(self, spec: FleetSpec, app: str, emit: Emit) -> None:
        self.spec = spec
        self.app = app
        self.emit_to = emit
        self.started = time.monotonic()
        self.sessions = Sessions(spec.ssh)
        self.daemons = Daemons(self.sessions, spec.remote_nonstop)
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

    # -- the hosts' daemons -----------------------------------------------------------------

    async def call(
        self, host: Destination, cmd: str, config: str | None = None, **args: Any
    ) -> dict[str, Any]:
        """``cmd`` to the daemon on ``host`` (its admin API, over SSH): the final answer."""
        return await self.daemons.call(host, config or self.spec.remote_config, cmd, **args)

    async def act(self, host: Destination, cmd: str, **args: Any) -> dict[str, Any]:
        """``cmd`` for the app on ``host`` (deploy, commit, abort, rollback), on behalf of
        this run (its holder in the host's deploy lock and history): the answer."""
        holder = f"{_user_at_host()} (nonstop fleet)"
        return await self.call(host, cmd, app=self.app, holder=holder, pid=os.getpid(), **args)

    async def decide(self, host: Destination, cmd: str, what: str, **args: Any) -> None:
        """``act``, and ``HostError`` saying ``what`` and why unless it answered ok."""
        answer = await self.act(host, cmd, **args)
        if not answer.get("ok"):
            raise HostError(str(host), f"{what}: {answer.get('error')}")

    async def status(self, host: Destination) -> dict[str, Any]:
        answer = await self.call(host, "status")
        if not answer.get("ok"):
            raise HostError(str(host), f"`nonstop status` failed: {answer.get('error')}")
        return answer

    async def front_servers(self) -> None:
        """Where each host is in the front's upstream (checked before anything changes)."""
        if self.spec.front is None:
            return
        answer = await self.call(self.spec.front, "status", config=self.front_config)
        if not answer.get("ok"):
            raise HostError(str(self.spec.front), f"`nonstop status`: {answer.get('error')}")
        servers = front_servers(answer, self.spec.front_upstream)
        for host in self.spec.hosts:
            try:
                self.addresses[host] = self.spec.upstream_address(host, servers)
            except ValueError as exc:
                raise HostError(str(host), str(exc)) from None

    @property
    def front_config(self) -> str:
        return self.spec.front_config or self.spec.remote_config

    async def front(self, verb: str, hosts: Sequence[Destination], **extra: Any) -> None:
        """``verb`` (``drain``, ``undrain``) of ``hosts`` at the front, in one request:
        a batch leaves (or rejoins) the front's selection at once.  ``HostError`` naming
        the hosts when the front refuses or does not answer."""
        assert self.spec.front is not None and self.spec.front_upstream is not None
        addresses = [self.addresses[host] for host in hosts]
        servers: dict[str, Any] = (
            {"address": addresses[0]} if len(addresses) == 1 else {"addresses": addresses}
        )
        names = ", ".join(map(str, hosts))
        try:
            answer = await self.call(
                self.spec.front,
                verb,
                config=self.front_config,
                upstream=self.spec.front_upstream,
                **servers,
                **extra,
            )
        except HostError as exc:
            raise HostError(names, f"{verb} at the front: {exc}") from exc
        if not answer.get("ok"):
            why = answer.get("error")
            raise HostError(names, f"{verb} of {', '.join(addresses)} at the front failed: {why}")

    async def out_of_front(self, step: str, hosts: Sequence[Destination], ledger: Ledger) -> None:
        """Drain ``hosts`` at the front (one request); answered once nothing is in flight."""
        if self.spec.front is None:
            return
        for host in hosts:
            self.emit("drain", "draining at the front", host)
        ledger.drained.extend(hosts)
        try:
            await self.front("drain", hosts, timeout=DRAIN_TIMEOUT)
        except HostError as exc:
            raise FleetDeployFailed(exc.host, f"{step}: {exc.reason}") from exc

    async def into_front(self, step: str, hosts: Sequence[Destination], ledger: Ledger) -> None:
        """Put ``hosts`` back into the front (one request)."""
        if self.spec.front is None:
            return
        try:
            await self.front("undrain", hosts)
        except HostError as exc:
            raise FleetDeployFailed(exc.host, f"{step}: {exc.reason}") from exc
        for host in hosts:
            ledger.drained.remove(host)
            self.emit("undrain", "back in the front", host)

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

    async def warm_up(self) -> None:
        """Connect to every host and the front, and find their daemons, while the lock
        is being taken: what the first steps would do anyway, read-only, so a refused
        lock loses nothing.  Failures are left for the steps to meet and report."""
        hosts = [*self.spec.hosts, *([self.spec.front] if self.spec.front else [])]

        async def find(host: Destination) -> None:
            config = self.front_config if host == self.spec.front else self.spec.remote_config
            await self.daemons.find(host, config)

        await asyncio.gather(*(find(h) for h in hosts), return_exceptions=True)

    # -- the steps ------------------------------------------------------------------------

    async def reachable(self, skip_unreachable: bool) -> list[Destination]:
        """The hosts to deploy: every one running the app (or the reachable ones)."""

        async def check(conn: Connection) -> None:
            problem = serving_problem(await self.status(conn.destination), self.app, None)
            if problem is not None:
                raise HostError(conn.name, problem)

        # the hosts and the front at once; the front's problem, if any, is the one to report
        checked, placed = await asyncio.gather(
            self.sessions.each("checking the hosts", self.spec.hosts, check),
            self.front_servers(),
            return_exceptions=True,
        )
        if isinstance(placed, BaseException):
            raise placed
        if not isinstance(checked, BaseException):
            return list(self.spec.hosts)
        if not isinstance(checked, HostsFailed):
            raise checked
        down = {h for h, e in checked.failures.items() if isinstance(e, HostUnreachable)}
        if not skip_unreachable or len(down) < len(checked.failures):
            raise checked
        left = [h for h in self.spec.hosts if str(h) not in down]
        if not left:
            raise checked
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

    async def batch(self, hosts: Sequence[Destination], release: str, ledger: Ledger) -> None:
        """One batch: out of the front together, each host switched (in parallel), back
        into the front together once every one of them serves ``release``."""
        await self.out_of_front("deploy", hosts, ledger)
        await self.each_host("deploy", hosts, lambda host: self.switch(host, release, ledger))
        await self.into_front("deploy", hosts, ledger)

    async def switch(self, host: Destination, release: str, ledger: Ledger) -> None:
        self.emit("deploy", f"deploying {release}, the old release held warm", host)
        ledger.switched.append(host)
        await self.decide(
            host, "deploy", f"refused {release}", release=release, hold=self.spec.hold_timeout
        )
        status = await self.status(host)
        problem = serving_problem(status, self.app, release)
        if problem is not None:
            raise HostError(str(host), problem)
        self.switched_status[host] = status
        self.emit("serving", f"serves {release}", host)

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
            answer = await self.act(host, "abort")
            if not answer.get("ok") and "no deploy" not in str(answer.get("error")):
                raise HostError(str(host), f"abort failed: {answer.get('error')}")

        switched = ledger.to_abort()
        results = await asyncio.gather(*(abort(h) for h in switched), return_exceptions=True)
        for host, result in zip(switched, results, strict=True):
            if isinstance(result, HostError | OSError):
                troubles.append(
                    str(result) if isinstance(result, HostError) else f"{host}: {result}"
                )
                unknown.add(host)
            elif isinstance(result, BaseException):
                raise result
        back = [str(h) for h in switched if h not in unknown]
        if back:
            self.emit("aborted", f"back on the previous release: {', '.join(back)}")
        for host in ledger.to_undrain():
            if host in unknown:
                troubles.append(
                    f"{host}: left drained at the front (its own daemon rolls it back when "
                    f"its hold ends, within {self.spec.hold_timeout:g}s; then `nonstop "
                    "undrain` it at the front)"
                )
        undrain = [h for h in ledger.to_undrain() if h not in unknown]
        if undrain:
            try:
                await self.front("undrain", undrain)
            except HostError as exc:
                troubles.append(str(exc))
            else:
                for host in undrain:
                    self.emit("undrain", "back in the front", host)
        return troubles

    async def deploy(
        self, source: Path, workdir: Path, skip_unreachable: bool, verify: float
    ) -> None:
        # the artifact is hashed (and a directory packed) in a thread while the hosts are
        # reached and checked: the loop keeps answering, and the two waits overlap
        packing = asyncio.ensure_future(asyncio.to_thread(pack, source, workdir))
        try:
            hosts = await self.reachable(skip_unreachable)
        except BaseException:
            # the thread writes into ``workdir``, which the caller removes: let it finish
            # (bounded by the artifact's size), then report what stopped the deploy
            with contextlib.suppress(BaseException):
                await asyncio.shield(packing)
            raise
        artifact = await packing
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
                await self.batch(batch, release, ledger)
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
        await self.decide(host, "commit", "commit failed")
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
            self.emit("rollback", "back to the previous release", host)
            await self.decide(host, "rollback", "rollback failed")
            problem = serving_problem(await self.status(host), self.app, None)
            if problem is not None:
                raise HostError(str(host), problem)

        try:
            for batch in batches_of(hosts, self.sizes(len(hosts))):
                await self.out_of_front("rollback", batch, ledger)
                await self.each_host("rollback", batch, back)
                await self.into_front("rollback", batch, ledger)
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
        warm = asyncio.ensure_future(run.warm_up())
        try:
            await run.acquire(lock_wait)
        except BaseException:
            warm.cancel()
            await asyncio.gather(warm, return_exceptions=True)
            raise
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
