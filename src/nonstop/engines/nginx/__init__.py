"""``engine = "nginx"``: real nginx serves, nonstop renders, checks, reloads and drains it."""

from nonstop.engines.nginx.command import (
    CheckResult,
    FakeNginx,
    NginxCommand,
    SystemNginx,
    children,
    find_nginx,
)
from nonstop.engines.nginx.engine import NginxEngine, NginxFailed, NginxRejected
from nonstop.engines.nginx.render import Rendered, RenderOptions, render

__all__ = [
    "CheckResult",
    "FakeNginx",
    "NginxCommand",
    "NginxEngine",
    "NginxFailed",
    "NginxRejected",
    "RenderOptions",
    "Rendered",
    "SystemNginx",
    "children",
    "find_nginx",
    "render",
]
