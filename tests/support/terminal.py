"""Run a command at a pseudo-terminal, as a person at a shell would, and read its screen."""

from __future__ import annotations

import os
import pty
import select
import signal
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path

__all__ = ["AtTerminal"]


def _as_at_a_shell() -> None:
    """Ctrl-C as a shell's foreground job gets it: the suite may run in the background
    (``make test &``), where SIGINT is ignored and children inherit that, so a Ctrl-C
    test would measure how it was started instead of what the command does."""
    signal.signal(signal.SIGINT, signal.SIG_DFL)


class AtTerminal:
    """``argv`` with a pty as stdin, stdout and stderr; ``output`` is what it wrote so far."""

    def __init__(self, argv: Sequence[str], cwd: Path, columns: int = 160, rows: int = 60) -> None:
        master, slave = pty.openpty()
        env = {**os.environ, "TERM": "xterm-256color", "COLUMNS": str(columns), "LINES": str(rows)}
        env.pop("NO_COLOR", None)
        self.proc = subprocess.Popen(
            list(argv),
            stdin=slave,
            stdout=slave,
            stderr=slave,
            cwd=cwd,
            env=env,
            preexec_fn=_as_at_a_shell,
        )
        os.close(slave)
        self.master = master
        self.output = ""

    def read_until(self, text: str, timeout: float = 20.0) -> str:
        """Read until ``text`` appears in the output (or the command ends, or the deadline)."""
        deadline = time.monotonic() + timeout
        while text not in self.output and time.monotonic() < deadline:
            quiet = not self._read(min(0.2, max(0.0, deadline - time.monotonic())))
            if quiet and self.proc.poll() is not None:
                break
        if text not in self.output:
            raise AssertionError(f"{text!r} never appeared; the terminal shows:\n{self.output}")
        return self.output

    def _read(self, timeout: float) -> bool:
        ready, _, _ = select.select([self.master], [], [], timeout)
        if not ready:
            return False
        try:
            chunk = os.read(self.master, 65536)
        except OSError:  # EIO: every writer closed the pty
            return False
        self.output += chunk.decode(errors="replace")
        return bool(chunk)

    def interrupt(self) -> None:
        """Ctrl-C, as the terminal sends it to the foreground process."""
        self.proc.send_signal(signal.SIGINT)

    def wait(self, timeout: float = 20.0) -> int:
        """Until the command ends, reading what it still writes; its exit code."""
        deadline = time.monotonic() + timeout
        while self.proc.poll() is None and time.monotonic() < deadline:
            self._read(0.1)
        while self._read(0.05):
            pass
        return self.proc.wait(max(0.0, deadline - time.monotonic()))

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)
        os.close(self.master)
