"""log_format and access_log through the protocol: nginx's escaping, its variables, and
several logs a level (cases after nginx-tests' access_log.t, access_log_escape.t and
http_variables.t)."""

from __future__ import annotations

import base64
import gzip
import json
import os
import socket
from pathlib import Path

import pytest
from protocol_support import FakeProxy, conf, get, make_proxy, ok

from nonstop.config import load
from nonstop.config.model import Config
from nonstop.errors import ConfigError
from nonstop.proxy.accesslog import AccessLogs, LogSink, escape_default
from nonstop.proxy.logformat import escape_json
from nonstop.proxy.request import Request


def _lines(proxy: FakeProxy, path: Path) -> list[str]:
    proxy.state.access_logs.flush()
    return path.read_bytes().decode("latin-1").splitlines()


def _one(tmp_path: Path, fmt: str, request: bytes, response: bytes = b"") -> str:
    """The line one request writes through ``log_format test FMT``."""
    log = tmp_path / "test.log"
    proxy = make_proxy(
        tmp_path, conf(server=f"access_log {log} test;", extra_http=f"log_format test {fmt};")
    )
    client = proxy.client()
    client.send(request)
    proxy.active().respond(response or ok(b"hello"))
    assert client.responses()
    [line] = _lines(proxy, log)
    return line


async def test_default_escaping_writes_quotes_backslashes_controls_and_high_bytes_as_hex(
    tmp_path: Path,
) -> None:
    line = _one(tmp_path, "'$http_x_a|$http_x_missing|$uri'", get("/p", 'X-A: a"b\\c\t\xe9'))
    assert line == "a\\x22b\\x5Cc\\x09\\xE9|-|/p"


async def test_json_escaping_keeps_utf8_and_writes_nothing_for_a_missing_value(
    tmp_path: Path,
) -> None:
    fmt = """escape=json '{"a":"$http_x_a","m":"$http_x_missing"}'"""
    request = get("/", 'X-A: q"b\\s\tt é'.encode().decode("latin-1"))
    line = _one(tmp_path, fmt, request)
    assert json.loads(line.encode("latin-1")) == {"a": 'q"b\\s\tt é', "m": ""}
    assert "\\t" in line and '\\"' in line


async def test_escape_none_writes_the_value_as_it_came(tmp_path: Path) -> None:
    line = _one(tmp_path, "escape=none '[$http_x_a][$http_x_missing]'", get("/", 'X-A: "q\\'))
    assert line == '["q\\][]'


async def test_the_log_variables_read_the_request_the_response_and_the_connection(
    tmp_path: Path,
) -> None:
    fmt = (
        "'$status $body_bytes_sent $bytes_sent $request_length $sent_http_content_type "
        "$sent_http_x_missing $upstream_cache_status $remote_user $connection_requests "
        "$request_method $server_port $pipe $pid $hostname'"
    )
    auth = "Authorization: Basic " + base64.b64encode(b"alice:secret").decode()
    request = get("/x?a=1", auth)
    response = ok(b"hello", "Content-Type: text/plain")
    line = _one(tmp_path, fmt, request, response)
    fields = line.split(" ")
    assert fields[0:2] == ["200", "5"]
    assert int(fields[2]) > 5 + len("HTTP/1.1 200 OK\r\n\r\n")  # bytes_sent: head and body
    assert fields[3] == str(len(request))
    assert fields[4:9] == ["text/plain", "-", "-", "alice", "1"]
    assert fields[9:] == ["GET", "8080", ".", str(os.getpid()), socket.gethostname()]


async def test_bytes_sent_is_the_head_and_body_the_client_got(tmp_path: Path) -> None:
    log = tmp_path / "b.log"
    proxy = make_proxy(
        tmp_path,
        conf(server=f"access_log {log} b;", extra_http="log_format b '$bytes_sent';"),
    )
    client = proxy.client()
    client.send(get("/"))
    proxy.active().respond(ok(b"hello"))
    sent = client.take()
    assert _lines(proxy, log) == [str(len(sent))]


async def test_request_time_and_upstream_times_follow_the_clock(tmp_path: Path) -> None:
    log = tmp_path / "t.log"
    fmt = "log_format t '$request_time $upstream_response_time $upstream_status';"
    proxy = make_proxy(tmp_path, conf(server=f"access_log {log} t;", extra_http=fmt))
    client = proxy.client()
    client.send(get("/"))
    proxy.clock.advance(0.25)
    proxy.active().respond(ok())
    assert client.responses()
    assert _lines(proxy, log) == ["0.250 0.250 200"]


