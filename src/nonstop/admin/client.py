"""The CLI side of the admin socket."""

from __future__ import annotations

import json
import socket
from typing import Any

from nonstop.errors import DaemonUnreachable

__all__ = ["AdminClient"]


class AdminClient:
    def __init__(self, path: str, timeout: float = 600.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        try:
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise DaemonUnreachable(
                    f"cannot reach the nonstop daemon at {self.path}: {exc.strerror or exc}"
                ) from exc
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            data = b""
            while not data.endswith(b"\n"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                data += chunk
        finally:
            sock.close()
        if not data:
            raise DaemonUnreachable(f"the daemon at {self.path} closed without answering")
        answer = json.loads(data)
        assert isinstance(answer, dict)
        return answer
