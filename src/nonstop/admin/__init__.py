"""The admin API: JSON over a unix socket, how the CLI and CI drive the daemon."""

from nonstop.admin.client import AdminClient
from nonstop.admin.server import AdminServer

__all__ = ["AdminClient", "AdminServer"]
