"""The live status page: static files and a server-sent event stream on the HTTP admin listener.

``GET /`` is a page of plain HTML, CSS and a little JavaScript shipped in ``admin/page/``
(no build step, nothing fetched from another host). ``GET /events`` feeds it as
``text/event-stream``:

- ``event: snapshot`` first, then every ``interval`` seconds: the admin status JSON
  (``status`` in docs/admin-api.md) plus the answers relayed since the last snapshot, so the
  page draws requests/s and the error rate; the first one also carries the recent history;
- one event per control-plane event as it happens, named by its ``kind`` (``deploy``,
  ``health``, ``drain``, ``reload``, ``instance``), with an ``id:`` so a page that reconnects
  with ``Last-Event-ID`` is sent what it missed;
- a comment every ``heartbeat`` seconds, so proxies and the page see a live connection.

The page reads the stream with ``fetch()``, not ``EventSource``: an ``EventSource`` cannot
send ``Authorization: Bearer``. The token comes from the page's fragment (``/#token=...``),
which browsers never send to a server, so it ends up in no log.

One :class:`StatusFeed` per listener takes snapshots and control events once and fans them
out to every connected page through a bounded buffer each: a page that reads too slowly is
dropped (it reconnects and starts from a fresh snapshot) instead of growing memory or holding
up the daemon.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import itertools
import json
import logging
import re
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

from nonstop.admin.http import AdminHttp, HttpRequest, HttpResponse

__all__ = [
    "ASSETS",
    "RequestRate",
    "Sample",
    "StatusFeed",
    "add_status_page",
    "sse_event",
]

log = logging.getLogger("nonstop")

Snapshot = Callable[[], Awaitable[Mapping[str, Any]]]
Subscribe = Callable[[], AsyncIterator[Mapping[str, Any]]]

# path -> (file in admin/page/, content type)
ASSETS = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/page.js": ("page.js", "text/javascript; charset=utf-8"),
    "/page.css": ("page.css", "text/css; charset=utf-8"),
}
# The browser enforces what the page promises: nothing is loaded from another origin.
_ASSET_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; "
        "img-src 'self' data:; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    ),
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "no-referrer",
}
_KIND = re.compile(r"[a-z][a-z_]{0,31}")


def sse_event(event: str, data: Mapping[str, Any], event_id: int | None = None) -> bytes:
    """One server-sent event: ``id:``, ``event:`` and ``data:`` lines, then a blank line."""
    lines = [] if event_id is None else [f"id: {event_id}"]
    lines.append(f"event: {event}")
    text = json.dumps(data, default=str, separators=(",", ":"))
    lines.extend(f"data: {line}" for line in text.split("\n"))
    return ("\n".join(lines) + "\n\n").encode()


@dataclass(frozen=True, slots=True)
class Sample:
    """Answers relayed between two snapshots: what the page's chart plots."""

    t: float
    interval: float
    requests: int
    errors: int

    def as_json(self) -> dict[str, float | int]:
        return {
            "t": round(self.t, 3),
            "interval": round(self.interval, 3),
            "requests": self.requests,
            "errors": self.errors,
        }


@dataclass(slots=True)
class RequestRate:
    """Turn the status' per-instance answer counters into answers per interval.

    ``apps.*.instances[].responses`` counts from when an instance joined the pool and
    vanishes with it, so the sum over instances is no counter: an instance that leaves
    takes its count along. Deltas are taken per instance instead (an instance that is new,
    or whose counter went down, counts from zero).
    """

    _last: dict[tuple[str, Any, Any], tuple[int, int]] = field(default_factory=dict)
    _at: float | None = None

    def observe(self, status: Mapping[str, Any], now: float) -> Sample | None:
        counts = dict(_instance_counts(status))
        requests = errors = 0
        for key, (total, bad) in counts.items():
            before = self._last.get(key, (0, 0))
            if total < before[0] or bad < before[1]:
                before = (0, 0)
            requests += total - before[0]
            errors += bad - before[1]
        at, self._at, self._last = self._at, now, counts
        if at is None:
            return None
        return Sample(now, max(now - at, 0.0), requests, errors)


