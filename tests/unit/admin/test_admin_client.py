"""The CLI's side of the admin socket, against a real unix socket that misbehaves."""

from __future__ import annotations

import select
import socket
import threading
from pathlib import Path

import pytest

from nonstop.admin.client import AdminClient
from nonstop.errors import DaemonUnreachable


def test_a_connection_dropped_at_once_is_unreachable_not_a_traceback(tmp_path: Path) -> None:
    """What an event loop out of descriptors does: accept, then close with a reset."""
    path = str(tmp_path / "admin.sock")
    server = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    server.bind(path)
    server.listen()

    def drop() -> None:
        conn, _ = server.accept()
        select.select([conn], [], [], 10)  # the request arrived: closed unread, a reset
        conn.close()

    thread = threading.Thread(target=drop)
    thread.start()
    try:
        with pytest.raises(DaemonUnreachable) as caught:
            AdminClient(path, timeout=10).call("status")
    finally:
        thread.join(10)
        server.close()
    assert caught.value.exit_code == 3
    assert "dropped the connection" in str(caught.value)
    assert "out of open files" in str(caught.value)
