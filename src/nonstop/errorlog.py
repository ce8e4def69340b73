"""The error log: nginx's line format, written where the config's ``error_log`` says.

Its own module so that a worker process sets up its log without importing the daemon
(the deploys, the store, the admin API and the config readers it never uses).
"""

from __future__ import annotations

import logging
import os
import sys
import time

from nonstop.config.model import Config
from nonstop.proxy.handed import log_descriptor
from nonstop.statedir import claim, make_dirs

__all__ = ["NginxFormatter", "goes_to_stderr", "setup_logging"]


class NginxFormatter(logging.Formatter):
    """``2026/11/24 23:59:59 [error] 1234#0: message``, as nginx's error log reads."""

    _names = {
        logging.DEBUG: "debug",
        logging.INFO: "info",
        logging.WARNING: "warn",
        logging.ERROR: "error",
        logging.CRITICAL: "crit",
    }

    def format(self, record: logging.LogRecord) -> str:
        stamp = time.strftime("%Y/%m/%d %H:%M:%S", time.localtime(record.created))
        level = getattr(record, "nginx_level", None) or self._names.get(record.levelno, "error")
        return f"{stamp} [{level}] {os.getpid()}#0: {record.getMessage()}"


def setup_logging(config: Config | None) -> None:
    """nonstop's error log (nginx.conf's ``error_log``, or stderr), set up afresh: at
    start, on reload and on SIGUSR1, in the control process and in each worker."""
    root = logging.getLogger("nonstop")
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    handler: logging.Handler
    if config is not None and config.error_log and config.error_log != "stderr":
        handed = log_descriptor(config.error_log)  # a worker running as nginx.conf's user
        if handed >= 0:
            handler = logging.FileHandler(config.error_log, delay=True)
            handler.stream = open(handed, "a")  # noqa: SIM115 - the handler closes it
        else:
            make_dirs(os.path.dirname(config.error_log))
            handler = logging.FileHandler(config.error_log)
            claim(config.error_log)  # 0600, or 0640 with the config's group
    else:
        handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(NginxFormatter())
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    root.propagate = False


def goes_to_stderr() -> bool:
    """Whether the error log is this process's stderr (``error_log stderr``, or
    ``/dev/stderr``, or the same file): what is said there need not be said twice."""
    for handler in logging.getLogger("nonstop").handlers:
        stream = getattr(handler, "stream", None)
        try:
            if stream is not None and os.path.samestat(
                os.fstat(stream.fileno()), os.fstat(sys.stderr.fileno())
            ):
                return True
        except (OSError, ValueError, AttributeError):
            return True  # cannot tell: say it once
    return False
