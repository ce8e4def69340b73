"""The CLI at a terminal and without one: the health gate's progress line and
``status --watch``, run by a real daemon with real apps."""

from __future__ import annotations

import json
import re
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.apps.harness import AppDaemon, deployed, pyapp_daemons
from tests.support.terminal import AtTerminal

Make = Callable[..., AppDaemon]


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Make]:
    yield from pyapp_daemons(tmp_path, AppDaemon)


def _nonstop(d: AppDaemon, *args: str) -> list[str]:
    return [sys.executable, "-m", "nonstop", *args, "-c", str(d.config)]


def _waiting(d: AppDaemon, seconds: int) -> str:
    return f"waiting for 127.0.0.1:{d.app_ports[0]} to answer /infra/health — {seconds} s of 10"


def test_without_a_terminal_the_gate_wait_prints_one_plain_line_a_second(daemon: Make) -> None:
    d = daemon("--start-delay 2.5")
    done = d.cli("deploy", "web", "--release", "v1")
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    waits = [line for line in lines if "waiting for" in line]
    assert any(_waiting(d, 1) in line for line in waits), done.stdout
    assert any(_waiting(d, 2) in line for line in waits), done.stdout
    assert len(waits) == len(set(line.split("] ", 1)[1] for line in waits)) <= 5
    assert "\r" not in done.stdout and "\x1b[K" not in done.stdout
    assert lines.index(waits[-1]) < next(i for i, x in enumerate(lines) if "is healthy" in x)


def test_at_a_terminal_the_gate_wait_is_one_line_updated_in_place(daemon: Make) -> None:
    d = daemon("--start-delay 2.5")
    term = AtTerminal(_nonstop(d, "deploy", "web", "--release", "v1"), d.dir)
    try:
        assert term.wait(60) == 0, term.output
    finally:
        term.close()
    screen = term.output
    assert re.search(r"\r\[ *\d+\.\d\ds\] " + re.escape(_waiting(d, 2)), screen), screen
    # Every wait but the last is overwritten in place: no newline ends one.
    assert not re.search(r"waiting for [^\r\n]*\n", screen.replace("\r\n", "\n")), screen
    assert "is healthy" in screen and "v1 is live" in screen


def test_the_json_stream_carries_each_wait_with_its_numbers(daemon: Make) -> None:
    d = daemon("--start-delay 1.5")
    done = d.cli("deploy", "web", "--release", "v1", "--json")
    assert done.returncode == 0, done.stderr
    waits = [e for e in map(json.loads, done.stdout.splitlines()) if e.get("event") == "waiting"]
    assert waits and waits[-1]["elapsed"] >= 1.0 and waits[0]["timeout"] == 10.0
    assert {w["port"] for w in waits} == {d.app_ports[0]}
    assert all(w["detail"] for w in waits)


def test_status_watch_redraws_as_the_daemon_changes_and_ctrl_c_exits_0(daemon: Make) -> None:
    d = daemon()
    term = AtTerminal(_nonstop(d, "status", "--watch", "--interval", "200ms"), d.dir)
    try:
        term.read_until("app web: nothing deployed yet")
        deployed(d, "v1")
        term.read_until("app web: v1 live on slot 0")
        term.interrupt()
        assert term.wait() == 0, term.output
    finally:
        term.close()
    assert "Traceback" not in term.output and "Aborted" not in term.output


def test_status_watch_without_a_terminal_is_refused_with_what_to_run(daemon: Make) -> None:
    d = daemon()
    done = d.cli("status", "--watch")
    assert done.returncode == 2
    assert "--watch needs a terminal" in done.stderr and "nonstop status" in done.stderr


def test_status_json_has_a_number_wherever_a_count_belongs(daemon: Make) -> None:
    d = daemon()
    deployed(d, "v1")
    assert d.get() == (200, "v1")
    deployed(d, "v2")
    answer = d.status()
    assert isinstance(answer["connections"], int) and isinstance(answer["uptime"], float)
    app = answer["apps"]["web"]
    [instance] = app["instances"]
    for key in ("port", "slot", "pid", "in_flight", "responses", "responses_5xx", "uptime"):
        assert isinstance(instance[key], int | float), (key, instance)
    for record in app["history"]:
        assert isinstance(record["duration"], float), record
    for peer in answer["upstreams"]["web"]:
        for key in ("weight", "fails", "conns", "max_fails", "fail_timeout", "max_conns"):
            assert isinstance(peer[key], int | float), (key, peer)
