"""The test app as a WSGI application, for deploys of an app served by gunicorn.

Same endpoints as pyapp.py: ``/infra/health`` answers UP, ``/slow?ms=N`` sleeps, ``/``
answers the release (from the RELEASE environment variable), POST echoes its body.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterable
from typing import Any
from urllib.parse import parse_qs

Start = Callable[[str, list[tuple[str, str]]], Any]


def app(environ: dict[str, Any], start_response: Start) -> Iterable[bytes]:
    path = environ.get("PATH_INFO", "/")
    if environ.get("REQUEST_METHOD") == "POST":
        length = int(environ.get("CONTENT_LENGTH") or 0)
        body = environ["wsgi.input"].read(length)
    elif path == "/infra/health":
        body = b"UP"
    elif path == "/slow":
        ms = int(parse_qs(environ.get("QUERY_STRING", "")).get("ms", ["100"])[0])
        time.sleep(ms / 1000)
        body = f"slept {ms}ms".encode()
    else:
        body = os.environ.get("RELEASE", "dev").encode()
    start_response("200 OK", [("Content-Type", "text/plain"), ("Content-Length", str(len(body)))])
    return [body]