def _instance_counts(
    status: Mapping[str, Any],
) -> Iterable[tuple[tuple[str, Any, Any], tuple[int, int]]]:
    apps = status.get("apps") or {}
    for name, app in apps.items():
        for instance in app.get("instances") or ():
            total = instance.get("responses")
            if isinstance(total, int):
                bad = instance.get("responses_5xx")
                key = (name, instance.get("port"), instance.get("pid"))
                yield key, (total, bad if isinstance(bad, int) else 0)


@dataclass(slots=True, eq=False)
class _Client:
    """One connected page: what is waiting to be written to it, within bounds."""

    limit: int
    pending: collections.deque[tuple[bool, bytes]] = field(default_factory=collections.deque)
    size: int = 0
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    ended: bool = False

    def offer(self, frame: bytes, snapshot: bool = False) -> bool:
        """Queue a frame; False when the client fell behind (then it is ended)."""
        if snapshot:  # a newer snapshot replaces one not yet sent
            for item in self.pending:
                if item[0]:
                    self.pending.remove(item)
                    self.size -= len(item[1])
                    break
        if self.size + len(frame) > self.limit:
            self.end()
            return False
        self.pending.append((snapshot, frame))
        self.size += len(frame)
        self.wake.set()
        return True

    def end(self) -> None:
        self.ended = True
        self.pending.clear()
        self.size = 0
        self.wake.set()


