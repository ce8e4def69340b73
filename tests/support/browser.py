"""Headless Chromium for page tests, driven over the DevTools protocol on a pipe.

Why the DevTools protocol directly, and not selenium + chromedriver: the protocol over
``--remote-debugging-pipe`` needs no Python package and no driver binary whose version must
match the browser's; the browser is this process' own child, so it is stopped by its PID;
and the protocol reports every request the page makes (``Network.requestWillBeSent``),
which is what the "nothing fetched from another host" test needs. What the tests use is
small: open a page, evaluate JavaScript, read network events, take a screenshot.

Chromium is Debian's (``chromium``, installed by scripts/system-deps.sh). It starts with a
fresh profile directory and the flags that keep it off the network (no sync, no component
updates, no background requests); the profile and the process are removed even when a test
fails.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import fcntl
import json
import os
import shutil
import signal
import subprocess
import tempfile
import threading
import time
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any

from tests.support.backends import free_port

from nonstop.admin.http import AdminHttp
from nonstop.admin.page import add_status_page

__all__ = [
    "Browser",
    "BrowserError",
    "PageServer",
    "chromium_path",
    "open_browser",
    "running_in_group",
]

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--no-default-browser-check",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-extensions",
    "--disable-default-apps",
    "--disable-domain-reliability",
    "--disable-client-side-phishing-detection",
    "--metrics-recording-only",
    "--password-store=basic",
    "--use-mock-keychain",
    "--mute-audio",
    "--hide-scrollbars",
    "--remote-debugging-pipe",
]


class BrowserError(Exception):
    pass


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser"):
        found = shutil.which(name)
        if found:
            return found
    return None


class Browser:
    """One Chromium process and one page (tab) in it."""

    def __init__(self, proc: subprocess.Popen[bytes], to_browser: int, from_browser: int) -> None:
        self.proc = proc
        self._out = os.fdopen(to_browser, "wb", buffering=0)
        self._in = os.fdopen(from_browser, "rb", buffering=0)
        self._ids = iter(range(1, 1 << 30))
        self._lock = threading.Condition()
        self._answers: dict[int, dict[str, Any]] = {}
        self.events: list[dict[str, Any]] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        self.session = self._open_tab()

    # -- the protocol -----------------------------------------------------------------------

    def _read(self) -> None:
        buffer = b""
        while True:
            try:
                chunk = self._in.read(65536)
            except (OSError, ValueError):
                chunk = b""
            if not chunk:
                with self._lock:
                    self._closed = True
                    self._lock.notify_all()
                return
            buffer += chunk
            *messages, buffer = buffer.split(b"\0")
            with self._lock:
                for raw in messages:
                    message = json.loads(raw)
                    if "id" in message:
                        self._answers[message["id"]] = message
                    else:
                        self.events.append(message)
                self._lock.notify_all()

    def send(
        self, method: str, params: dict[str, Any] | None = None, *, session: bool = True
    ) -> dict[str, Any]:
        call_id = next(self._ids)
        message: dict[str, Any] = {"id": call_id, "method": method, "params": params or {}}
        if session and getattr(self, "session", None):
            message["sessionId"] = self.session
        self._out.write(json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + 30
        with self._lock:
            while call_id not in self._answers:
                left = deadline - time.monotonic()
                if self._closed or left <= 0:
                    raise BrowserError(f"no answer to {method} (browser gone: {self._closed})")
                self._lock.wait(left)
            answer = self._answers.pop(call_id)
        if "error" in answer:
            raise BrowserError(f"{method}: {answer['error']}")
        result: dict[str, Any] = answer.get("result", {})
        return result

    def _open_tab(self) -> str:
        target = self.send("Target.createTarget", {"url": "about:blank"}, session=False)
        attached = self.send(
            "Target.attachToTarget",
            {"targetId": target["targetId"], "flatten": True},
            session=False,
        )
        session: str = attached["sessionId"]
        self.session = session
        for domain in ("Page", "Runtime", "Network", "Log"):
            self.send(f"{domain}.enable")
        return session

    # -- what tests use ---------------------------------------------------------------------

    def open(self, url: str) -> None:
        answer = self.send("Page.navigate", {"url": url})
        if answer.get("errorText"):
            raise BrowserError(f"cannot open {url}: {answer['errorText']}")

    def evaluate(self, expression: str) -> Any:
        answer = self.send(
            "Runtime.evaluate",
            {"expression": expression, "returnByValue": True, "awaitPromise": True},
        )
        if "exceptionDetails" in answer:
            raise BrowserError(f"{expression!r} threw: {answer['exceptionDetails']}")
        return answer["result"].get("value")

    def wait_for(self, expression: str, timeout: float = 10.0, what: str = "") -> Any:
        """Poll a JavaScript expression until it is truthy; its value, or a failure that
        shows the last value seen."""
        deadline = time.monotonic() + timeout
        value: Any = None
        while True:
            with contextlib.suppress(BrowserError):  # e.g. while the page is loading
                value = self.evaluate(expression)
                if value:
                    return value
            if time.monotonic() > deadline:
                raise AssertionError(f"{what or expression}: not true after {timeout} s: {value!r}")
            with self._lock:  # wake on the next protocol message, or after 50 ms
                self._lock.wait(0.05)

    def text(self, selector: str) -> str:
        value = self.evaluate(
            f"(document.querySelector({json.dumps(selector)}) || {{}}).textContent || ''"
        )
        return str(value)

    def requested_urls(self) -> list[str]:
        """Every URL the page asked for, as the browser's network layer saw it."""
        with self._lock:
            return [
                event["params"]["request"]["url"]
                for event in self.events
                if event.get("method") == "Network.requestWillBeSent"
            ]

    def errors(self) -> list[str]:
        """Uncaught exceptions and console errors of the page."""
        out = []
        with self._lock:
            for event in self.events:
                params = event.get("params", {})
                if event.get("method") == "Runtime.exceptionThrown":
                    out.append(json.dumps(params.get("exceptionDetails", {}))[:500])
                elif event.get("method") == "Log.entryAdded":
                    entry = params.get("entry", {})
                    # a refused request is the network's to judge (the tests do)
                    if entry.get("level") == "error" and entry.get("source") != "network":
                        out.append(f"{entry.get('url', '')}: {entry.get('text', '')}")
        return out

    def resize(self, width: int, height: int) -> None:
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": height, "deviceScaleFactor": 1, "mobile": False},
        )

    def screenshot(self, path: Path) -> None:
        answer = self.send("Page.captureScreenshot", {"format": "png"})
        path.write_bytes(base64.b64decode(answer["data"]))

    # -- the end ----------------------------------------------------------------------------

    def close(self) -> None:
        with contextlib.suppress(BrowserError, OSError, ValueError):
            self._out.write(json.dumps({"id": 0, "method": "Browser.close"}).encode() + b"\0")
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(5)
        _kill_group(self.proc)
        for handle in (self._out, self._in):
            with contextlib.suppress(OSError):
                handle.close()


