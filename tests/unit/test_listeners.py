"""The registry of listening sockets handed over (systemd's LISTEN_FDS, an upgrade)."""

from __future__ import annotations

import os
import socket
from collections.abc import Iterator

import pytest

from nonstop.listeners import Listeners, address_key


@pytest.fixture
def listening() -> Iterator[socket.socket]:
    sock = socket.create_server(("127.0.0.1", 0))
    yield sock
    sock.close()


def test_a_socket_is_taken_once_by_the_address_it_listens_on(listening: socket.socket) -> None:
    registry = Listeners()
    port = listening.getsockname()[1]
    assert registry.add(listening) == ("127.0.0.1", port)
    assert registry.take("127.0.0.1", port + 1) is None
    assert registry.take("127.0.0.1", port) is listening
    assert registry.take("127.0.0.1", port) is None
    assert len(registry) == 0


def test_a_workers_socket_is_taken_only_for_its_worker_index(listening: socket.socket) -> None:
    registry = Listeners()
    port = listening.getsockname()[1]
    registry.add(listening, worker=1)
    assert registry.take("127.0.0.1", port) is None  # worker 0's: none handed over
    assert registry.take("127.0.0.1", port, worker=1) is listening


def test_ipv6_addresses_match_whatever_their_spelling() -> None:
    assert address_key("::0", 80) == address_key("[::]", 80) == ("::", 80)
    assert address_key("localhost", 80) == ("localhost", 80)


def test_a_socket_that_does_not_listen_is_refused() -> None:
    with socket.socket() as sock, pytest.raises(ValueError, match="not listening"):
        Listeners().add(sock)


def test_listen_fds_for_another_process_is_ignored_and_removed() -> None:
    env = {"LISTEN_PID": str(os.getpid() + 1), "LISTEN_FDS": "1", "LISTEN_FDNAMES": "web"}
    assert Listeners().from_systemd(env) == 0
    assert env == {}  # never passed on to the apps


def test_without_listen_fds_nothing_is_added() -> None:
    assert Listeners().from_systemd({}) == 0
