"""Per-instance log files: appended across restarts, never truncated.

The seed's ``nohup … 1> log.txt`` truncated the log on every deploy and lost the old
process's last lines (defect 9).  Here every start appends a header line and every exit a
footer, so one file reads as the history of that app on that port.
"""

from __future__ import annotations

import datetime
import os
import signal
from pathlib import Path

from nonstop.supervisor.process import UNKNOWN_EXIT

__all__ = ["append_line", "describe_exit", "log_path", "tail"]

_TAIL_BYTES = 64 * 1024


def log_path(state_dir: str | os.PathLike[str], app: str, port: int) -> Path:
    """``state_dir/logs/APP-PORT.log``."""
    return Path(state_dir) / "logs" / f"{app}-{port}.log"


def append_line(path: str | os.PathLike[str], text: str, wall: float) -> None:
    """Append ``=== nonstop <local time> <text> ===`` (creating the directory)."""
    stamp = datetime.datetime.fromtimestamp(wall).astimezone().isoformat(timespec="milliseconds")
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(path, "ab") as handle:
        handle.write(f"=== nonstop {stamp} {text} ===\n".encode(errors="replace"))


def describe_exit(returncode: int) -> str:
    """``exited with code 3`` / ``killed by SIGKILL``, from a subprocess-style code."""
    if returncode >= 0:
        return f"exited with code {returncode}"
    if returncode == UNKNOWN_EXIT:
        return "exited; how is known only to the nonstop that started it"
    try:
        name = signal.Signals(-returncode).name
    except ValueError:
        name = f"signal {-returncode}"
    return f"killed by {name}"


def tail(path: str | os.PathLike[str], lines: int = 20) -> str:
    """The last ``lines`` lines of the log (reading at most its last 64 KiB)."""
    if lines <= 0:
        return ""
    try:
        with open(path, "rb") as handle:
            handle.seek(0, os.SEEK_END)
            size = handle.tell()
            handle.seek(max(0, size - _TAIL_BYTES))
            data = handle.read()
    except FileNotFoundError:
        return ""
    text = data.decode("utf-8", errors="replace")
    kept = text.splitlines()
    if size > _TAIL_BYTES and kept:
        kept = kept[1:]  # the first line was cut in the middle
    return "\n".join(kept[-lines:])
