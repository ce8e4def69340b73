"""The control channel on a real socket pair, and how the workers' answers add up."""

from __future__ import annotations

import array
import asyncio
import os
import pickle
import resource
import socket
import struct
from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.errors import ConfigError
from nonstop.servers import ServerReport
from nonstop.workers.channel import MAX_REPLY, Channel, Message
from nonstop.workers.engine import REPLY_TYPES, merge_reports, merge_snapshots
from nonstop.workers.replies import BadReply, checked

Got = list[tuple[Message, list[bytes]]]


def _channels(wanted: int) -> tuple[Channel, Channel, Got, asyncio.Future[None]]:
    """A sending and a receiving channel on a socket pair; the receiver collects each
    message with what its descriptors (pipes' read ends) hold, ``done`` once ``wanted``
    arrived."""
    loop = asyncio.get_running_loop()
    a, b = socket.socketpair()
    got: Got = []
    done: asyncio.Future[None] = loop.create_future()
    sender = Channel(loop, a, lambda m, fds: None, lambda: None)
    return sender, Channel(loop, b, _reader(got, wanted, done), lambda: None), got, done


def _reader(
    got: Got, wanted: int, done: asyncio.Future[None]
) -> Callable[[Message, list[int]], None]:

    def received(message: Message, fds: list[int]) -> None:
        contents = []
        for fd in fds:  # a pipe's read end: what was written on the other side comes out
            contents.append(os.read(fd, 100))
            os.close(fd)
        got.append((message, contents))
        if len(got) == wanted:
            done.set_result(None)

    return received


def test_messages_arrive_whole_in_order_with_their_descriptors() -> None:
    async def scenario() -> Got:
        sender, receiver, got, done = _channels(3)
        pipes = [os.pipe() for _ in range(2)]
        for n, (_, w) in enumerate(pipes):
            os.write(w, b"pipe %d" % n)
        big = "x" * 3_000_000  # larger than the socket buffer: sent in pieces, not blocking
        sender.send(("call", 1, ("start", (big,))), [r for r, _ in pipes])
        sender.send(("cast", 0, ("mark_health", ("api", "127.0.0.1:1", False))))
        sender.send(("reply", 7, (True, {"n": 1})))
        for r, w in pipes:
            os.close(r)  # the receiver got its own duplicates
            os.close(w)
        await asyncio.wait_for(done, 10)
        sender.close()
        receiver.close()
        return got

    got = asyncio.run(scenario())
    (first, contents), (second, none), (third, _) = got
    assert first[:2] == ("call", 1) and len(first[2][1][0]) == 3_000_000
    assert contents == [b"pipe 0", b"pipe 1"]
    assert second == ("cast", 0, ("mark_health", ("api", "127.0.0.1:1", False))) and none == []
    assert third == ("reply", 7, (True, {"n": 1}))


def test_descriptors_of_a_waiting_message_may_be_closed_by_the_caller_at_once() -> None:
    """A message queued behind a large one keeps duplicates of its descriptors until it
    goes out: the caller closing its own does not lose them, and none is left open."""

    async def scenario() -> tuple[bytes, int, int]:
        loop = asyncio.get_running_loop()
        open_before = len(os.listdir("/proc/self/fd"))
        a, b = socket.socketpair()
        done = loop.create_future()
        got: list[bytes] = []

        def received(message: Message, fds: list[int]) -> None:
            for fd in fds:
                got.append(os.read(fd, 100))
                os.close(fd)
            if message[0] == "cast":
                done.set_result(None)

        sender = Channel(loop, a, lambda m, fds: None, lambda: None)
        receiver = Channel(loop, b, received, lambda: None)
        sender.send(("call", 1, ("start", ("x" * 3_000_000,))))  # fills the socket buffer
        r, w = os.pipe()
        os.write(w, b"handed")
        sender.send(("cast", 0, ("reopen_logs", ())), [r])
        queued = len(os.listdir("/proc/self/fd"))
        os.close(r)
        os.close(w)
        await asyncio.wait_for(done, 10)
        sender.close()
        receiver.close()
        return b"".join(got), queued - open_before, len(os.listdir("/proc/self/fd")) - open_before

    content, held_while_queued, left = asyncio.run(scenario())
    assert content == b"handed"
    assert held_while_queued == 5  # the pair, the pipe, the channel's duplicate of its read end
    assert left == 0


