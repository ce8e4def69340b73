"""Files handed to a worker: real descriptors, memory files and directories."""

from __future__ import annotations

import os
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest

from nonstop.proxy import handed
from nonstop.proxy.handed import NOTHING, Handed, install


@pytest.fixture(autouse=True)
def _nothing_handed_after() -> Iterator[None]:
    yield
    install(NOTHING, [])


def test_a_handed_file_is_read_from_its_bytes_and_loaded_from_a_memory_file(
    tmp_path: Path,
) -> None:
    on_disk = tmp_path / "site.key"
    on_disk.write_bytes(b"on disk")
    assert handed.read_pem(str(on_disk)) == b"on disk"
    with handed.pem_path(str(on_disk)) as path:
        assert path == str(on_disk)
    install(Handed(pem={str(on_disk): b"handed over"}), [])
    assert handed.read_pem(str(on_disk)) == b"handed over"
    with handed.pem_path(str(on_disk)) as path:
        assert path.startswith("/proc/self/fd/")
        assert Path(path).read_bytes() == b"handed over"
        assert os.readlink(path).startswith("/memfd:nonstop-pem")
    assert not os.path.exists(path)  # closed on the way out


def test_a_handed_log_is_a_duplicate_and_the_next_table_closes_the_old_one(
    tmp_path: Path,
) -> None:
    log = tmp_path / "access.log"
    fd = os.open(log, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
    install(Handed(logs=(str(log),)), [fd])
    mine = handed.log_descriptor(str(log))
    assert mine not in (-1, fd)
    os.write(mine, b"line\n")
    os.close(mine)
    assert log.read_bytes() == b"line\n"
    assert handed.log_descriptor(str(tmp_path / "other.log")) == -1
    install(NOTHING, [])
    with pytest.raises(OSError):
        os.fstat(fd)  # the table's own descriptor went with it
    with pytest.raises(ValueError, match="2 descriptors handed over for 1 files"):
        install(Handed(logs=("a",)), [0, 1])


def test_a_temporary_file_is_unnamed_in_the_handed_directory(tmp_path: Path) -> None:
    state = tmp_path / "state"
    # not handed: the directory is made under the state directory, 0700
    with handed.temporary_file(str(state), "proxy_temp") as file:
        file.write(b"spooled")
        file.seek(0)
        assert file.read() == b"spooled"
    made = state / "proxy_temp"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700 and list(made.iterdir()) == []
    # handed: the file is made through the descriptor; the path is never used
    elsewhere = tmp_path / "theirs"
    elsewhere.mkdir()
    fd = os.open(elsewhere, os.O_RDONLY | os.O_DIRECTORY)
    install(Handed(temps=("client_body_temp",)), [fd])
    with handed.temporary_file(str(tmp_path / "nowhere"), "client_body_temp") as file:
        file.write(b"body")
        assert os.fstat(file.fileno()).st_dev == elsewhere.stat().st_dev
        assert os.readlink(f"/proc/self/fd/{file.fileno()}").startswith(f"{elsewhere}/")
    assert list(elsewhere.iterdir()) == [] and not (tmp_path / "nowhere").exists()
