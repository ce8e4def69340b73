"""Writes held to the end of the loop's turn (proxy/outbox.py), on a real event loop."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from protocol_support import SWITCH, UPGRADE, WS_LOCATION, WS_MAP, conf, get, make_proxy, ok
from tests.support.fake_transport import FakeTransport

from nonstop.proxy.outbox import HOLD_LIMIT, HeldTransport, Outbox

CROWD = {"client 1", "client 2"}  # the worker's client connections: more than one


def held(outbox: Outbox) -> tuple[HeldTransport, FakeTransport]:
    raw = FakeTransport()
    return HeldTransport(raw, outbox), raw


async def end_of_turn() -> None:
    await asyncio.sleep(0)  # the loop runs what call_soon scheduled, the outbox's flush


async def test_a_turns_writes_leave_together_at_its_end_as_one_write_each() -> None:
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    a, raw_a = held(outbox)
    b, raw_b = held(outbox)
    a.write(b"HTTP/1.1 200 OK\r\n\r\n")
    b.write(b"GET / HTTP/1.1\r\n\r\n")
    a.write(b"body")
    assert raw_a._writes == [] and raw_b._writes == []  # nothing before the turn ends
    await end_of_turn()
    assert raw_a._writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    assert raw_b._writes == [b"GET / HTTP/1.1\r\n\r\n"]
    a.write(b"next")  # a later turn is held again, and scheduled again
    assert raw_a._writes == [b"HTTP/1.1 200 OK\r\n\r\nbody"]
    await end_of_turn()
    assert raw_a._writes[-1] == b"next"


async def test_close_write_eof_and_abort_send_what_is_held_first() -> None:
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    closing, raw_closing = held(outbox)
    closing.write(b"last answer")
    closing.close()
    assert raw_closing._writes == [b"last answer"] and raw_closing.closed
    shutting, raw_shutting = held(outbox)
    shutting.write(b"answer")
    shutting.write_eof()
    assert raw_shutting._writes == [b"answer"] and raw_shutting.write_eof_called
    aborted, raw_aborted = held(outbox)
    aborted.write(b"written before the abort")  # reaches the kernel, as written at once
    aborted.abort()
    await end_of_turn()
    assert raw_aborted._writes == [b"written before the abort"] and raw_aborted.aborted


async def test_the_buffer_size_asked_for_is_what_the_transport_holds_after_a_send() -> None:
    """Send timers and sendfile decide by it: held bytes go to the transport first."""
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    transport, raw = held(outbox)
    raw.holding = True  # a peer that has read nothing
    transport.write(b"x" * 100)
    assert transport.get_write_buffer_size() == 100
    assert raw._writes == [b"x" * 100]


async def test_past_the_hold_limit_bytes_go_out_at_once_so_a_full_socket_pauses() -> None:
    """A transport says it is full (pause_writing) only when written to; one turn can
    read megabytes from an upstream, which must not pile up held."""
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    transport, raw = held(outbox)
    small = b"s" * 1000
    transport.write(small)
    assert raw._writes == []
    chunk = b"c" * (HOLD_LIMIT - 1000)
    transport.write(chunk)  # the limit reached: everything held goes, in order
    assert raw._writes == [small + chunk]
    big = b"b" * HOLD_LIMIT
    transport.write(big)  # a write the size of the limit is not held at all
    assert raw._writes[-1] == big
    through, raw_through = held(outbox)
    through.write(b"head")
    through.write_through(b"file chunk")  # a pump loop's write: at once, behind the head
    assert raw_through._writes == [b"head", b"file chunk"]


async def test_a_closed_transport_gets_nothing_and_a_failing_one_stops_no_other(
    caplog: pytest.LogCaptureFixture,
) -> None:
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    gone, raw_gone = held(outbox)
    gone.write(b"for a client that left")
    raw_gone.closed = True  # connection_lost came in the same turn
    broken, raw_broken = held(outbox)
    broken.write(b"x")

    def refuse(data: bytes) -> None:
        raise RuntimeError("unable to perform operation; the handler is closed")

    raw_broken.write = refuse  # type: ignore[method-assign]
    fine, raw_fine = held(outbox)
    fine.write(b"answer")
    with caplog.at_level(logging.ERROR, logger="nonstop"):
        await end_of_turn()
    assert raw_gone._writes == []
    assert raw_fine._writes == [b"answer"]
    assert "held writes failed" in caplog.text
    fine.write(b"again")  # the outbox is armed again after the failure
    await end_of_turn()
    assert raw_fine._writes[-1] == b"again"


async def test_a_write_made_while_the_turn_is_sent_goes_in_the_same_send() -> None:
    """pause_writing and the like run inside a send; what they write is not stranded."""
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    first, raw_first = held(outbox)
    second, raw_second = held(outbox)
    original = raw_first.write

    def write_and_answer(data: bytes) -> None:
        original(data)
        second.write(b"written during the send")

    raw_first.write = write_and_answer  # type: ignore[method-assign]
    first.write(b"first")
    await end_of_turn()
    assert raw_first._writes == [b"first"]
    assert raw_second._writes == [b"written during the send"]
    assert not outbox.armed and outbox.pending == []


async def test_with_one_client_connection_open_nothing_is_held() -> None:
    """Its messages share their turns with no other connection's: holding would only
    add the scheduled send (and its latency) to every write."""
    connections = {"the only client"}
    outbox = Outbox(asyncio.get_running_loop(), connections)
    transport, raw = held(outbox)
    transport.write(b"answer")
    assert raw._writes == [b"answer"] and not outbox.armed
    connections.add("a second client")
    transport.write(b"held now")
    assert raw._writes == [b"answer"] and outbox.armed
    await end_of_turn()
    assert raw._writes == [b"answer", b"held now"]


async def test_a_pipelined_clients_answers_leave_in_order_in_one_write(tmp_path: Path) -> None:
    proxy = make_proxy(tmp_path, conf(extra_locations='location /r { return 200 "r\\n"; }'))
    client = proxy.client()
    proxy.client()  # a second client: the worker's turns are shared, writes are held
    client.send(get("/r/1") + get("/r/2") + get("/", "Connection: close"))
    upstream = proxy.active()
    assert upstream.transport.writes, "the turn ended: the request went upstream"
    upstream.respond(ok(b"proxied"))
    assert len(client.transport.writes) == 2  # the turn of the two answers, then the third
    answers = client.responses()
    assert [(a.status, a.body) for a in answers] == [
        (200, b"r\n"),
        (200, b"r\n"),
        (200, b"proxied"),
    ]
    assert client.closed  # the answer went out before the close (a closed fake drops writes)


async def test_bytes_held_for_a_tunnel_reach_the_client_whose_eof_came_in_the_turn(
    tmp_path: Path,
) -> None:
    """A client's EOF ends a tunnel: eof_received says so and the transport closes
    itself, past the wrapper -- what the turn held for the client goes out first."""
    proxy = make_proxy(tmp_path, conf(WS_LOCATION, extra_http=WS_MAP))
    client = proxy.client()
    proxy.client()  # a second client: writes are held
    client.send(UPGRADE)
    upstream = proxy.active()
    upstream.respond(SWITCH)
    assert client.take().startswith(b"HTTP/1.1 101 ")
    upstream.transport.feed(b"last frame from the app", turn_ends=False)
    client.transport.feed_eof()  # in the same turn: the tunnel ends, the transport closes
    assert client.transport.closed
    assert client.take() == b"last frame from the app"


async def test_bytes_held_for_an_upstream_reach_it_before_its_eof_closes_it(
    tmp_path: Path,
) -> None:
    proxy = make_proxy(tmp_path, conf(WS_LOCATION, extra_http=WS_MAP))
    client = proxy.client()
    proxy.client()
    client.send(UPGRADE)
    upstream = proxy.active()
    upstream.respond(SWITCH)
    upstream.take()
    client.transport.feed(b"last frame from the client", turn_ends=False)
    upstream.transport.feed_eof()  # the app's FIN in the same turn
    assert upstream.transport.closed
    assert upstream.take() == b"last frame from the client"


async def test_a_transport_made_not_to_hold_writes_at_once() -> None:
    """An https:// upstream's (connection_pool.py): the loop's TLS layer may stop taking
    writes before eof_received could send what was held."""
    outbox = Outbox(asyncio.get_running_loop(), CROWD)
    raw = FakeTransport()
    transport = HeldTransport(raw, outbox, holds=False)
    transport.write(b"request")
    assert raw._writes == [b"request"] and not outbox.armed
