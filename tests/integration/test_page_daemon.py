"""The status page of a real daemon: ``[admin] listen``, a deploy, and headless Chromium
watching its timeline change without a reload."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from tests.support.apps import pyapp_command
from tests.support.apps.harness import AppDaemon, deployed
from tests.support.backends import free_port
from tests.support.browser import Browser, chromium_path, open_browser
from tests.support.proc import admin_api

pytestmark = pytest.mark.skipif(
    chromium_path() is None and not os.environ.get("CI"),
    reason="needs chromium (scripts/system-deps.sh installs it)",
)

TOKEN = "daemon-page-token-0123456789"


class PageDaemon(AppDaemon):
    """The test app's daemon with an HTTP admin listener and a token."""

    def write(self, command: str, **options: object) -> None:
        super().write(command, **options)
        if not hasattr(self, "admin_port"):
            self.admin_port = free_port()
        (self.dir / "admin.token").write_text(TOKEN + "\n")
        with self.config.open("a") as handle:
            handle.write(
                f'\n[admin]\nlisten = "127.0.0.1:{self.admin_port}"\ntoken_file = "admin.token"\n'
            )

    def api(self, path: str, token: str | None = TOKEN) -> tuple[int, dict[str, Any]]:
        return admin_api(self.admin_port, path, token)


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[PageDaemon]:
    d = PageDaemon(tmp_path / "d", pyapp_command(), verify="1s")
    d.start()
    try:
        yield d
    finally:
        d.stop()


@pytest.fixture
def browser() -> Iterator[Browser]:
    with open_browser() as opened:
        yield opened
        assert opened.errors() == []


def test_the_admin_api_answers_over_http_with_the_token_only(daemon: PageDaemon) -> None:
    deployed(daemon, "v1")
    status, answer = daemon.api("/api/status?app=web")
    assert status == 200 and answer["ok"] is True
    apps = answer["apps"]
    assert isinstance(apps, dict) and apps["web"]["live"]["release"] == "v1"
    assert daemon.api("/api/status", token=None)[0] == 401
    assert daemon.api("/api/status", token="not-the-token-at-all")[0] == 401


def test_a_deploy_shows_on_the_page_step_by_step_without_a_reload(
    daemon: PageDaemon, browser: Browser
) -> None:
    deployed(daemon, "v1")
    browser.open(f"http://127.0.0.1:{daemon.admin_port}/#token={TOKEN}")
    browser.wait_for(
        "document.body.textContent.includes('v1')", what="the live release on the page"
    )
    browser.evaluate("window.notReloaded = true")
    deploy = daemon.deploy_async("v2")
    try:
        for step in ("begin", "healthy", "switched", "done"):
            browser.wait_for(
                f"document.querySelector('#deploys li[data-event=\"{step}\"]') !== null",
                timeout=30,
                what=f"the timeline shows {step}",
            )
    finally:
        _, err = deploy.communicate(timeout=60)
    assert deploy.returncode == 0, err
    assert browser.evaluate("window.notReloaded") is True
    assert "v2" in browser.text("#deploys h3")
