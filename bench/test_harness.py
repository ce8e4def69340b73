"""Checks of the benchmark harness itself: wrk parsing, /proc readings, rendered configs.

Run with ``.venv/bin/pytest bench/`` (the project's default test run covers tests/ only).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest
from _configs import render_backend_conf, render_haproxy_cfg, render_proxy_conf
from _harness import parse_only
from _procfs import cpu_seconds, pss_kib, rss_kib, tree_pids
from _wrk import parse_wrk

REPORT_WITH_ERRORS = """\
Running 10s test @ http://127.0.0.1:40001/
  1 threads and 50 connections
  Thread Stats   Avg      Stdev     Max   +/- Stdev
    Latency   812.35us  301.22us  12.41ms   91.02%
    Req/Sec    55.12k     3.01k   60.20k    70.00%
  Latency Distribution
     50%  740.00us
     75%    0.90ms
     90%    1.10ms
     99%    2.13ms
  549472 requests in 10.00s, 84.89MB read
  Socket errors: connect 0, read 121, write 2, timeout 3
  Non-2xx or 3xx responses: 7
Requests/sec:  54926.01
Transfer/sec:      8.49MB
"""


def test_wrk_report_numbers_are_read_with_units_converted_to_ms() -> None:
    result = parse_wrk(REPORT_WITH_ERRORS)
    assert result.requests == 549472
    assert result.duration_s == pytest.approx(10.0)
    assert result.rps == pytest.approx(54926.01)
    assert result.p50_ms == pytest.approx(0.74)
    assert result.p99_ms == pytest.approx(2.13)


def test_wrk_socket_errors_and_non_2xx_all_count_as_errors() -> None:
    result = parse_wrk(REPORT_WITH_ERRORS)
    assert result.socket_errors == {"connect": 0, "read": 121, "write": 2, "timeout": 3}
    assert result.non_2xx == 7
    assert result.errors == 133


def test_wrk_report_without_error_lines_has_zero_errors() -> None:
    clean = "\n".join(
        line for line in REPORT_WITH_ERRORS.splitlines() if "errors" not in line.lower()
    )
    result = parse_wrk(clean.replace("Non-2xx or 3xx responses: 7", ""))
    assert result.errors == 0


def test_wrk_failure_output_is_rejected() -> None:
    with pytest.raises(ValueError, match="not a wrk report"):
        parse_wrk("unable to connect to 127.0.0.1:1 Connection refused\n")


def test_only_keeps_canonical_order_and_rejects_unknown_names() -> None:
    assert parse_only("haproxy, nginx256") == ["nginx256", "haproxy"]
    with pytest.raises(ValueError, match="nginx512"):
        parse_only("nginx512")


def test_proc_readings_see_a_child_and_its_cpu_and_memory() -> None:
    child = subprocess.Popen(["sleep", "30"])
    try:
        assert child.pid in tree_pids(os.getpid())
        assert rss_kib([child.pid]) > 0
        assert pss_kib([child.pid]) > 0
        assert cpu_seconds([os.getpid()]) > 0
    finally:
        child.kill()
        child.wait()
    assert tree_pids(child.pid) == []


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")
@pytest.mark.parametrize(
    "text",
    [render_backend_conf([40001, 40002]), render_proxy_conf(40003, [40001, 40002], 256)],
    ids=["backend", "proxy"],
)
def test_rendered_nginx_configs_pass_nginx_t(tmp_path: Path, text: str) -> None:
    (tmp_path / "temp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(text)
    done = subprocess.run(
        ["nginx", "-t", "-p", f"{tmp_path}/", "-c", str(conf)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
def test_rendered_haproxy_config_passes_haproxy_c(tmp_path: Path) -> None:
    cfg = tmp_path / "haproxy.cfg"
    cfg.write_text(render_haproxy_cfg(40003, [40001, 40002], str(tmp_path / "haproxy.pid")))
    done = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr
