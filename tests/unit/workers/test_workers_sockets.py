"""The workers' listening sockets: one per worker per address, in one SO_REUSEPORT group."""

from __future__ import annotations

import socket

import pytest

from nonstop.config.model import Config, Listen, ServerBlock
from nonstop.workers.sockets import WorkerSockets


def config(*ports: int) -> Config:
    listens = tuple(Listen(host="127.0.0.1", port=port) for port in ports)
    return Config(path="x.conf", prefix=".", servers=(ServerBlock(listens=listens),))


def test_each_worker_gets_its_own_socket_and_port_0_is_one_port_for_the_group() -> None:
    sockets = WorkerSockets()
    try:
        sockets.open(config(0), range(3))
        fds = [sockets.of(config(0), i)[1][0] for i in range(3)]
        assert len(set(fds)) == 3
        ports = {socket.socket(fileno=socket.dup(fd)).getsockname()[1] for fd in fds}
        assert len(ports) == 1 and sockets.addresses() == [f"127.0.0.1:{ports.pop()}"]
        sockets.keep(config(0), range(2))  # worker 2 retired: its socket closes
        assert sockets.of(config(0), 2) == ([], [])
    finally:
        sockets.close()


def test_a_port_that_cannot_be_bound_keeps_nothing_opened_for_the_new_config() -> None:
    taken = socket.socket()
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    busy = taken.getsockname()[1]
    sockets = WorkerSockets()
    try:
        sockets.open(config(0), range(2))
        before = sockets.addresses()
        with pytest.raises(OSError, match=f"bind\\(\\) to 127.0.0.1:{busy} failed"):
            sockets.open(config(0, busy), range(2))
        assert sockets.addresses() == before
    finally:
        sockets.close()
        taken.close()