class StatusFeed:
    """Takes snapshots and control events once, and streams them to every page."""

    def __init__(
        self,
        snapshot: Snapshot,
        subscribe: Subscribe,
        *,
        alive: Callable[[], bool] = lambda: True,
        interval: float = 1.0,
        heartbeat: float = 15.0,
        retry: float = 2.0,
        client_buffer: int = 4 * 1024 * 1024,
        history: int = 300,  # five minutes of samples, what the chart shows
        replay: int = 256,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.snapshot = snapshot
        self.subscribe = subscribe
        self.alive = alive
        self.interval = interval
        self.heartbeat = heartbeat
        self.retry = retry
        self.client_buffer = client_buffer
        self.clock = clock
        self.rate = RequestRate()
        self.history: collections.deque[Sample] = collections.deque(maxlen=history)
        self.recent: collections.deque[tuple[int, str, bytes]] = collections.deque(maxlen=replay)
        self.clients: set[_Client] = set()
        self.dropped = 0
        self.closed = False
        self.epoch = secrets.token_hex(6)  # event ids start again with another feed
        self._ids = itertools.count(1)
        self._last_id = 0
        self._tasks: list[asyncio.Task[None]] = []

    # -- the producers ----------------------------------------------------------------------

    def _start(self) -> None:
        if not self._tasks and not self.closed:
            self._tasks = [
                asyncio.ensure_future(self._tick()),
                asyncio.ensure_future(self._follow()),
            ]

    async def _tick(self) -> None:
        while not self.closed:
            await asyncio.sleep(self.interval)
            if not self.alive():  # the listener was closed: end every stream
                await self.close()
                return
            status = await self._status()
            if status is None:
                continue
            sample = self.rate.observe(status, self.clock())
            if sample is not None:
                self.history.append(sample)
            data: dict[str, Any] = {"status": status}
            if sample is not None:
                data["sample"] = sample.as_json()
            self._broadcast(sse_event("snapshot", data), snapshot=True)

    async def _status(self) -> Mapping[str, Any] | None:
        try:
            return await self.snapshot()
        except Exception:  # the page shows the last good one; the daemon goes on
            log.warning("status page: taking a status snapshot failed", exc_info=True)
            return None

    async def _follow(self) -> None:
        while not self.closed:
            try:
                async for event in self.subscribe():
                    self.publish(event)
            except Exception:
                log.warning("status page: the control-plane event stream failed", exc_info=True)
            if not self.closed:  # the stream ended: subscribe again, without spinning
                await asyncio.sleep(1.0)

    def publish(self, event: Mapping[str, Any]) -> None:
        """Send one control-plane event to every page (and keep it for reconnects)."""
        kind = str(event.get("kind", ""))
        name = kind if _KIND.fullmatch(kind) else "event"
        event_id = self._last_id = next(self._ids)
        data = {**event, "at": event.get("at", round(self.clock(), 3))}  # when, for replays
        frame = sse_event(name, data, event_id)
        self.recent.append((event_id, name, frame))
        self._broadcast(frame)

    def _broadcast(self, frame: bytes, snapshot: bool = False) -> None:
        for client in list(self.clients):
            if not client.offer(frame, snapshot):
                self.clients.discard(client)
                self.dropped += 1
                log.info("status page: a client fell %d bytes behind, dropped it", client.limit)

    # -- one page ---------------------------------------------------------------------------

    async def stream(self, last_event_id: int | None = None) -> AsyncIterator[bytes]:
        """The event stream of one page, until it goes away, falls behind or the feed ends."""
        client = _Client(self.client_buffer)
        self._start()
        status = await self._status()
        if last_event_id is not None and last_event_id > self._last_id:
            last_event_id = None  # an id of another feed (the daemon restarted)
        first: dict[str, Any] = {
            "epoch": self.epoch,
            "status": status or {},
            "history": [sample.as_json() for sample in self.history],
        }
        client.offer(f"retry: {round(self.retry * 1000)}\n\n".encode())
        client.offer(sse_event("snapshot", first))
        for frame in self._replay(last_event_id):
            client.offer(frame)
        if not self.closed:
            self.clients.add(client)
        else:
            client.end()
        try:
            async for chunk in self._drain(client):
                yield chunk
        finally:
            self.clients.discard(client)

    def _replay(self, last_event_id: int | None) -> list[bytes]:
        """What a page missed: everything after its last event if still kept, else the
        deploy events kept (the timeline; the snapshot holds the rest of the state)."""
        kept = [item for item in self.recent if last_event_id is None or item[0] > last_event_id]
        complete = last_event_id is not None and (
            not self.recent or self.recent[0][0] <= last_event_id + 1
        )
        return [frame for _, name, frame in kept if complete or name == "deploy"]

    async def _drain(self, client: _Client) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        beat = loop.time() + self.heartbeat
        while True:
            while client.pending:
                _, frame = client.pending.popleft()
                client.size -= len(frame)
                yield frame
            if client.ended:
                return
            client.wake.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(client.wake.wait(), max(beat - loop.time(), 0.0))
            if loop.time() >= beat:
                beat = loop.time() + self.heartbeat
                yield b": keep-alive\n\n"

    async def close(self) -> None:
        """End every stream and stop taking snapshots and events."""
        self.closed = True
        for client in list(self.clients):
            client.end()
        self.clients.clear()
        tasks, self._tasks = self._tasks, []
        current = asyncio.current_task()
        for task in tasks:
            if task is not current:
                task.cancel()
        for task in tasks:
            if task is not current:
                with contextlib.suppress(asyncio.CancelledError):
                    await task


def add_status_page(
    http: AdminHttp, snapshot: Snapshot, subscribe: Subscribe, **options: Any
) -> StatusFeed:
    """Serve the page, its files and its event stream on ``http``; returns the feed, whose
    ``close()`` ends the streams (it also ends by itself within a second of the listener
    closing)."""
    feed = StatusFeed(snapshot, subscribe, alive=lambda: bool(http.addresses()), **options)
    files = resources.files("nonstop.admin") / "page"
    for path, (name, content_type) in ASSETS.items():
        # public: a browser opening /#token=... sends no header for the page's own files,
        # which hold no data; the page sends the token with every request for data
        http.route("GET", path, _asset((files / name).read_bytes(), content_type), public=True)

    async def events(request: HttpRequest) -> HttpResponse:
        last = request.headers.get("last-event-id", "")
        headers = {"X-Accel-Buffering": "no"}
        stream = feed.stream(int(last) if last.isdigit() else None)
        return HttpResponse(200, stream, "text/event-stream; charset=utf-8", headers)

    http.route("GET", "/events", events)
    return feed


def _asset(body: bytes, content_type: str) -> Callable[[HttpRequest], Awaitable[HttpResponse]]:
    async def serve(request: HttpRequest) -> HttpResponse:
        return HttpResponse(200, body, content_type, dict(_ASSET_HEADERS))

    return serve