def _kill_group(proc: subprocess.Popen[bytes]) -> None:
    """Kill the browser and its helpers (renderer, GPU, zygote): they share its process
    group, which was made for it alone (``start_new_session``), whose id is its PID."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(proc.pid, signal.SIGKILL)
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(5)
    deadline = time.monotonic() + 5
    while running_in_group(proc.pid) and time.monotonic() < deadline:
        time.sleep(0.02)  # polling the kernel's process table, with a deadline


def running_in_group(pgid: int) -> list[int]:
    """PIDs of the group's processes that still run (zombies, waiting for init, do not)."""
    out = []
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(entry.path, "stat").read_text()
        except OSError:
            continue
        fields = stat[stat.rindex(")") + 2 :].split()  # after "pid (comm) "
        if int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            out.append(int(entry.name))
    return out


@contextlib.contextmanager
def open_browser() -> Iterator[Browser]:
    """A fresh headless Chromium with one tab; gone (process group and profile) afterwards."""
    binary = chromium_path()
    if binary is None:
        raise BrowserError("no chromium: run scripts/system-deps.sh")
    profile = tempfile.mkdtemp(prefix="nonstop-chromium-")
    to_browser_r, to_browser_w = os.pipe()
    from_browser_r, from_browser_w = os.pipe()
    proc = subprocess.Popen(
        [binary, *FLAGS, f"--user-data-dir={profile}", "about:blank"],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        close_fds=False,
        start_new_session=True,
        preexec_fn=_pipes_on_3_and_4(to_browser_r, from_browser_w),
    )
    os.close(to_browser_r)
    os.close(from_browser_w)
    browser: Browser | None = None
    try:
        browser = Browser(proc, to_browser_w, from_browser_r)
        yield browser
    finally:
        if browser is not None:
            browser.close()
        else:
            _kill_group(proc)
            for fd in (to_browser_w, from_browser_r):
                with contextlib.suppress(OSError):
                    os.close(fd)
        shutil.rmtree(profile, ignore_errors=True)


