"""The README's walkthroughs, run as written: each command of each section, in order.

Each section runs in a scratch directory that sees the checkout's Makefile, sources and
.venv, with a copy of examples/ (so the example's state and logs stay there), inside a
network namespace of its own (tests/support/walkthrough.py): the README's fixed ports
meet nothing else on the machine.  When the README changes, these run what it says now.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.support.walkthrough import section_blocks

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"

pytestmark = pytest.mark.slow


def _namespace() -> list[str]:
    """A network namespace (mapped to root in a user namespace when not root), without
    the right to bind a port below 1024, as a reader who is not root would run it."""
    command = ["unshare", "--net"] if os.geteuid() == 0 else ["unshare", "--net", "-r"]
    command += ["setpriv", "--bounding-set=-net_bind_service", "--inh-caps=-net_bind_service"]
    if shutil.which("unshare") is None or shutil.which("setpriv") is None:
        pytest.skip("unshare and setpriv (util-linux) are not installed")
    if subprocess.run([*command, "true"], capture_output=True).returncode != 0:
        pytest.skip("cannot create a network namespace here")
    return command


def _scratch(tmp_path: Path) -> Path:
    for name in ("Makefile", "pyproject.toml", "setup.py", "src", ".venv"):
        (tmp_path / name).symlink_to(ROOT / name)
    shutil.copytree(
        ROOT / "examples",
        tmp_path / "examples",
        ignore=shutil.ignore_patterns(".nonstop", "logs", "__pycache__"),
    )
    built = subprocess.run(["make", "-q", ".venv/.compiled"], cwd=tmp_path)
    if built.returncode != 0:
        pytest.skip("the checkout is not built: run `make build` first")
    return tmp_path


def walk(heading: str, tmp_path: Path) -> dict[str, Any]:
    cwd = _scratch(tmp_path)
    done = subprocess.run(
        [*_namespace(), sys.executable, "-m", "tests.support.walkthrough", str(README), heading],
        cwd=cwd,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    result: dict[str, Any] = json.loads(done.stdout)
    return result


def test_the_walkthrough_sections_exist_and_have_commands() -> None:
    text = README.read_text()
    for heading in ("A five-minute tour", "Your nginx.conf, unchanged"):
        assert any(block.lang == "sh" for block in section_blocks(text, heading)), heading


def test_the_five_minute_tour_runs_as_written(tmp_path: Path) -> None:
    result = walk("A five-minute tour", tmp_path)
    script, (example,) = result["script"], result["background"]
    assert script["code"] == 0, script["output"]
    out = script["output"]
    assert "v2 live" in out
    assert "hello from v2 (port 9002), you asked for /hi" in out
    assert "hello v3 is live" in out
    assert "hello v2 is live (rollback" in out
    # make example printed each deploy step once, and stopped on Ctrl-C
    assert "failed requests: 0" in example["output"]
    assert example["output"].count("traffic switched to v2") == 1, example["output"]
    assert example["code"] is not None
    assert result["left"] == []


def test_the_nginx_conf_walkthrough_runs_as_written(tmp_path: Path) -> None:
    result = walk("Your nginx.conf, unchanged", tmp_path)
    script = result["script"]
    assert script["code"] == 0, script["output"]
    out = script["output"]
    assert "test is successful" in out
    blue = out.index("hello from blue (port 9001)")
    assert out.index("hello from green (port 9002)") > blue
    assert result["left"] == []
