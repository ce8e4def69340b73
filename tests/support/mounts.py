"""A small tmpfs of the test's own, for disk-full tests: mounted and always unmounted."""

from __future__ import annotations

import contextlib
import os
import subprocess
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

__all__ = ["fill", "small_tmpfs"]


@contextlib.contextmanager
def small_tmpfs(size: str = "512k") -> Iterator[Path]:
    """A fresh tmpfs of ``size``; unmounted and removed even when the test fails."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root (CI runs as root)")
    where = Path(tempfile.mkdtemp(prefix="nonstop-tmpfs-"))
    try:
        subprocess.run(
            ["mount", "-t", "tmpfs", "-o", f"size={size},mode=0700", "nonstop-test", str(where)],
            check=True,
            capture_output=True,
            timeout=30,
        )
        try:
            yield where
        finally:
            done = subprocess.run(["umount", str(where)], capture_output=True, timeout=30)
            if done.returncode != 0:  # something still holds it open: detach it anyway
                subprocess.run(["umount", "-l", str(where)], capture_output=True, timeout=30)
    finally:
        with contextlib.suppress(OSError):
            where.rmdir()


def fill(directory: Path, name: str = "filler") -> Path:
    """Write into ``directory`` until its file system is full; the file that filled it."""
    path = directory / name
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        block = b"\0" * 4096
        with contextlib.suppress(OSError):
            while True:
                os.write(fd, block)
    finally:
        os.close(fd)
    return path
