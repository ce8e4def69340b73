"""A backend that answers each path with a response written out in full by the test.

For responses the recording backend cannot give: chosen headers (Location, Set-Cookie,
ETag, Content-Encoding, Cache-Control), a 206, a body in several chunks or ended by the
close.  One response per connection, then the backend closes it.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

__all__ = ["ScriptedBackend", "response"]

Answer = bytes | Callable[[bytes], bytes]  # the raw response, or one made from the request


def response(
    status: int = 200,
    body: bytes = b"",
    headers: tuple[str, ...] = (),
    framing: str = "length",
    ctype: str = "text/html",
) -> bytes:
    """Raw response bytes; ``framing``: "length", "chunked" (the body in 3 chunks) or
    "close" (no length: the close ends it)."""
    lines = [f"HTTP/1.1 {status} Status", f"Content-Type: {ctype}", *headers]
    if framing == "length":
        lines.append(f"Content-Length: {len(body)}")
        payload = body
    elif framing == "chunked":
        lines.append("Transfer-Encoding: chunked")
        third = max(len(body) // 3, 1)
        pieces = [body[i : i + third] for i in range(0, len(body), third)]
        payload = b"".join(b"%x\r\n%b\r\n" % (len(p), p) for p in pieces) + b"0\r\n\r\n"
    else:
        payload = body
    lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + payload


@dataclass
class ScriptedBackend:
    answers: dict[str, Answer]
    port: int = 0
    heads: list[bytes] = field(default_factory=list)
    _sock: socket.socket | None = None
    _thread: threading.Thread | None = None

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.port}"

    def start(self) -> ScriptedBackend:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        self.port = sock.getsockname()[1]
        self._sock = sock
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        if self._sock is not None:
            self._sock.close()
            self._sock = None
        if self._thread is not None:
            self._thread.join(5)

    def _serve(self) -> None:
        while self._sock is not None:
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            threading.Thread(target=self._answer, args=(conn,), daemon=True).start()

    def _answer(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            head = b""
            try:
                while b"\r\n\r\n" not in head:
                    data = conn.recv(65536)
                    if not data:
                        return
                    head += data
                self.heads.append(head)
                target = head.split(b" ", 2)[1].decode("latin-1")
                answer = self.answers.get(target.split("?")[0], response(404, b"none"))
                raw = answer(head) if callable(answer) else answer
                if head.startswith(b"HEAD "):
                    raw = raw.partition(b"\r\n\r\n")[0] + b"\r\n\r\n"
                conn.sendall(raw)
            except OSError:
                return
