"""Helpers for the config tests: write config files into a temporary directory and load them
with a fake resolver, so no test depends on DNS."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

from nonstop.config import Config, load

FAKE_DNS = {
    "app1.internal": ["10.0.0.11"],
    "pool.internal": ["10.0.0.21", "10.0.0.22"],
}


def fake_resolver(host: str, port: int) -> list[str]:
    if host in FAKE_DNS:
        return FAKE_DNS[host]
    raise OSError(f"no such host {host}")


Write = Callable[[str, str], Path]
Load = Callable[..., Config]


@pytest.fixture
def write(tmp_path: Path) -> Write:
    def _write(name: str, text: str) -> Path:
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text), encoding="utf-8")
        return path

    return _write


@pytest.fixture
def load_text(write: Write) -> Load:
    def _load(text: str, name: str = "nginx.conf", prefix: str | None = None) -> Config:
        return load(str(write(name, text)), prefix, resolver=fake_resolver)

    return _load


@pytest.fixture
def http(load_text: Load) -> Load:
    """Load a config whose text is the inside of an ``http {}`` block."""

    def _load(text: str) -> Config:
        return load_text("events {}\nhttp {\n" + textwrap.dedent(text) + "\n}\n")

    return _load