def _pipes_on_3_and_4(reads: int, writes: int) -> Callable[[], None]:
    """``--remote-debugging-pipe`` reads commands on fd 3 and writes answers on fd 4."""

    def move() -> None:  # in the child, before exec: only async-signal-safe calls
        high_reads = fcntl.fcntl(reads, fcntl.F_DUPFD, 10)
        high_writes = fcntl.fcntl(writes, fcntl.F_DUPFD, 10)
        os.dup2(high_reads, 3)
        os.dup2(high_writes, 4)
        os.close(high_reads)
        os.close(high_writes)

    return move


class PageServer:
    """The status page on a real :class:`AdminHttp` on 127.0.0.1, in a thread of its own, fed
    by a status the test edits and control events the test pushes."""

    def __init__(self, status: dict[str, Any], token: str | None = None, **options: Any) -> None:
        self.status = status
        self.token = token
        self.options = options
        self.port = 0
        self.snapshots = 0
        self._taken = threading.Condition()
        self.feed: Any = None
        self._loop = asyncio.new_event_loop()
        self._events: asyncio.Queue[dict[str, Any]] | None = None
        self._http: AdminHttp | None = None
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/"

    def __enter__(self) -> PageServer:
        self._thread.start()
        self._run(self._start())
        return self

    def __exit__(self, *exc: object) -> None:
        self._run(self._stop())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def _run(self, coro: Coroutine[Any, Any, None]) -> None:
        asyncio.run_coroutine_threadsafe(coro, self._loop).result(30)

    async def _start(self) -> None:
        self._events = asyncio.Queue()
        self.port = free_port()
        self._http = AdminHttp(f"127.0.0.1:{self.port}", self.token, {})
        self.feed = add_status_page(self._http, self._snapshot, self._subscribe, **self.options)
        await self._http.start()

    async def _stop(self) -> None:
        await self.feed.close()
        assert self._http is not None
        await self._http.close()
        # the browser's keep-alive connections: end them before the loop goes
        others = [task for task in asyncio.all_tasks() if task is not asyncio.current_task()]
        for task in others:
            task.cancel()
        await asyncio.gather(*others, return_exceptions=True)

    async def _snapshot(self) -> dict[str, Any]:
        copy: dict[str, Any] = json.loads(json.dumps(self.status))
        with self._taken:
            self.snapshots += 1
            self._taken.notify_all()
        return copy

    def wait_snapshots(self, count: int, timeout: float = 10.0) -> None:
        """Until ``count`` snapshots were taken since the start."""
        with self._taken:
            if not self._taken.wait_for(lambda: self.snapshots >= count, timeout):
                raise AssertionError(f"{self.snapshots} snapshots after {timeout} s, not {count}")

    async def _subscribe(self) -> AsyncIterator[dict[str, Any]]:
        assert self._events is not None
        while True:
            yield await self._events.get()

    def push(self, event: dict[str, Any]) -> None:
        """A control-plane event, as the daemon's event stream would send it."""
        assert self._events is not None
        self._loop.call_soon_threadsafe(self._events.put_nowait, dict(event))

    def call(self, fn: Callable[[], None]) -> None:
        """Run ``fn`` on the server's loop (to change what the next snapshot says)."""
        self._loop.call_soon_threadsafe(fn)
