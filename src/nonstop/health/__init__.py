"""Active health checks: pure verdicts and rise/fall state, an async checker, a deploy gate."""

from nonstop.health.active import (
    HealthState,
    Probe,
    Transition,
    Verdict,
    body_matches,
    excerpt,
    judge,
)
from nonstop.health.checker import ChangeCallback, HealthChecker, ProbeFn, probe
from nonstop.health.client import fetch
from nonstop.health.gate import GateResult, wait_healthy

__all__ = [
    "ChangeCallback",
    "GateResult",
    "HealthChecker",
    "HealthState",
    "Probe",
    "ProbeFn",
    "Transition",
    "Verdict",
    "body_matches",
    "excerpt",
    "fetch",
    "judge",
    "probe",
    "wait_healthy",
]
