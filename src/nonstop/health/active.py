"""Active health checks, decided purely: one probe's verdict and the rise/fall state.

A server is healthy when a GET of ``path`` answers ``expect_status`` and — if
``expect_body`` is set — a body equal to it.  *Equal* means exact bytes after stripping
surrounding ASCII whitespace from both sides: ``"UP\\n"`` matches ``UP``, while ``UP2``,
``up`` and ``{"status":"UP"}`` do not.  The seed's check accepted any body containing
``UP`` from whatever held the port (defect 7); a substring match is never used here.

State follows HAProxy's rise/fall counters (``src/check.c``, ``check->health``) with one
difference, the one the deploy needs: a server nonstop has never seen pass starts
unhealthy and turns healthy on its first pass.  ``rise`` consecutive passes are needed to
come back only after ``fall`` consecutive failures took it out.
"""

from __future__ import annotations

from dataclasses import dataclass

from nonstop.config.model import HealthSpec

__all__ = ["HealthState", "Probe", "Transition", "Verdict", "body_matches", "excerpt", "judge"]

_EXCERPT = 120
_WHITESPACE = b" \t\r\n\f\v"


@dataclass(frozen=True, slots=True)
class Probe:
    """What one GET produced: a status and body, or an error before a full response."""

    status: int | None = None
    body: bytes = b""
    truncated: bool = False  # the body was longer than the client keeps
    error: str | None = None


@dataclass(frozen=True, slots=True)
class Verdict:
    """A probe judged against the spec; ``reason`` says why it failed ("" if it passed)."""

    ok: bool
    status: int | None = None
    body_excerpt: str = ""
    error: str | None = None
    reason: str = ""

    @property
    def detail(self) -> str:
        """One line for logs, status and deploy errors."""
        if self.ok:
            return f"passed: status {self.status}"
        return self.reason


@dataclass(frozen=True, slots=True)
class Transition:
    healthy: bool
    detail: str


def excerpt(body: bytes) -> str:
    """The start of a body as text, for messages."""
    text = body[: _EXCERPT * 4].decode("utf-8", errors="replace")
    return text if len(text) <= _EXCERPT else text[:_EXCERPT] + "..."


def body_matches(expected: str, body: bytes) -> bool:
    return body.strip(_WHITESPACE) == expected.encode().strip(_WHITESPACE)


def judge(spec: HealthSpec, probe: Probe) -> Verdict:
    if probe.error is not None or probe.status is None:
        error = probe.error or "no response"
        return Verdict(False, error=error, reason=error)
    shown = excerpt(probe.body)
    if probe.status != spec.expect_status:
        reason = f"status {probe.status} (expected {spec.expect_status})"
        if shown:
            reason += f", body {shown!r}"
        return Verdict(False, probe.status, shown, reason=reason)
    if spec.expect_body is not None and (
        probe.truncated or not body_matches(spec.expect_body, probe.body)
    ):
        reason = f"body {shown!r} is not {spec.expect_body!r} (status {probe.status})"
        return Verdict(False, probe.status, shown, reason=reason)
    return Verdict(True, probe.status, shown)


class HealthState:
    """Rise/fall bookkeeping for one server; starts unhealthy, never having passed."""

    __slots__ = ("ever_passed", "failures", "fall", "healthy", "last", "passes", "rise")

    def __init__(self, rise: int = 1, fall: int = 1) -> None:
        self.rise = max(1, rise)
        self.fall = max(1, fall)
        self.healthy = False
        self.ever_passed = False
        self.passes = 0  # consecutive
        self.failures = 0  # consecutive
        self.last: Verdict | None = None

    def observe(self, verdict: Verdict) -> Transition | None:
        """Count one verdict; a ``Transition`` when the server's health flips."""
        self.last = verdict
        if verdict.ok:
            self.passes += 1
            self.failures = 0
            first = not self.ever_passed
            self.ever_passed = True
            if not self.healthy and (first or self.passes >= self.rise):
                self.healthy = True
                return Transition(True, verdict.detail)
            return None
        self.failures += 1
        self.passes = 0
        if self.healthy and self.failures >= self.fall:
            self.healthy = False
            return Transition(False, verdict.detail)
        return None
