"""``examples/fleet/run.py --once`` runs as its README says: the seed's front and two app
hosts in namespaces, a fleet deploy of v2 through the front under HTTPS traffic."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from tests.support.netns import needs_namespaces

pytestmark = needs_namespaces

EXAMPLE = Path(__file__).resolve().parents[2] / "examples" / "fleet" / "run.py"


def test_the_fleet_example_deploys_both_hosts_through_the_front_without_a_failed_request() -> None:
    done = subprocess.run(
        [sys.executable, str(EXAMPLE), "--once"], capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "-> 301 https://" in done.stdout
    assert "is live on 2 host(s)" in done.stdout
    assert ", 0 failed []" in done.stdout and "v2: " in done.stdout