def test_a_message_carries_more_descriptors_than_the_kernel_takes_in_one_call() -> None:
    """SCM_MAX_FD is 253 a sendmsg: 600 descriptors (a config with hundreds of log files,
    or as many sockets) go with three pieces of one frame and arrive in order, with a
    small message and with one larger than the socket buffer."""

    async def scenario() -> Got:
        sender, receiver, got, done = _channels(2)
        for body in ("small", "x" * 3_000_000):
            pipes = [os.pipe() for _ in range(600)]
            for n, (_, w) in enumerate(pipes):
                os.write(w, b"%d" % n)
                os.close(w)
            sender.send(("call", 1, body), [r for r, _ in pipes])
            for r, _ in pipes:
                os.close(r)
        await asyncio.wait_for(done, 10)
        sender.close()
        receiver.close()
        return got

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard != resource.RLIM_INFINITY and hard < 4096:
        pytest.skip(f"the hard limit of open files is {hard}: 4096 are needed")
    resource.setrlimit(resource.RLIMIT_NOFILE, (max(soft, 4096), hard))  # as nonstop does
    try:
        (small, first), (large, second) = asyncio.run(scenario())
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert small == ("call", 1, "small") and large[2] == "x" * 3_000_000
    assert first == second == [b"%d" % n for n in range(600)]


class _Runs:
    """A pickle that calls ``os.mkdir`` when loaded: what a worker taken over would send."""

    def __init__(self, path: str) -> None:
        self.path = path

    def __reduce__(self) -> tuple[object, tuple[str]]:
        return (os.mkdir, (self.path,))


def test_the_control_process_unpickles_only_answers_from_a_worker(tmp_path: Path) -> None:
    """Reports, plain data and exceptions come through; a pickle that would call anything
    else closes the channel without calling it, as does a frame too large for an answer."""

    async def scenario(evil: bytes) -> tuple[list[Message], bool]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        got: list[Message] = []
        closed = loop.create_future()
        control = Channel(
            loop, a, lambda m, fds: got.append(m), lambda: closed.set_result(None), REPLY_TYPES
        )
        worker = Channel(loop, b, lambda m, fds: None, lambda: None)
        worker.send(("reply", 1, (True, (ServerReport("a:1", "up", 0, 1, 0),))))
        worker.send(("reply", 2, (False, ConfigError("bad", "x.conf:1"))))
        worker.send(("reply", 3, (False, OSError(24, "Too many open files"))))
        b.sendall(evil)
        await asyncio.wait_for(closed, 10)
        worker.close()
        return got, control.closed

    path = tmp_path / "made-by-the-worker"
    body = pickle.dumps(("reply", 4, (True, _Runs(str(path)))))
    got, closed = asyncio.run(scenario(struct.pack("!IH", len(body), 0) + body))
    assert closed and not path.exists()
    assert [m[1] for m in got] == [1, 2, 3]
    assert got[0][2] == (True, (ServerReport("a:1", "up", 0, 1, 0),))
    error = got[1][2][1]
    assert isinstance(error, ConfigError) and str(error) == "x.conf:1: bad"
    assert got[2][2][1].errno == 24
    huge = struct.pack("!IH", MAX_REPLY + 1, 0) + b"x" * 100
    got, closed = asyncio.run(scenario(huge))
    assert closed and len(got) == 3


