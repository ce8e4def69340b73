"""The status page's event stream and files, on a real AdminHttp on 127.0.0.1."""

from __future__ import annotations

import asyncio
import gc
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from tests.support.backends import free_port

from nonstop.admin.http import AdminHttp
from nonstop.admin.page import RequestRate, Sample, StatusFeed, add_status_page, sse_event

TOKEN = "page-unit-token-0123456789"
STATUS: dict[str, Any] = {"ok": True, "upstreams": {}, "apps": {}}


def test_an_event_is_framed_as_id_event_and_data_lines_ended_by_a_blank_line() -> None:
    assert sse_event("deploy", {"a": 1}, 7) == b'id: 7\nevent: deploy\ndata: {"a":1}\n\n'
    assert sse_event("snapshot", {"b": "x"}) == b'event: snapshot\ndata: {"b":"x"}\n\n'


def _status(*instances: tuple[int, int, int, int]) -> dict[str, Any]:
    return {
        "apps": {
            "web": {
                "instances": [
                    {"port": port, "pid": pid, "responses": total, "responses_5xx": bad}
                    for port, pid, total, bad in instances
                ]
            }
        }
    }


def test_the_rate_counts_answers_per_instance_so_a_switch_loses_none() -> None:
    rate = RequestRate()
    assert rate.observe(_status((8000, 1, 100, 0)), 10.0) is None
    assert rate.observe(_status((8000, 1, 150, 2)), 11.0) == Sample(11.0, 1.0, 50, 2)
    # the switch: the new instance joins with 30 answered, the old one leaves with 160
    assert rate.observe(_status((8001, 2, 30, 0)), 12.0) == Sample(12.0, 1.0, 30, 0)
    # a restarted instance on the same port counts from zero again
    assert rate.observe(_status((8001, 3, 5, 0)), 13.0) == Sample(13.0, 1.0, 5, 0)


Body = Callable[[StatusFeed, AdminHttp, "Events"], Awaitable[None]]


