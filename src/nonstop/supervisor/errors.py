"""Why an app instance could not be started.

Both are ``NonstopError`` with exit code 1: a deploy that meets them is refused and the
old release keeps serving.
"""

from __future__ import annotations

from nonstop.errors import NonstopError

__all__ = ["PortBusy", "StartFailed"]


class StartFailed(NonstopError):
    """The instance's process could not be started (bad command, missing cwd, ...)."""

    exit_code = 1


class PortBusy(StartFailed):
    """Something already accepts connections on the port an instance was to use.

    Starting there anyway is the seed's defect 5: the leftover answers the new release's
    health check and takes its traffic.
    """

    def __init__(self, host: str, port: int, app: str) -> None:
        self.host = host
        self.port = port
        self.app = app
        super().__init__(
            f"port {port} is already in use on {host}: refusing to start {app} there "
            f"(another process accepts connections on {host}:{port})"
        )
