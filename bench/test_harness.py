"""Checks of the benchmark harness itself: wrk parsing, /proc readings, rendered configs.

Run with ``.venv/bin/pytest bench/`` (the project's default test run covers tests/ only).
"""

from __future__ import annotations

import http.server
import os
import shutil
import ssl
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from _configs import (
    TlsFiles,
    render_backend_conf,
    render_driven_conf,
    render_haproxy_cfg,
    render_proxy_conf,
)
from _harness import free_ports, http_status, https_probe, make_certificate, parse_only
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


@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")
def test_the_driven_config_is_the_engine_render_and_passes_nginx_t(tmp_path: Path) -> None:
    text = render_driven_conf(40003, [40001, 40002], [40004, 40005], tmp_path)
    assert "upstream backends__slot0" in text and "proxy_pass http://$nonstop_app_backends;" in text
    assert "server 40001" not in text and "server 127.0.0.1:40004 backup;" in text
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


needs_openssl = pytest.mark.skipif(shutil.which("openssl") is None, reason="needs openssl")


@pytest.fixture
def tls_files(tmp_path: Path) -> TlsFiles:
    return make_certificate(tmp_path / "tls")


def test_plain_configs_have_no_tls_and_tls_configs_name_the_certificate() -> None:
    files = TlsFiles(Path("/c/cert.pem"), Path("/c/key.pem"), Path("/c/both.pem"), "ECDSA P-256")
    assert "ssl" not in render_proxy_conf(40003, [40001], 256)
    assert " ssl" not in render_haproxy_cfg(40003, [40001], "/p")
    nginx = render_proxy_conf(40003, [40001], 256, files)
    assert "listen 127.0.0.1:40003 ssl;" in nginx
    assert "ssl_certificate /c/cert.pem;" in nginx
    assert "ssl_certificate_key /c/key.pem;" in nginx
    assert "bind 127.0.0.1:40003 ssl crt /c/both.pem " in render_haproxy_cfg(
        40003, [40001], "/p", files
    )


@needs_openssl
def test_certificate_is_ecdsa_p256_and_the_combined_pem_holds_cert_and_key(
    tls_files: TlsFiles,
) -> None:
    text = subprocess.run(
        ["openssl", "x509", "-in", str(tls_files.certificate), "-noout", "-text"],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "NIST CURVE: P-256" in text
    assert "IP Address:127.0.0.1" in text
    combined = tls_files.combined.read_text()
    assert combined.index("BEGIN CERTIFICATE") < combined.index("PRIVATE KEY")


@needs_openssl
@pytest.mark.skipif(shutil.which("nginx") is None, reason="needs nginx")
def test_rendered_tls_nginx_config_passes_nginx_t(tmp_path: Path, tls_files: TlsFiles) -> None:
    (tmp_path / "temp").mkdir()
    conf = tmp_path / "nginx.conf"
    conf.write_text(render_proxy_conf(40003, [40001, 40002], 256, tls_files))
    done = subprocess.run(
        ["nginx", "-t", "-p", f"{tmp_path}/", "-c", str(conf)], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr


@needs_openssl
@pytest.mark.skipif(shutil.which("haproxy") is None, reason="needs haproxy")
def test_rendered_tls_haproxy_config_passes_haproxy_c(tmp_path: Path, tls_files: TlsFiles) -> None:
    cfg = tmp_path / "haproxy.cfg"
    pidfile = str(tmp_path / "haproxy.pid")
    cfg.write_text(render_haproxy_cfg(40003, [40001, 40002], pidfile, tls_files))
    done = subprocess.run(["haproxy", "-c", "-f", str(cfg)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout + done.stderr


class _Ok(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def tls_server(tls_files: TlsFiles) -> Iterator[int]:
    """A loopback HTTPS server answering 200, with the self-signed certificate."""
    server = http.server.HTTPServer(("127.0.0.1", 0), _Ok)
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(tls_files.certificate, tls_files.key)
    server.socket = context.wrap_socket(server.socket, server_side=True)
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield server.server_address[1]
    finally:
        server.shutdown()
        thread.join(timeout=10)
        server.server_close()


@needs_openssl
def test_https_probe_accepts_the_self_signed_certificate_and_reports_the_session(
    tls_server: int,
) -> None:
    probe = https_probe(tls_server, timeout_s=5.0)
    assert probe is not None
    assert probe.status == 200
    assert probe.version == "TLSv1.3"
    assert probe.cipher and probe.cipher.startswith("TLS_")


@needs_openssl
def test_plain_http_check_does_not_pass_on_a_tls_port(tls_server: int) -> None:
    assert http_status(tls_server, timeout_s=2.0) != 200


def test_https_probe_on_a_closed_port_is_none() -> None:
    assert https_probe(free_ports(1)[0]) is None