class Events:
    """The control-plane event stream the feed subscribes to."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[dict[str, Any]] = asyncio.Queue()
        self.subscriptions = 0

    async def subscribe(self) -> AsyncIterator[dict[str, Any]]:
        self.subscriptions += 1
        while True:
            yield await self.queue.get()


def with_page(body: Body, token: str | None = None, **options: Any) -> None:
    async def main() -> None:
        events = Events()

        async def snapshot() -> dict[str, Any]:
            return STATUS

        http = AdminHttp(f"127.0.0.1:{free_port()}", token, {})
        feed = add_status_page(http, snapshot, events.subscribe, **options)
        await http.start()
        try:
            await asyncio.wait_for(body(feed, http, events), 30)
        finally:
            await feed.close()
            await http.close()

    asyncio.run(main())


class Stream:
    """One GET /events, its chunked body read frame by frame."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.buffer = b""

    @classmethod
    async def open(cls, http: AdminHttp, *headers: str) -> tuple[int, Stream]:
        host, port = http.addresses()[0].rsplit(":", 1)
        reader, writer = await asyncio.open_connection(host, int(port))
        extra = "".join(f"{header}\r\n" for header in headers)
        writer.write(f"GET /events HTTP/1.1\r\nHost: x\r\n{extra}\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split()[1]), cls(reader, writer)

    async def frame(self) -> bytes:
        """The next SSE frame (or comment), up to its blank line; b"" at the end."""
        while b"\n\n" not in self.buffer:
            size = int(await self.reader.readuntil(b"\r\n"), 16)
            if size == 0:
                return b""
            self.buffer += (await self.reader.readexactly(size + 2))[:-2]
        frame, _, self.buffer = self.buffer.partition(b"\n\n")
        return frame + b"\n\n"

    async def event(self, name: str) -> tuple[str | None, dict[str, Any]]:
        """The next event called ``name``: its id and data."""
        while True:
            lines = (await self.frame()).decode().splitlines()
            fields = dict(line.split(": ", 1) for line in lines if line)
            if fields.get("event") == name:
                return fields.get("id"), json.loads(fields["data"])

    def close(self) -> None:
        self.writer.close()


def test_the_stream_sends_retry_and_a_snapshot_first_then_each_event_with_an_id() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        status, stream = await Stream.open(http)
        assert status == 200
        assert await stream.frame() == b"retry: 2000\n\n"
        first = await stream.frame()
        assert first.startswith(b"event: snapshot\ndata: ")
        assert json.loads(first.split(b"data: ", 1)[1])["status"] == STATUS
        await events.queue.put({"kind": "deploy", "event": "begin", "app": "web", "t": 0})
        await events.queue.put({"kind": "health", "upstream": "web", "healthy": False})
        event_id, data = await stream.event("deploy")
        assert event_id == "1" and data.pop("at") > 0  # when it happened, for replays
        assert data == {"kind": "deploy", "event": "begin", "app": "web", "t": 0}
        event_id, data = await stream.event("health")
        assert event_id == "2" and data["healthy"] is False
        stream.close()

    with_page(body, interval=3600)


def test_a_page_that_reconnects_with_last_event_id_is_sent_what_it_missed() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        for n in range(3):
            feed.publish({"kind": "health", "upstream": "web", "n": n})
        feed.publish({"kind": "deploy", "event": "begin", "app": "web"})
        _, stream = await Stream.open(http, "Last-Event-ID: 2")
        assert (await stream.event("health"))[0] == "3"
        assert (await stream.event("deploy"))[0] == "4"
        stream.close()
        # a new page is sent the deploy events only: the snapshot holds the rest
        _, stream = await Stream.open(http)
        assert (await stream.event("deploy"))[0] == "4"
        stream.close()

    with_page(body, interval=3600)


def test_a_comment_heartbeat_keeps_a_quiet_stream_alive() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        _, stream = await Stream.open(http)
        await stream.event("snapshot")
        assert await stream.frame() == b": keep-alive\n\n"
        assert await stream.frame() == b": keep-alive\n\n"
        stream.close()

    with_page(body, interval=3600, heartbeat=0.2)


def test_a_client_that_stops_reading_is_dropped_instead_of_buffered_without_end() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        _, stream = await Stream.open(http)  # and never read again
        while not feed.clients:
            await asyncio.sleep(0.01)
        big = {"kind": "reload", "message": "x" * 16384}
        for _ in range(5000):  # at most 80 MB offered; the kernel's buffers fill first
            feed.publish(big)
            await asyncio.sleep(0)
            if feed.dropped:
                break
        assert feed.dropped == 1 and feed.clients == set()
        assert len(feed.recent) <= 256  # what is kept for reconnects is bounded too
        stream.close()

    with_page(body, interval=3600, client_buffer=256 * 1024)


def test_a_page_that_goes_away_is_forgotten() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        _, stream = await Stream.open(http)
        await stream.event("snapshot")
        assert len(feed.clients) == 1
        stream.close()
        for _ in range(500):  # the next snapshots find the connection gone; 5 s at most
            if not feed.clients:
                break
            # AdminHttp leaves a stream whose write failed to the garbage collector (the
            # failure's traceback holds it in a cycle) instead of closing it at once
            gc.collect()
            await asyncio.sleep(0.01)
        assert feed.clients == set() and feed.dropped == 0

    with_page(body, interval=0.05)


def test_the_stream_ends_when_the_listener_closes() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        _, stream = await Stream.open(http)
        await stream.event("snapshot")
        await http.close()
        while await stream.frame():  # snapshots until the feed sees the listener gone
            pass
        assert feed.closed
        stream.close()

    with_page(body, interval=0.05)


def test_the_page_files_need_no_token_and_the_event_stream_does() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        host, port = http.addresses()[0].rsplit(":", 1)
        for path, kind in (("/", "text/html"), ("/page.js", "text/javascript")):
            reader, writer = await asyncio.open_connection(host, int(port))
            writer.write(f"GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode())
            answer = await reader.read()
            writer.close()
            head, _, content = answer.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200") and f"Content-Type: {kind}".encode() in head
            assert b"Content-Security-Policy: default-src 'none'" in head and content
        status, stream = await Stream.open(http)
        assert status == 401
        stream.close()
        status, stream = await Stream.open(http, f"Authorization: Bearer {TOKEN}")
        assert status == 200 and (await stream.event("snapshot"))[1]["status"] == STATUS
        stream.close()

    with_page(body, token=TOKEN, interval=3600)


def test_a_failing_event_source_is_subscribed_to_again() -> None:
    async def body(feed: StatusFeed, http: AdminHttp, events: Events) -> None:
        _, stream = await Stream.open(http)
        await stream.event("snapshot")
        await events.queue.put({"kind": "reload", "n": 1})
        assert (await stream.event("reload"))[1]["n"] == 1
        stream.close()

    async def failing() -> AsyncIterator[dict[str, Any]]:
        raise RuntimeError("the event stream broke")
        yield {}  # pragma: no cover

    # the first subscription fails at once; the feed subscribes again a second later
    events_seen: list[int] = []

    def run(feed: StatusFeed, http: AdminHttp, events: Events) -> Awaitable[None]:
        subscribe = events.subscribe

        def flaky() -> AsyncIterator[dict[str, Any]]:
            events_seen.append(1)
            return failing() if len(events_seen) == 1 else subscribe()

        feed.subscribe = flaky
        return body(feed, http, events)

    with_page(run, interval=3600)
    assert len(events_seen) == 2