async def test_every_try_of_a_retried_request_is_in_the_upstream_variables(
    tmp_path: Path,
) -> None:
    log = tmp_path / "u.log"
    fmt = "log_format u '$upstream_addr|$upstream_status|$status';"
    proxy = make_proxy(tmp_path, conf(server=f"access_log {log} u;", extra_http=fmt))
    client = proxy.client()
    client.send(get("/"))
    first = proxy.active()
    first.hang_up()
    second = proxy.active()
    second.respond(ok())
    assert client.responses()
    assert _lines(proxy, log) == [f"{first.address}, {second.address}|502, 200|200"]


async def test_without_an_upstream_its_variables_are_a_dash(tmp_path: Path) -> None:
    log = tmp_path / "n.log"
    fmt = "log_format n '$upstream_addr $upstream_status $upstream_response_time $status';"
    proxy = make_proxy(
        tmp_path, conf(server=f"access_log {log} n;", location="return 204;", extra_http=fmt)
    )
    client = proxy.client()
    client.send(get("/"))
    assert client.responses()[0].status == 204
    assert _lines(proxy, log) == ["- - - 204"]


async def test_several_logs_at_one_level_each_get_the_line_and_off_cancels_them(
    tmp_path: Path,
) -> None:
    one, two = tmp_path / "one.log", tmp_path / "two.log"
    proxy = make_proxy(
        tmp_path,
        conf(
            server=f"access_log {one}; access_log {two} short;",
            extra_http="log_format short '$request_method $uri $status';",
            extra_locations="location /quiet { access_log off; return 204; }",
        ),
    )
    client = proxy.client()
    client.send(get("/a"))
    proxy.active().respond(ok())
    client.send(get("/quiet"))
    assert [r.status for r in client.responses()] == [200, 204]
    assert _lines(proxy, two) == ["GET /a 200"]
    [line] = _lines(proxy, one)
    assert '"GET /a HTTP/1.1" 200 5 "-" "-"' in line


async def test_if_skips_the_line_when_the_condition_is_empty_or_zero(tmp_path: Path) -> None:
    log = tmp_path / "if.log"
    proxy = make_proxy(
        tmp_path,
        conf(
            server=f"access_log {log} u if=$http_x_log;",
            extra_http="log_format u '$uri';",
            location="return 204;",
        ),
    )
    client = proxy.client()
    for path, header in (("/no", ()), ("/zero", ("X-Log: 0",)), ("/yes", ("X-Log: 1",))):
        client.send(get(path, *header))
    assert len(client.responses()) == 3
    assert _lines(proxy, log) == ["/yes"]


async def test_a_location_with_its_own_log_inherits_none_from_the_server(tmp_path: Path) -> None:
    server_log, own = tmp_path / "s.log", tmp_path / "own.log"
    proxy = make_proxy(
        tmp_path,
        conf(
            server=f"access_log {server_log};",
            location="return 204;",
            extra_locations=f"location /own {{ access_log {own}; return 204; }}",
        ),
    )
    client = proxy.client()
    client.send(get("/"), get("/own"))
    assert len(client.responses()) == 2
    assert [line.split('"')[1] for line in _lines(proxy, server_log)] == ["GET / HTTP/1.1"]
    assert [line.split('"')[1] for line in _lines(proxy, own)] == ["GET /own HTTP/1.1"]


# -- buffering -------------------------------------------------------------------------


class _Conn:
    remote_addr = "10.0.0.1"


def _request() -> Request:
    req = Request(_Conn(), b"/")
    req.method = b"GET"
    return req


def test_a_buffered_log_writes_when_the_next_line_does_not_fit(tmp_path: Path) -> None:
    path = tmp_path / "buf.log"
    logs = AccessLogs()
    sink = LogSink(str(path), lambda r, s, b, n: "x" * 9 + "\n", buffer=25)
    logs.write((sink,), _request(), 200, 0, 1.0)
    logs.write((sink,), _request(), 200, 0, 1.0)
    logs.flush(2.0)  # the tick: a buffer without flush= waits
    assert not path.exists()
    logs.write((sink,), _request(), 200, 0, 1.0)  # 30 > 25: the first two go out
    assert path.read_text() == "x" * 9 + "\n" + "x" * 9 + "\n"
    logs.close()  # stop writes the rest
    assert path.read_text().count("\n") == 3


def test_a_buffered_log_writes_flush_seconds_after_its_oldest_line(tmp_path: Path) -> None:
    path = tmp_path / "flush.log"
    logs = AccessLogs()
    sink = LogSink(str(path), lambda r, s, b, n: "line\n", buffer=65536, flush=5.0)
    logs.write((sink,), _request(), 200, 0, 100.0)
    logs.write((sink,), _request(), 200, 0, 103.0)
    logs.flush(104.9)
    assert not path.exists()
    logs.flush(105.0)
    assert path.read_text() == "line\nline\n"


