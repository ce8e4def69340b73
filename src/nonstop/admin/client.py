"""The CLI side of the admin socket: one request line, then response lines.

``call`` reads the one answer of a short command; ``stream`` hands every progress event
(``{"event": ...}``) to a callback as it arrives and returns the final line.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Callable
from typing import Any

from nonstop.errors import DaemonUnreachable

__all__ = ["AdminClient"]

# A deploy may be quiet for a whole start_timeout (the health gate); past an hour of
# silence the daemon is taken to be stuck.
STREAM_IDLE_TIMEOUT = 3600.0


class AdminClient:
    def __init__(self, path: str, timeout: float = 600.0) -> None:
        self.path = path
        self.timeout = timeout

    def call(self, cmd: str, **args: Any) -> dict[str, Any]:
        return self.stream(cmd, None, **args)

    def stream(
        self, cmd: str, on_event: Callable[[dict[str, Any]], None] | None, **args: Any
    ) -> dict[str, Any]:
        """Send ``cmd``; pass each event line to ``on_event``; return the final line."""
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout if on_event is None else STREAM_IDLE_TIMEOUT)
        try:
            try:
                sock.connect(self.path)
            except OSError as exc:
                raise DaemonUnreachable(
                    f"cannot reach the nonstop daemon at {self.path}: {exc.strerror or exc}"
                ) from exc
            sock.sendall(json.dumps({"cmd": cmd, **args}).encode() + b"\n")
            return self._read(sock, on_event)
        except TimeoutError as exc:
            raise DaemonUnreachable(f"the daemon at {self.path} stopped answering") from exc
        except ConnectionError as exc:
            # accepted and dropped at once: what the event loop does to a connection it
            # cannot take, the daemon being out of file descriptors (see its error log)
            raise DaemonUnreachable(
                f"the daemon at {self.path} dropped the connection ({exc.strerror or exc}): "
                "it may be out of open files (worker_rlimit_nofile, TOML max_open_files)"
            ) from exc
        finally:
            sock.close()

    def _read(
        self, sock: socket.socket, on_event: Callable[[dict[str, Any]], None] | None
    ) -> dict[str, Any]:
        buffer = b""
        while True:
            while b"\n" in buffer:
                line, buffer = buffer.split(b"\n", 1)
                answer = json.loads(line)
                if not isinstance(answer, dict):
                    raise DaemonUnreachable(f"the daemon at {self.path} sent {answer!r}")
                if "event" in answer and "ok" not in answer:
                    if on_event is not None:
                        on_event(answer)
                    continue
                return answer
            chunk = sock.recv(65536)
            if not chunk:
                raise DaemonUnreachable(f"the daemon at {self.path} closed without answering")
            buffer += chunk
