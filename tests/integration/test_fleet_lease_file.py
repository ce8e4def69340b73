"""The lease file under real processes: racing acquisitions, expiry, and a damaged file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

NONSTOP = [sys.executable, "-m", "nonstop", "fleet", "lease"]


def lease(*args: str) -> tuple[int, dict[str, object]]:
    done = subprocess.run([*NONSTOP, *args], capture_output=True, text=True, timeout=30)
    return done.returncode, json.loads(done.stdout)


def test_of_runs_racing_for_the_lease_exactly_one_gets_it(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.lease")
    racers = [
        subprocess.Popen(
            [*NONSTOP, "acquire", "--file", path, "--token", f"t{i}", "--holder", f"run {i}"],
            stdout=subprocess.PIPE,
            text=True,
        )
        for i in range(8)
    ]
    answers = [json.loads(p.communicate(timeout=60)[0]) for p in racers]
    codes = [p.returncode for p in racers]
    assert codes.count(0) == 1 and codes.count(1) == 7
    winner = answers[codes.index(0)]["lease"]
    assert isinstance(winner, dict)
    for answer in answers:
        if not answer["granted"]:
            assert f"locked by {winner['holder']}" in str(answer["reason"])
    assert "token" not in winner  # the holder's secret is never printed
    code, shown = lease("show", "--file", path)
    assert code == 0 and shown["held"] is True


def test_a_silent_lease_expires_and_the_next_run_takes_it_over(tmp_path: Path) -> None:
    path = str(tmp_path / "fleet.lease")
    code, _ = lease(
        "acquire", "--file", path, "--token", "a", "--holder", "killed ci", "--ttl", "1s"
    )
    assert code == 0  # (refusal while it is live: the racing test above)
    deadline = time.monotonic() + 10
    while True:
        code, answer = lease("acquire", "--file", path, "--token", "b", "--holder", "next ci")
        if code == 0 or time.monotonic() > deadline:
            break
    assert code == 0
    replaced = answer["replaced"]
    assert isinstance(replaced, dict) and replaced["holder"] == "killed ci"
    code, answer = lease("renew", "--file", path, "--token", "a")
    assert code == 1 and "taken over by next ci" in str(answer["reason"])
    assert lease("release", "--file", path, "--token", "a")[0] == 1
    assert lease("release", "--file", path, "--token", "b")[0] == 0
    assert not os.path.exists(path)


def test_a_damaged_lease_file_is_refused_with_the_state_store_exit_code(tmp_path: Path) -> None:
    path = tmp_path / "fleet.lease"
    path.write_text("{not json")
    code, answer = lease("acquire", "--file", str(path), "--token", "a", "--holder", "ci")
    assert code == 4
    assert "is not a lease" in str(answer["error"]) and "remove it" in str(answer["error"])
    assert path.read_text() == "{not json"  # nothing was overwritten
