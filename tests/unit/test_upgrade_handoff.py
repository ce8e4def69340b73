"""The upgrade's hand-over on a real socket pair: the lock, the admin socket and every
listening socket reach the new nonstop, however many there are."""

from __future__ import annotations

import json
import os
import socket
import tempfile
from collections.abc import Iterator

import pytest

from nonstop.listeners import Listeners
from nonstop.upgrade import _send_all, receive


@pytest.fixture
def listening() -> Iterator[list[socket.socket]]:
    made = []
    try:
        for _ in range(300):  # 75 workers on 4 addresses: more than one sendmsg carries
            sock = socket.socket()
            sock.bind(("127.0.0.1", 0))
            sock.listen()
            made.append(sock)
        yield made
    finally:
        for sock in made:
            sock.close()


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_three_hundred_listening_sockets_arrive_with_their_workers(
    listening: list[socket.socket],
) -> None:
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as lock, socket.socket(socket.AF_UNIX) as admin:
        workers = [n % 3 for n in range(len(listening))]
        manifest = json.dumps(
            {"listeners": len(listening), "workers": workers, "outlive": True}
        ).encode()
        _send_all(ours, manifest, [lock.fileno(), admin.fileno(), *(s.fileno() for s in listening)])
        registry = Listeners()
        handoff = receive(theirs.detach(), registry)
        try:
            assert handoff.listeners == len(listening) == len(registry)
            assert handoff.outlive  # systemd's sockets: the new nonstop's stop keeps idle ones
            assert os.path.samestat(os.fstat(handoff.lock_fd), os.fstat(lock.fileno()))
            assert handoff.admin.family == socket.AF_UNIX
            for n, sock in enumerate(listening):
                taken = registry.take("127.0.0.1", sock.getsockname()[1], n % 3)
                assert taken is not None
                assert os.path.samestat(os.fstat(taken.fileno()), os.fstat(sock.fileno()))
                taken.close()
        finally:
            os.close(handoff.lock_fd)
            handoff.admin.close()
            handoff.channel.close()
            ours.close()


def test_a_manifest_without_its_line_end_from_an_older_nonstop_is_taken(
    listening: list[socket.socket],
) -> None:
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as lock, socket.socket(socket.AF_UNIX) as admin:
        manifest = json.dumps({"listeners": 5, "workers": [0] * 5}).encode()
        fds = [lock.fileno(), admin.fileno(), *(s.fileno() for s in listening[:5])]
        socket.send_fds(ours, [manifest], fds)  # all at once, as before batches
        registry = Listeners()
        handoff = receive(theirs.detach(), registry)
        assert len(registry) == 5
        assert not handoff.outlive  # not said: as before, a stop closes idle connections
        os.close(handoff.lock_fd)
        handoff.admin.close()
        handoff.channel.close()
        registry.close()
        ours.close()


def test_a_hand_over_cut_short_is_refused_and_leaves_nothing_open(
    listening: list[socket.socket],
) -> None:
    before = open_fds()
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as lock, socket.socket(socket.AF_UNIX) as admin:
        manifest = json.dumps({"listeners": 300, "workers": [0] * 300}).encode()
        fds = [lock.fileno(), admin.fileno(), *(s.fileno() for s in listening)]
        socket.send_fds(ours, [manifest + b"\n"], fds[:250])  # the old one died here
        ours.close()
        with pytest.raises(ValueError, match="the hand-over ended after 250 descriptors"):
            receive(theirs.detach(), Listeners())
    assert open_fds() == before


def test_more_descriptors_at_once_than_are_taken_is_refused_at_once(
    listening: list[socket.socket],
) -> None:
    """An older nonstop could send 253 in one call: refused there and then, not after the
    hand-over's 30 s timeout waiting for what the kernel dropped."""
    before = open_fds()
    ours, theirs = socket.socketpair()
    with tempfile.TemporaryFile() as lock, socket.socket(socket.AF_UNIX) as admin:
        manifest = json.dumps({"listeners": 251, "workers": [0] * 251}).encode()
        fds = [lock.fileno(), admin.fileno(), *(s.fileno() for s in listening[:251])]
        socket.send_fds(ours, [manifest], fds)
        with pytest.raises(ValueError, match="more than 250 descriptors at once"):
            receive(theirs.detach(), Listeners())
        ours.close()
    assert open_fds() == before