def test_an_unbuffered_log_writes_at_every_tick(tmp_path: Path) -> None:
    path = tmp_path / "plain.log"
    logs = AccessLogs()
    logs.write((LogSink(str(path), None),), _request(), 200, 3, 1.0)
    logs.flush(1.25)
    assert path.read_text().endswith('] "GET / HTTP/1.1" 200 3 "-" "-"\n')
    assert path.read_text().startswith("10.0.0.1 - - [")


def test_a_gzip_log_is_whole_gzip_members_zcat_reads_at_any_time(tmp_path: Path) -> None:
    path = tmp_path / "log.gz"
    logs = AccessLogs()
    sink = LogSink(str(path), lambda r, s, b, n: f"{s}\n", buffer=65536, gzip=9)
    logs.write((sink,), _request(), 200, 0, 1.0)
    logs.reopen()  # a reload or a rotation writes the buffer
    logs.write((sink,), _request(), 404, 0, 2.0)
    logs.close()
    assert gzip.decompress(path.read_bytes()) == b"200\n404\n"


# -- config ----------------------------------------------------------------------------


def _load(tmp_path: Path, http: str) -> Config:
    path = tmp_path / "nginx.conf"
    path.write_text(f"events {{}}\nhttp {{\n{http}\n}}\n")
    return load(str(path))


@pytest.mark.parametrize(
    ("http", "message"),
    [
        ("access_log a.log combined flush=1s;", 'no buffer is defined for access_log "a.log"'),
        ("access_log a.log combined buffer=1k foo=1;", 'invalid parameter "foo=1"'),
        ("access_log a.log combined gzip=10;", 'invalid compression level "10"'),
        ("access_log a.log main;", 'unknown log format "main"'),
        ("access_log off combined;", 'invalid number of arguments in "access_log"'),
        ("log_format x '$nope';\naccess_log a.log x;", 'unknown "nope" variable'),
        (
            "access_log a.log combined buffer=1k;\naccess_log a.log combined buffer=2k;",
            'access_log "a.log" already defined with conflicting parameters',
        ),
    ],
)
def test_access_log_errors_read_like_nginx(tmp_path: Path, http: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        _load(tmp_path, http + "\nserver { listen 127.0.0.1:1; return 204; }")


def test_gzip_without_a_buffer_buffers_64k_at_level_1(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path, "server { listen 127.0.0.1:1; access_log a.gz combined gzip; return 204; }"
    )
    [log] = cfg.servers[0].access_log  # type: ignore[attr-defined]
    assert (log.buffer, log.gzip, log.flush) == (65536, 1, 0.0)


def test_log_format_strings_are_joined_as_written(tmp_path: Path) -> None:
    cfg = _load(
        tmp_path,
        "log_format main escape=json '$remote_addr '\n  '\"$request\"';\n"
        "server { listen 127.0.0.1:1; access_log a.log main buffer=32k flush=5m; return 204; }",
    )
    [log] = cfg.servers[0].access_log or ()
    assert log.format.template.raw == '$remote_addr "$request"'
    assert (log.format.escape, log.buffer, log.flush) == ("json", 32768, 300.0)


def test_the_escapes_are_nginx_s_byte_for_byte() -> None:
    raw = 'a"\\\x01\x1b\x7f\n\r\t\b\x0c\xe9'
    assert escape_default(raw) == "a\\x22\\x5C\\x01\\x1B\\x7F\\x0A\\x0D\\x09\\x08\\x0C\\xE9"
    assert escape_json(raw) == 'a\\"\\\\\\u0001\\u001b\x7f\\n\\r\\t\\b\\f\xe9'


async def test_a_map_of_status_decides_if_as_in_nginx_s_own_example(tmp_path: Path) -> None:
    log = tmp_path / "errors.log"
    proxy = make_proxy(
        tmp_path,
        conf(
            server=f"access_log {log} combined if=$loggable;",
            extra_http="map $status $loggable { ~^[23] 0; default 1; }",
        ),
    )
    client = proxy.client()
    client.send(get("/ok"))
    proxy.active().respond(ok())
    client.send(get("/missing"))
    proxy.active().respond(ok(b"no", status="404 Not Found"))
    assert [r.status for r in client.responses()] == [200, 404]
    [line] = _lines(proxy, log)
    assert '"GET /missing HTTP/1.1" 404 2' in line
