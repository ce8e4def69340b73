"""Instance log files: appended, tailed, exit described."""

from __future__ import annotations

import signal
from pathlib import Path

from nonstop.supervisor import logfile


def test_log_path_is_app_dash_port_under_logs(tmp_path: Path) -> None:
    assert logfile.log_path(tmp_path, "web", 8080) == tmp_path / "logs" / "web-8080.log"


def test_append_line_never_truncates(tmp_path: Path) -> None:
    path = tmp_path / "logs" / "a.log"
    logfile.append_line(path, "start one", 0.0)
    logfile.append_line(path, "start two", 0.0)
    lines = path.read_text().splitlines()
    assert len(lines) == 2
    assert lines[0].startswith("=== nonstop ") and lines[0].endswith("start one ===")
    assert lines[1].endswith("start two ===")


def test_tail_returns_the_last_lines(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_text("".join(f"line {i}\n" for i in range(100)))
    assert logfile.tail(path, 3) == "line 97\nline 98\nline 99"
    assert logfile.tail(path, 0) == ""
    assert logfile.tail(tmp_path / "missing.log") == ""


def test_tail_of_a_huge_log_drops_the_cut_first_line(tmp_path: Path) -> None:
    path = tmp_path / "a.log"
    path.write_bytes(b"x" * 200_000 + b"\nlast\n")
    assert logfile.tail(path, 5) == "last"


def test_exit_descriptions() -> None:
    assert logfile.describe_exit(0) == "exited with code 0"
    assert logfile.describe_exit(-signal.SIGKILL) == "killed by SIGKILL"