def test_a_worker_s_answer_is_rebuilt_as_plain_data_or_refused() -> None:
    report = ServerReport("a:1", "up", 0, 1, 0)
    status = {"connections": 3, "upstreams": {"app": [{"address": "a:1", "fails": 0}]}}
    ident, ok, value = checked(("reply", 7, (True, status)))
    assert (ident, ok, value) == (7, True, status) and value is not status
    assert checked(("reply", 1, (True, (report,)))) == (1, True, (report,))
    cause = ValueError("inner")
    error = ConfigError("bad", "x.conf:1")
    error.__context__ = cause
    _, ok, got = checked(("reply", 2, (False, error)))
    assert not ok and got is error and got.__context__ is None and got.where == "x.conf:1"
    shared = [1.5] * 4  # adding counters up would double it each time it is named
    nested: list[object] = []
    for _ in range(20):
        nested = [nested, nested]  # 2**20 paths through 21 lists
    wide = [shared] * 100_000  # shallow: 100,000 names of one list, a few bytes each
    empty = object.__new__(ServerReport)  # unpickled without its fields
    odd = ValueError("x")
    odd.__dict__[1] = "a key that is not a name"
    bad: list[object] = [
        ("call", 1, ("start", ())),  # a worker only answers
        ("reply", "1", (True, None)),
        ("reply", 1, (True,)),
        ("reply", 1, (False, 42)),  # not an error: the call would wait for ever
        ("reply", 1, (False, KeyboardInterrupt())),
        ("reply", 1, (True, {"seconds": shared, "again": shared})),
        ("reply", 1, (True, nested)),
        ("reply", 1, (True, wide)),
        ("reply", 1, (True, {"x": Path("/")})),
        ("reply", 1, (True, (empty,))),
        ("reply", 1, (False, odd)),
    ]
    for message in bad:
        with pytest.raises(BadReply):
            checked(message)


def test_a_worker_cannot_send_what_would_stop_the_control_process_or_descriptors() -> None:
    """A descriptor a worker sends is closed on arrival; SystemExit closes the channel."""

    async def scenario() -> tuple[int, list[Message], bool]:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        got: list[Message] = []
        arrived = loop.create_future()
        closed = loop.create_future()

        def received(message: Message, fds: list[int]) -> None:
            got.append(message)
            arrived.set_result(fds)

        control = Channel(loop, a, received, lambda: closed.set_result(None), REPLY_TYPES)
        before = len(os.listdir("/proc/self/fd"))
        r, w = os.pipe()
        for answer in ((True, None), (False, SystemExit(0))):
            body = pickle.dumps(("reply", 1, answer))
            frame = struct.pack("!IH", len(body), 1) + body
            b.sendmsg([frame], [(socket.SOL_SOCKET, socket.SCM_RIGHTS, array.array("i", [r]))])
            if not arrived.done():
                assert await asyncio.wait_for(arrived, 10) == []
                left = len(os.listdir("/proc/self/fd")) - before  # r and w, no more
        os.close(r)
        os.close(w)
        await asyncio.wait_for(closed, 10)
        b.close()
        return left, got, control.closed

    left, got, closed = asyncio.run(scenario())
    assert left == 2 and got == [("reply", 1, (True, None))] and closed


def test_the_other_end_closing_is_reported_once() -> None:
    async def scenario() -> int:
        loop = asyncio.get_running_loop()
        a, b = socket.socketpair()
        closed = loop.create_future()
        calls = []

        def gone() -> None:
            calls.append(1)
            if not closed.done():
                closed.set_result(None)

        channel = Channel(loop, a, lambda m, fds: None, gone)
        b.close()
        await asyncio.wait_for(closed, 5)
        channel.close()
        channel.send(("cast", 0, ("x", ())))  # a closed channel drops what it is given
        return len(calls)

    assert asyncio.run(scenario()) == 1


def test_server_reports_add_up_by_address_and_a_worker_that_sees_it_down_shows() -> None:
    one = (ServerReport("a:1", "up", 2, 10, 1), ServerReport("a:2", "draining", 1, 5, 0))
    two = (ServerReport("a:1", "failed", 3, 7, 2), ServerReport("a:2", "draining", 0, 4, None))
    merged = merge_reports([one, two])
    assert merged == (
        ServerReport("a:1", "failed", 5, 17, 3),
        ServerReport("a:2", "draining", 1, 9, None),
    )


def test_balancer_snapshots_sum_connections_and_failures() -> None:
    first = [{"address": "a:1", "state": "up", "conns": 2, "fails": 0, "weight": 1}]
    second = [{"address": "a:1", "state": "unhealthy", "conns": 1, "fails": 3, "weight": 1}]
    merged = merge_snapshots(merge_snapshots(None, first), second)
    assert merged == [{"address": "a:1", "state": "unhealthy", "conns": 3, "fails": 3, "weight": 1}]
    assert first[0]["conns"] == 2  # the workers' answers are not changed
