"""Run a README section's commands as a reader would, in a network namespace of its own.

    unshare --net python -m tests.support.walkthrough README.md "SECTION"

runs in the current directory and prints one JSON object: what each part printed and how
it ended, and which processes were still alive at the end.  The section's fenced blocks
are read in order, as a reader follows them:

- a block whose first line is ``# NAME`` and whose language is not ``sh`` is a file: it
  is saved as NAME;
- an ``sh`` block that says ``terminal 1`` is started in the background, and the next
  block waits until it has printed the first double-quoted text in it; it is stopped
  with SIGINT (Ctrl-C) at the end;
- every other ``sh`` block runs in one bash (``set -e``), in order.

The namespace has a loopback of its own, so the README's fixed ports cannot meet another
program's; every process the walkthrough leaves is found by its namespace and killed by
its PID.
"""

from __future__ import annotations

import fcntl
import json
import os
import re
import shlex
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Block", "section_blocks"]

TIMEOUT = 90.0


@dataclass
class Block:
    lang: str
    text: str


def section_blocks(markdown: str, heading: str) -> list[Block]:
    """The fenced blocks under the heading named ``heading``, up to the next heading."""
    lines = markdown.splitlines()
    starts = [i for i, line in enumerate(lines) if re.fullmatch(rf"#+ {re.escape(heading)}", line)]
    if len(starts) != 1:
        raise LookupError(f"README.md has {len(starts)} sections named {heading!r}")
    blocks: list[Block] = []
    fence: str | None = None
    lang, body = "", list[str]()
    for line in lines[starts[0] + 1 :]:
        if fence is None:
            if line.startswith("#"):
                break
            if line.startswith("```"):
                fence, lang, body = "```", line[3:].strip(), []
        elif line.startswith(fence):
            blocks.append(Block(lang, "\n".join(body) + "\n"))
            fence = None
        else:
            body.append(line)
    return blocks


@dataclass
class Background:
    """A terminal-1 command: its process group, and everything it printed so far."""

    proc: subprocess.Popen[bytes]
    output: bytearray = field(default_factory=bytearray)

    def start_reading(self) -> None:
        stream = self.proc.stdout
        assert stream is not None

        def read() -> None:
            for chunk in iter(lambda: stream.read1(65536), b""):
                self.output += chunk

        threading.Thread(target=read, daemon=True).start()

    def wait_for(self, text: str) -> bool:
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            if text.encode() in self.output:
                return True
            if self.proc.poll() is not None:
                return text.encode() in self.output
            time.sleep(0.05)
        return False


def loopback_up() -> None:
    """``ip link set lo up``, without needing iproute2."""
    siocgifflags, siocsifflags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, siocgifflags, request))[1]
        fcntl.ioctl(sock, siocsifflags, struct.pack("16sH22x", b"lo", flags | iff_up))


def others_in_namespace() -> list[int]:
    """PIDs of every process in this network namespace but this one."""
    mine = os.readlink("/proc/self/ns/net")
    pids = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) == os.getpid():
            continue
        try:
            if os.readlink(f"/proc/{entry}/ns/net") == mine:
                pids.append(int(entry))
        except OSError:
            pass
    return pids


def alive(pid: int) -> bool:
    """Running, not a zombie waiting to be reaped."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as handle:
            return handle.read().rsplit(b")", 1)[1].split()[0] != b"Z"
    except OSError:
        return False


def wait_gone(deadline: float) -> list[int]:
    while True:
        left = [pid for pid in others_in_namespace() if alive(pid)]
        if not left or time.monotonic() >= deadline:
            return left
        time.sleep(0.05)


def run(markdown: str, heading: str) -> dict[str, object]:
    loopback_up()
    ended: list[dict[str, object]] = []
    left: list[str] = []
    result: dict[str, object] = {"background": ended, "script": None, "left": left}
    backgrounds: list[Background] = []
    script = ["set -e"]
    for block in section_blocks(markdown, heading):
        first = block.text.split("\n", 1)[0]
        if block.lang != "sh":
            if first.startswith("# "):
                name = first[2:].strip()
                script.append(f"cat > {shlex.quote(name)} <<'README_EOF'\n{block.text}README_EOF")
            continue
        if "terminal 1" not in block.text:
            script.append(block.text)
            continue
        proc = subprocess.Popen(
            ["bash", "-c", block.text],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        background = Background(proc)
        background.start_reading()
        backgrounds.append(background)
        quoted = re.search(r'"([^"]+)"', block.text)
        if quoted is not None and not background.wait_for(quoted.group(1)):
            result["script"] = {"code": None, "output": f"never printed {quoted.group(1)!r}"}
            break
    else:
        # Into a file, not a pipe: what the script leaves running keeps its output open.
        with tempfile.TemporaryFile() as output:
            proc = subprocess.Popen(
                ["bash", "-c", "\n".join(script)],
                stdout=output,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            try:
                code: int | None = proc.wait(TIMEOUT)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                code = proc.wait()
            output.seek(0)
            printed = output.read().decode(errors="replace")
        result["script"] = {"code": code, "output": printed}
    for background in backgrounds:
        if background.proc.poll() is None:
            os.killpg(background.proc.pid, signal.SIGINT)  # Ctrl-C in its terminal
        try:
            code = background.proc.wait(TIMEOUT)
        except subprocess.TimeoutExpired:
            code = None
        ended.append({"code": code, "output": background.output.decode(errors="replace")})
    for pid in wait_gone(time.monotonic() + 30):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                command = handle.read().replace(b"\0", b" ").decode(errors="replace")
            os.kill(pid, signal.SIGKILL)
        except OSError:
            continue
        left.append(command)
    return result


def main() -> None:
    readme, heading = sys.argv[1], sys.argv[2]
    print(json.dumps(run(Path(readme).read_text(), heading)))


if __name__ == "__main__":
    main()
