from __future__ import annotations

import http.client
import json
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from tests.support.backends import RecordingBackend, free_port
from tests.support.netns import TestHosts
from tests.support.proc import NonstopProcess


@pytest.fixture
def backends() -> Iterator[Callable[[int], list[RecordingBackend]]]:
    started: list[RecordingBackend] = []

    def make(count: int) -> list[RecordingBackend]:
        out = []
        for _ in range(count):
            backend = RecordingBackend(name=f"b{len(started) + 1}").start()
            started.append(backend)
            out.append(backend)
        return out

    yield make
    for backend in started:
        backend.stop()


class Proxy:
    """A running nonstop with the config text a test gave it."""

    def __init__(self, tmp: Path, text: str, name: str = "nginx.conf") -> None:
        self.port = free_port()
        self.dir = tmp
        self.path = tmp / name
        self.path.write_text(text.replace("{port}", str(self.port)))
        self.process = NonstopProcess(self.path, [self.port], ["--shutdown-timeout", "10s"])

    def start(self) -> Proxy:
        self.process.start()
        return self

    def serving_pid(self) -> int:
        """The process that holds the client connections: the one worker, or nonstop's
        own process with ``master_process off``."""
        done = self.process.cli("status", "--json")
        assert done.returncode == 0, done.stderr
        answer = json.loads(done.stdout)
        workers = answer.get("workers") or []
        assert len(workers) <= 1, workers
        return int(workers[0]["pid"]) if workers else int(answer["pid"])

    def rewrite(self, text: str) -> None:
        self.path.write_text(text.replace("{port}", str(self.port)))

    def request(
        self,
        method: str = "GET",
        path: str = "/",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        source: str | None = None,
    ) -> tuple[int, dict[str, str], bytes]:
        conn = http.client.HTTPConnection(
            "127.0.0.1", self.port, timeout=10, source_address=(source, 0) if source else None
        )
        try:
            conn.request(method, path, body=body, headers=headers or {})
            resp = conn.getresponse()
            data = resp.read()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, data
        finally:
            conn.close()


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[Callable[..., Proxy]]:
    running: list[Proxy] = []

    def make(text: str, name: str = "nginx.conf", start: bool = True) -> Proxy:
        where = tmp_path / f"proxy{len(running)}"
        where.mkdir()
        p = Proxy(where, text, name)
        running.append(p)
        return p.start() if start else p

    yield make
    for p in running:
        p.process.stop()


@pytest.fixture(scope="module")
def fleet_hosts() -> Iterator[TestHosts]:
    """Three test hosts (namespaces with sshd) shared by the tests of one module."""
    with TestHosts(3) as hosts:
        yield hosts
