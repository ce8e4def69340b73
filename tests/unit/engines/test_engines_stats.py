"""Per-server answers counted from nginx's upstream log (``$upstream_addr $upstream_status``)."""

from __future__ import annotations

from pathlib import Path

from nonstop.engines.nginx.stats import UpstreamStats, parse_line


def test_each_try_of_a_request_counts_for_its_own_server() -> None:
    assert list(parse_line("127.0.0.1:8000 200\n")) == [("127.0.0.1:8000", 200)]
    assert list(parse_line("127.0.0.1:8000, 127.0.0.1:8001 502, 200")) == [
        ("127.0.0.1:8000", 502),
        ("127.0.0.1:8001", 200),
    ]
    assert list(parse_line("127.0.0.1:80 : [::1]:81 404 : 500")) == [
        ("127.0.0.1:80", 404),
        ("[::1]:81", 500),
    ]
    assert list(parse_line("unix:/run/app.sock 503")) == [("unix:/run/app.sock", 503)]


def test_requests_nginx_answered_itself_count_for_no_server() -> None:
    assert list(parse_line("- -")) == []
    assert list(parse_line("127.0.0.1:8000 -")) == []
    assert list(parse_line("")) == []


def test_counts_follow_the_appended_lines_from_a_reset_on(tmp_path: Path) -> None:
    log = tmp_path / "upstream.log"
    stats = UpstreamStats(str(log))
    assert stats.counts("127.0.0.1:8000") == (0, 0)  # no file yet
    log.write_text("127.0.0.1:8000 200\n127.0.0.1:8000 500\n")
    stats.reset("127.0.0.1:8000")  # what came before the reset is not counted
    with log.open("a") as handle:
        handle.write("127.0.0.1:8000 200\n127.0.0.1:8001 502\n127.0.0.1:8000 50")
    assert stats.counts("127.0.0.1:8000") == (1, 0)  # the half-written line waits
    with log.open("a") as handle:
        handle.write("3\n")
    assert stats.counts("127.0.0.1:8000") == (2, 1)
    assert stats.counts("127.0.0.1:8001") == (1, 1)


def test_the_log_is_truncated_past_its_bound_and_counting_goes_on(tmp_path: Path) -> None:
    log = tmp_path / "upstream.log"
    stats = UpstreamStats(str(log), max_bytes=100)
    line = "127.0.0.1:8000 200\n"
    log.write_text(line * 10)
    assert stats.counts("127.0.0.1:8000") == (10, 0)
    assert log.stat().st_size == 0
    with log.open("a") as handle:
        handle.write("127.0.0.1:8000 500\n")
    assert stats.counts("127.0.0.1:8000") == (11, 1)
