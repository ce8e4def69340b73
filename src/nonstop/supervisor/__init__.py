"""The supervisor: runs app instances on the ports nonstop owns, restarts crashes, stops them.

``Supervisor`` owns the instances; ``Instance`` is one process run; ``Launcher`` is the OS
port (``SubprocessLauncher`` for real, ``FakeLauncher`` for tests); ``RestartPolicy`` the
pure backoff decision.
"""

from nonstop.supervisor.backoff import RestartPolicy
from nonstop.supervisor.command import LaunchSpec, build_launch, substitute
from nonstop.supervisor.errors import PortBusy, StartFailed
from nonstop.supervisor.fake import FakeLauncher, FakeProcess
from nonstop.supervisor.instance import Instance, InstanceState
from nonstop.supervisor.launcher import (
    Launcher,
    ProcessHandle,
    SubprocessLauncher,
    ensure_port_free,
)
from nonstop.supervisor.logfile import tail
from nonstop.supervisor.orphan import AdoptedProcess, is_gone, is_our_process, reclaim
from nonstop.supervisor.process import (
    ChildProcess,
    process_cmdline,
    process_start_ticks,
    process_started_at,
)
from nonstop.supervisor.supervisor import Supervisor, SupervisorEvent

__all__ = [
    "AdoptedProcess",
    "ChildProcess",
    "FakeLauncher",
    "FakeProcess",
    "Instance",
    "InstanceState",
    "LaunchSpec",
    "Launcher",
    "PortBusy",
    "ProcessHandle",
    "RestartPolicy",
    "StartFailed",
    "SubprocessLauncher",
    "Supervisor",
    "SupervisorEvent",
    "build_launch",
    "ensure_port_free",
    "is_gone",
    "is_our_process",
    "process_cmdline",
    "process_start_ticks",
    "process_started_at",
    "reclaim",
    "substitute",
    "tail",
]
